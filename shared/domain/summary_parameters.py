"""The LLM settings the platform sends to every summary service, in SkyPortal's names.

SkyPortal's own summarizer requires ``analysis_parameters.summary_parameters`` (and raises
KeyError without it); skyhook's summarizer (``llm_summarizer``) reads the same values from its
own settings anyway. The key goes separately, as ``SUMMARY_KEY_PARAMETER``
(:mod:`shared.domain.llm_keys`), and only at send time.
"""

from __future__ import annotations

from typing import Any

from shared.runtime.settings import LLMSettings


def site_summary_parameters(settings: LLMSettings) -> dict[str, Any]:
    """SkyPortal's ``summary_parameters`` object from the site settings (no key)."""
    return {
        "model": settings.llm_model,
        "temperature": settings.llm_temperature,
        "max_tokens": settings.llm_max_tokens,
        "prompt": settings.llm_prompt,
    }
