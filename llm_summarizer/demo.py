"""The summarizer's registration for ``skyhook run --demo`` (the body of
``POST /api/analysis_service``).

Without an API key (no ``SKYHOOK_LLM_API_KEY`` and no user key) a summary analysis ends in
``failure`` with a message saying how to set one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llm_summarizer.app import DEFAULT_PORT

SUMMARIZER_URL = f"http://127.0.0.1:{DEFAULT_PORT}/summarize"
SUMMARIZER_NAME = "skyhook_summarizer"

SUMMARY_PARAMETERS: dict[str, Any] = {
    "model": {
        "type": "string",
        "description": "Chat model of the OpenAI-compatible API (default: SKYHOOK_LLM_MODEL)",
    },
    "temperature": {
        "type": "number",
        "description": "Sampling temperature, 0 to 2 (default: SKYHOOK_LLM_TEMPERATURE)",
    },
    "max_tokens": {
        "type": "integer",
        "description": "Longest answer in tokens (default: SKYHOOK_LLM_MAX_TOKENS)",
    },
    "prompt": {
        "type": "string",
        "description": "Instructions before the source's facts (default: SKYHOOK_LLM_PROMPT)",
    },
}


def summarizer_registration(
    url: str = SUMMARIZER_URL, group_ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """The ``POST /api/analysis_service`` body registering the LLM summarizer."""
    body: dict[str, Any] = {
        "name": SUMMARIZER_NAME,
        "display_name": "LLM summary",
        "description": (
            "Summarizes a source's comments, classifications and redshift with a large "
            "language model; the result becomes the source's summary."
        ),
        "version": "1.0",
        "contact_name": "skyhook",
        "url": url,
        "authentication_type": "none",
        "analysis_type": "meta_analysis",
        "input_data_types": ["comments", "classifications", "redshift"],
        "is_summary": True,
        "timeout": 600.0,
        "optional_analysis_parameters": SUMMARY_PARAMETERS,
    }
    if group_ids is not None:
        body["group_ids"] = list(group_ids)
    return body
