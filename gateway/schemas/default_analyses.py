"""Default analyses: a service started by itself when a source meets a filter."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from gateway.schemas.common import GroupBrief, OpenObject, Timestamp
from gateway.schemas.validation import CheckedLater, WhenMissing, checked_by
from shared.domain.default_analyses import (
    DefaultAnalysisError,
    check_daily_limit,
    check_source_filter,
)

SOURCE_FILTER_MISSING = "Missing required parameter: source_filter"


class DefaultAnalysisChange(BaseModel):
    """A PATCH changes the fields it names. Fields are in the order the handler checks them;
    ``default_analysis_parameters`` (checked against the service's declarations, before this
    model) and ``group_ids`` (with the groups) are the handler's."""

    default_analysis_parameters: Annotated[OpenObject | str | None, CheckedLater] = None
    # Normalized to an object.
    source_filter: Annotated[
        OpenObject | str | None, checked_by(check_source_filter, DefaultAnalysisError)
    ] = None
    # Absent or null: the default limit.
    daily_limit: Annotated[int | None, checked_by(check_daily_limit, DefaultAnalysisError)] = Field(
        default=None, validate_default=True
    )
    group_ids: Annotated[list[int] | None, CheckedLater] = None
    show_parameters: bool = True
    show_plots: bool = True
    show_corner: bool = True


def _source_filter_given(value: Any) -> Any:
    if value is None:
        raise ValueError(SOURCE_FILTER_MISSING)
    return value


class NewDefaultAnalysis(DefaultAnalysisChange):
    source_filter: Annotated[
        OpenObject | str,
        WhenMissing(SOURCE_FILTER_MISSING),
        checked_by(check_source_filter, DefaultAnalysisError),
        BeforeValidator(_source_filter_given),
    ]


class Author(BaseModel):
    id: int
    username: str


class DefaultAnalysis(BaseModel):
    id: int
    analysis_service_id: int
    analysis_service_name: str
    author_id: int
    author: Author
    default_analysis_parameters: OpenObject
    source_filter: OpenObject
    daily_limit: int
    show_parameters: bool
    show_plots: bool
    show_corner: bool
    groups: list[GroupBrief]
    stats: Any
    created_at: Timestamp
    modified: Timestamp | None
