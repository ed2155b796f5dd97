"""summary_service: the platform's source summaries (``skyhook summary-service``).

It consumes ``analysis.completed`` from queue ``skyhook.summaries``, applies summaries to
``obj.summary`` / ``obj.summary_history`` and keeps their embeddings current for summary
search. Summaries are written by summary analysis services such as the LLM summarizer
(``llm_summarizer/``, a standalone analysis service); ``summary_secrets_for`` is the key the
dispatcher adds to a summary request at send time.
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
