"""What the summarizer asks the LLM, and with which key.

Precedence (later wins): the site settings (``SKYHOOK_LLM_*``) ← SkyPortal's
``analysis_parameters.summary_parameters`` object ← the flat analysis parameters ``model``,
``temperature``, ``max_tokens``, ``prompt``, ``system_prompt`` (the ones the demo registration
declares). The key: ``analysis_parameters.openai_api_key`` (the author's own key, or the
platform's, added by the dispatcher at send time) or else the summarizer's own site key.
Unknown keys of ``summary_parameters`` (SkyPortal also sends ``top_p``, penalties, …) are
ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from shared.runtime.settings import LLMSettings

# SkyPortal's name for the key in the analysis parameters; the platform's dispatcher adds it
# under this name at send time (``SUMMARY_KEY_PARAMETER`` in shared/domain/llm_keys.py).
KEY_PARAMETER = "openai_api_key"
OVERRIDABLE = ("model", "temperature", "max_tokens", "prompt", "system_prompt")
MAX_TEXT = 20_000
MAX_TOKENS_LIMIT = 100_000


class OptionsError(ValueError):
    """Invalid summary parameters (answered with a 400)."""


@dataclass(frozen=True)
class SummaryOptions:
    model: str
    temperature: float
    max_tokens: int
    prompt: str
    system_prompt: str


def site_options(settings: LLMSettings) -> SummaryOptions:
    return SummaryOptions(
        model=settings.llm_model,
        temperature=settings.llm_temperature,
        max_tokens=settings.llm_max_tokens,
        prompt=settings.llm_prompt,
        system_prompt=settings.llm_system_prompt,
    )


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OptionsError(f"{name} must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise OptionsError(f"{name} must be at most {MAX_TEXT} characters")
    return value


def _temperature(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionsError("temperature must be a number between 0 and 2") from None
    if isinstance(value, bool) or not math.isfinite(number) or not 0 <= number <= 2:
        raise OptionsError("temperature must be a number between 0 and 2")
    return number


def _max_tokens(value: Any) -> int:
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or not 1 <= number <= MAX_TOKENS_LIMIT:
        raise OptionsError(f"max_tokens must be an integer between 1 and {MAX_TOKENS_LIMIT}")
    return number


_CHECKS = {
    "model": lambda v: _text("model", v),
    "temperature": _temperature,
    "max_tokens": _max_tokens,
    "prompt": lambda v: _text("prompt", v),
    "system_prompt": lambda v: _text("system_prompt", v),
}


def _overrides(values: dict[str, Any]) -> dict[str, Any]:
    return {
        name: _CHECKS[name](values[name])
        for name in OVERRIDABLE
        if name in values and values[name] is not None
    }


def request_options(settings: LLMSettings, parameters: dict[str, Any]) -> SummaryOptions:
    options = site_options(settings)
    nested = parameters.get("summary_parameters")
    if nested is not None and not isinstance(nested, dict):
        raise OptionsError("summary_parameters must be an object")
    options = replace(options, **_overrides(nested or {}))
    return replace(options, **_overrides(parameters))


def request_api_key(settings: LLMSettings, parameters: dict[str, Any]) -> str | None:
    key = parameters.get(KEY_PARAMETER)
    if isinstance(key, str) and key.strip():
        return key.strip()
    return settings.llm_api_key.get_secret_value() if settings.llm_api_key else None


def request_parameters(payload: dict[str, Any]) -> dict[str, Any]:
    """``inputs.analysis_parameters`` (where SkyPortal puts them), else the top-level copy."""
    inputs = payload.get("inputs")
    for candidate in (
        inputs.get("analysis_parameters") if isinstance(inputs, dict) else None,
        payload.get("analysis_parameters"),
    ):
        if isinstance(candidate, dict):
            return candidate
    return {}
