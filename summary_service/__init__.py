"""summary_service: source summaries and the LLM summarizer.

- the summary service (``skyhook summary-service``) consumes ``analysis.completed`` from queue
  ``skyhook.summaries``, applies summaries to ``obj.summary`` / ``obj.summary_history`` and
  keeps their embeddings current for summary search;
- the summarizer (``skyhook summarizer``, port 7003, ``POST /summarize``) is an analysis
  service that writes a summary with an OpenAI-compatible LLM;
- ``keys.summary_secrets_for`` is what the dispatcher adds to a summary request at send time.
"""

from shared.domain.llm_keys import summary_secrets_for
from summary_service.service import (
    QUEUE,
    SummaryService,
    declare_summary_queue,
    running_summary_service,
)

__all__ = [
    "QUEUE",
    "SummaryService",
    "declare_summary_queue",
    "running_summary_service",
    "summary_secrets_for",
]
