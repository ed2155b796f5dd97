"""Photometry statistics of a source, and of many sources for plotting."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gateway.schemas.common import Open, Timestamp


class PhotStat(Open):
    """The statistics over the points the caller may read (SkyPortal's columns)."""

    obj_id: str
    last_update: Timestamp | None
    last_full_update: Timestamp | None
    last_phot_add_time: Timestamp | None


class Recomputed(BaseModel):
    totalMatches: int


class PlotField(BaseModel):
    value: str
    label: str


class AggregatePoint(Open):
    id: str
    classification: Any = None


class Aggregate(BaseModel):
    fields: list[PlotField]
    points: list[AggregatePoint]
    count: int
    truncated: bool
