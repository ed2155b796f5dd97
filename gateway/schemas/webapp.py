"""What only the web app asks for: sign-in, the source overview, analysis health, live
events and its pages."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from gateway.schemas.analyses import AnalysisHeadline
from gateway.schemas.common import BinaryContent, Paged, Timestamp, binary


class SignIn(BaseModel):
    """An API token, or a one-time sign-in code (which wins when both are sent)."""

    token: str | None = None
    code: str | None = None


class SignedIn(BaseModel):
    username: str


class SourceRow(BaseModel):
    id: str
    ra: float
    dec: float
    redshift: float | None
    created_at: Timestamp
    summary_preview: str | None
    analyses_by_status: dict[str, int]


class SourceOverview(Paged):
    sources: list[SourceRow]


class Failure(AnalysisHeadline):
    """A failed analysis, as the overview lists it."""


class AnalysisHealth(BaseModel):
    window: str
    counts: dict[str, int]
    failures: list[Failure]


class LiveEvent(BaseModel):
    """One Server-Sent Event: ``ready`` (``{"watching": n}``), then ``analysis`` events whose
    data is the analysis' id, obj_id, status, status_message, last_activity, duration and
    service, as JSON."""

    model_config = ConfigDict(extra="allow")

    event: Literal["ready", "analysis"] | None = None
    data: str | None = None
    retry: int | None = None
    id: str | None = None


LIVE_EVENTS = BinaryContent(
    ("text/event-stream",), "Server-Sent Events (`ready`, then `analysis` events)", LiveEvent
)
PAGE = binary("The web app's page", "text/html")
SCRIPT = binary("A script of the web app", "text/javascript")
STATIC = binary(
    "A static file of the web app", "text/javascript", "text/css", "image/svg+xml", "image/png"
)
