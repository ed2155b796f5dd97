"""Typed messages on the bus. Commands are imperative, events past tense.

Each message travels as JSON with a ``message_id`` (for idempotency) and a routing key equal
to its ``ROUTING_KEY``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    ROUTING_KEY: ClassVar[str]


class AnalysisRequested(Message):
    """An analysis row is ready to be (re)sent to its service."""

    ROUTING_KEY: ClassVar[str] = "analysis.requested"
    analysis_id: int


class AnalysisAccepted(Message):
    """The analysis' service accepted the request; its results come through the webhook."""

    ROUTING_KEY: ClassVar[str] = "analysis.accepted"
    analysis_id: int


class AnalysisEnded(Message):
    """An analysis reached a final state. Its subclasses name which one."""

    analysis_id: int
    obj_id: str
    analysis_service_id: int
    status: str
    is_summary: bool = False


class AnalysisCompleted(AnalysisEnded):
    """The service posted its results with status success (or they were uploaded)."""

    ROUTING_KEY: ClassVar[str] = "analysis.completed"


class AnalysisFailed(AnalysisEnded):
    """The service reported a failure, refused the request, or could not be reached."""

    ROUTING_KEY: ClassVar[str] = "analysis.failed"


class AnalysisTimedOut(AnalysisEnded):
    """No results came before the analysis' deadline."""

    ROUTING_KEY: ClassVar[str] = "analysis.timed_out"


class AnalysisCancelled(AnalysisEnded):
    """A user cancelled the analysis before it ended."""

    ROUTING_KEY: ClassVar[str] = "analysis.cancelled"


ENDED_EVENTS: dict[str, type[AnalysisEnded]] = {
    "completed": AnalysisCompleted,
    "failure": AnalysisFailed,
    "timed_out": AnalysisTimedOut,
    "cancelled": AnalysisCancelled,
}


def analysis_ended(
    status: str, analysis_id: int, obj_id: str, analysis_service_id: int, is_summary: bool
) -> AnalysisEnded:
    """The event saying an analysis ended with ``status``."""
    return ENDED_EVENTS[status](
        analysis_id=analysis_id,
        obj_id=obj_id,
        analysis_service_id=analysis_service_id,
        status=status,
        is_summary=is_summary,
    )


class ClassificationAdded(Message):
    """A classification was added to a source (it may start default analyses)."""

    ROUTING_KEY: ClassVar[str] = "classification.added"
    classification_id: int
    obj_id: str
    classification: str
    probability: float | None = None
    group_ids: list[int] = []


class SourceSaved(Message):
    """A source was saved to a group (created in it, or saved to it later)."""

    ROUTING_KEY: ClassVar[str] = "source.saved"
    obj_id: str
    group_id: int


class PhotometryAdded(Message):
    """New photometry points were added to a source."""

    ROUTING_KEY: ClassVar[str] = "photometry.added"
    obj_id: str
    count: int
