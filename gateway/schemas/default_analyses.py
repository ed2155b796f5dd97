"""Default analyses: a service started by itself when a source meets a filter."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gateway.schemas.common import GroupBrief, OpenObject, Timestamp


class DefaultAnalysisChange(BaseModel):
    default_analysis_parameters: OpenObject | str | None = None
    source_filter: OpenObject | str | None = None
    daily_limit: int | None = None
    group_ids: list[int] | None = None
    show_parameters: bool = True
    show_plots: bool = True
    show_corner: bool = True


class NewDefaultAnalysis(DefaultAnalysisChange):
    source_filter: OpenObject | str


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
