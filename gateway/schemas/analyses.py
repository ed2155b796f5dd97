"""Starting, uploading, reading, cancelling analyses, and their dispatch attempts."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from gateway.schemas.common import Closed, GroupBrief, OpenObject, Timestamp, group_id_list
from gateway.schemas.validation import CheckedLater, checked_by
from shared.domain.analysis_parameters import ParameterError, normalize_input_filters


class PhotometryFilters(Closed):
    filters: list[str] | None = None
    # Integers, or their decimal text (as SkyPortal's web app sends them).
    instruments: list[int | str] | None = None
    # Written by the dispatcher; accepted and dropped, so a previous analysis' input_filters
    # can be sent back as they are.
    instruments_by_name: Any = None


class InputFilters(Closed):
    photometry: PhotometryFilters | None = None


def _group_ids_unless_empty(value: Any) -> list[int] | None:
    """No groups (null, ``[]``, or any other empty value) means the caller's groups."""
    return group_id_list(value) if value else None


class StartAnalysis(BaseModel):
    """Values of ``analysis_parameters`` are checked against the service's declarations (by
    the handler, before this model). Fields are in the order the handler checks them."""

    analysis_parameters: OpenObject | None = None
    group_ids: Annotated[list[int] | None, BeforeValidator(_group_ids_unless_empty)] = None
    # Normalized: names stripped, instrument ids as integers, empty lists left out.
    input_filters: Annotated[
        InputFilters | None, checked_by(normalize_input_filters, ParameterError)
    ] = None
    show_parameters: bool | None = None
    show_plots: bool | None = None
    show_corner: bool | None = None


class UploadAnalysis(BaseModel):
    """Fields in the order the handler checks them; ``group_ids`` is checked (with the groups)
    before the source and the cap, the rest after. Absent or null flags mean true."""

    group_ids: Annotated[list[int] | None, CheckedLater] = None
    show_parameters: bool | None = None
    show_plots: bool | None = None
    show_corner: bool | None = None
    message: str | None = None
    analysis: OpenObject | None = None


class Uploaded(BaseModel):
    id: int
    message: str


class Cancelled(BaseModel):
    id: int
    status: str


class AnalysisHeadline(BaseModel):
    """Which analysis, on what, by which service, and where it stands."""

    id: int
    obj_id: str
    status: str
    status_message: str | None
    created_at: Timestamp
    last_activity: Timestamp | None
    analysis_service_id: int
    analysis_service_name: str


class AnalysisBrief(AnalysisHeadline):
    """SkyPortal's short form, in the list of analyses across sources."""

    analysis_service_description: str | None


class Analysis(BaseModel):
    """One analysis; ``data`` (its results) only with ``includeAnalysisData``."""

    model_config = ConfigDict(extra="allow")

    id: int
    obj_id: str
    author_id: int
    analysis_service_id: int
    status: str
    status_message: str | None
    analysis_parameters: OpenObject
    input_filters: OpenObject
    show_parameters: bool
    show_plots: bool
    show_corner: bool
    invalid_after: Timestamp | None
    last_activity: Timestamp | None
    duration: float | None
    handled_by_url: str | None
    input_hash: str | None
    default_analysis_id: int | None
    trigger: str | None
    created_at: Timestamp
    modified: Timestamp | None
    groups: list[GroupBrief]
    analysis_service_name: str
    analysis_service_description: str | None
    model_name: Any = None
    n_detections: Any = None
    num_plots: int
    # Sizes, hashes and media types of the stored artifacts, never their paths.
    artifacts: OpenObject
    dispatch_attempts: int
    data: Any = None


class AnalysisOfSource(Analysis):
    """As listed per source: with the model light curves, for the photometry overlay."""

    model_lightcurve: Any = None
    model_lightcurves: Any = None


class Attempt(BaseModel):
    attempt_number: int
    started_at: Timestamp
    http_status: int | None
    latency_ms: float | None
    outcome: str
    error: str | None
