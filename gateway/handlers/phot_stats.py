"""Photometry statistics (SkyPortal's PhotStats): per source, in bulk for plotting, and their
recomputation.

A reader who may read every point of a source gets the stored row; any other reader gets the
same fields computed from the points they may read, so points shared only with other groups
never show through (not in counts, dates, magnitudes or timestamps).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import Select, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import query_params as q
from gateway.auth import principal
from gateway.source_access import visible_obj
from http_edge.app_keys import SESSIONS
from http_edge.web import bad_request, success
from shared.db.models import (
    Classification,
    Obj,
    Photometry,
    PhotStat,
    classification_groups,
    obj_groups,
    photometry_groups,
)
from shared.domain.access import Principal, visible
from shared.science import phot_stats

DEFAULT_AGGREGATE_POINTS = 20_000
MAX_AGGREGATE_POINTS = 100_000


async def _newest_change(session: AsyncSession, obj_id: str) -> datetime | None:
    return await session.scalar(
        select(func.max(Photometry.modified)).where(Photometry.obj_id == obj_id)
    )


async def stats_for_reader(
    session: AsyncSession, me: Principal, obj_id: str, stored: PhotStat | None
) -> tuple[dict[str, Any], datetime | None]:
    """(the statistics the caller may know, the time of the newest point they rest on)."""
    if stored is not None and await phot_stats.reads_every_point(session, me, obj_id):
        return phot_stats.stored_fields(stored), await _newest_change(session, obj_id)
    points = await phot_stats.readable_points(session, me, obj_id)
    return phot_stats.compute(points), phot_stats.last_change(points)


async def get_phot_stat(request: web.Request) -> web.Response:
    me = principal(request)
    obj_id = request.match_info["obj_id"]
    async with request.app[SESSIONS]() as session:
        await visible_obj(session, me, obj_id)
        stored = await session.scalar(select(PhotStat).where(PhotStat.obj_id == obj_id))
        stats, changed = await stats_for_reader(session, me, obj_id, stored)
    # Timestamps come from the caller's own points, so they reveal no hidden change either.
    times = {"last_update": changed, "last_full_update": changed, "last_phot_add_time": changed}
    return success({"obj_id": obj_id, **stats, **times})


async def put_phot_stat(request: web.Request) -> web.Response:
    obj_id = request.match_info["obj_id"]
    async with request.app[SESSIONS].begin() as session:
        await visible_obj(session, principal(request), obj_id)
        await phot_stats.refresh(session, [obj_id])
    return success()


async def recompute_all(request: web.Request) -> web.Response:
    async with request.app[SESSIONS].begin() as session:
        count = await phot_stats.recompute_all(session)
    return success({"totalMatches": count})


# --- aggregate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AggregateQuery:
    fields: dict[str, str]  # x, y[, z] -> stat name
    classifications: list[str] | None
    probability_threshold: float | None
    group_id: int | None
    obj_ids: list[str] | None
    max_matches: int


def _fields_meta() -> list[dict[str, str]]:
    return [{"value": v, "label": label} for v, label in phot_stats.PLOT_FIELDS.items()]


def _axis_fields(request: web.Request) -> dict[str, str]:
    chosen = {}
    for axis in ("x", "y", "z"):
        value = request.query.get(f"{axis}Field")
        if value:
            if value not in phot_stats.PLOT_FIELDS:
                raise bad_request(f"Invalid {axis}Field: {value[:100]}")
            chosen[axis] = value
    return chosen


def _probability(request: web.Request) -> float | None:
    raw = request.query.get("classificationProbThreshold")
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise bad_request("classificationProbThreshold must be a number") from None
    if not 0 <= value <= 1:
        raise bad_request("classificationProbThreshold must be between 0 and 1")
    return value


def _max_matches(request: web.Request) -> int:
    raw = request.query.get("maxMatches")
    if raw is None or raw == "":
        return DEFAULT_AGGREGATE_POINTS
    try:
        value = int(raw)
    except ValueError:
        raise bad_request("maxMatches must be an integer") from None
    if value < 1:
        raise bad_request("maxMatches must be at least 1")
    return min(value, MAX_AGGREGATE_POINTS)


def _group_id(request: web.Request, me: Principal) -> int | None:
    raw = request.query.get("group_id")
    if raw is None or raw == "":
        return None
    try:
        group_id = int(raw)
    except ValueError:
        raise bad_request(f"Invalid group_id: {raw[:100]}") from None
    # Filtering by a group the caller is not in would tell which sources it holds.
    if not me.is_admin and group_id not in me.group_ids:
        raise bad_request(f"Invalid group_id: {group_id}")
    return group_id


def aggregate_query(request: web.Request, me: Principal) -> AggregateQuery:
    return AggregateQuery(
        fields=_axis_fields(request),
        classifications=q.text_list(request, "classifications"),
        probability_threshold=_probability(request),
        group_id=_group_id(request, me),
        obj_ids=q.text_list(request, "obj_ids"),
        max_matches=_max_matches(request),
    )


# A candidate source: id, ra, dec, redshift and its stored statistics (None: the outer join
# found no row).
_CandidateRow = tuple[str, float, float, float | None, PhotStat]


def _readable_classifications(me: Principal) -> Select[Any]:
    return select(Classification).where(
        visible(classification_groups, Classification.id, me), Classification.ml.is_(False)
    )


def _candidates(me: Principal, query: AggregateQuery) -> Select[*_CandidateRow]:
    """The readable sources the filters keep, by id, with their stored row if any."""
    statement = (
        select(Obj.id, Obj.ra, Obj.dec, Obj.redshift, PhotStat)
        .outerjoin(PhotStat, PhotStat.obj_id == Obj.id)
        .where(visible(obj_groups, Obj.id, me))
        .order_by(Obj.id)
    )
    if query.group_id is not None:
        statement = statement.where(
            exists().where(obj_groups.c.obj_id == Obj.id, obj_groups.c.group_id == query.group_id)
        )
    if query.obj_ids is not None:
        statement = statement.where(Obj.id.in_(query.obj_ids))
    if query.classifications:
        matching = _readable_classifications(me).where(
            Classification.obj_id == Obj.id,
            Classification.classification.in_(query.classifications),
        )
        if query.probability_threshold is not None:
            matching = matching.where(Classification.probability >= query.probability_threshold)
        statement = statement.where(matching.exists())
    return statement


async def _partly_hidden(
    session: AsyncSession, me: Principal, candidates: Select[*_CandidateRow]
) -> set[str]:
    """Candidate sources holding points the caller may not read."""
    if me.is_admin:
        return set()
    ids = candidates.with_only_columns(Obj.id).order_by(None).subquery()
    rows = await session.scalars(
        select(Photometry.obj_id)
        .where(
            Photometry.obj_id.in_(select(ids.c.id)),
            ~visible(photometry_groups, Photometry.id, me),
        )
        .distinct()
    )
    return set(rows)


async def _primary_classifications(
    session: AsyncSession, me: Principal, obj_ids: Iterable[str]
) -> dict[str, str]:
    """Each source's readable non-ML classification with the highest probability."""
    best: dict[str, tuple[float, str]] = {}
    ids = list(obj_ids)
    for start in range(0, len(ids), 500):
        rows = await session.execute(
            _readable_classifications(me)
            .where(Classification.obj_id.in_(ids[start : start + 500]))
            .with_only_columns(
                Classification.obj_id, Classification.classification, Classification.probability
            )
        )
        for obj_id, name, probability in rows:
            rank = -math.inf if probability is None else probability
            if obj_id not in best or rank > best[obj_id][0]:
                best[obj_id] = (rank, name)
    return {obj_id: name for obj_id, (_, name) in best.items()}


async def aggregate_points(
    session: AsyncSession, me: Principal, query: AggregateQuery
) -> tuple[list[dict[str, Any]], bool]:
    candidates = _candidates(me, query)
    hidden = await _partly_hidden(session, me, candidates)
    points: list[dict[str, Any]] = []
    for obj_id, ra, dec, redshift, stored in await session.execute(candidates):
        if obj_id in hidden or stored is None:
            readable = await phot_stats.readable_points(session, me, obj_id)
            stats = phot_stats.compute(readable)
        else:
            stats = phot_stats.stored_fields(stored)
        values = {axis: stats[name] for axis, name in query.fields.items()}
        if any(v is None for v in values.values()):
            continue
        points.append(
            {
                "id": obj_id,
                "ra": ra,
                "dec": dec,
                "redshift": redshift,
                "first_detected_mjd": stats["first_detected_mjd"],
                "peak_mjd": stats["peak_mjd_global"],
                "tns_discovery_date": None,
                **values,
            }
        )
        if len(points) > query.max_matches:
            break
    truncated = len(points) > query.max_matches
    points = points[: query.max_matches]
    names = await _primary_classifications(session, me, (p["id"] for p in points))
    for point in points:
        point["classification"] = names.get(point["id"])
    return points, truncated


async def get_aggregate(request: web.Request) -> web.Response:
    me = principal(request)
    query = aggregate_query(request, me)
    if "x" not in query.fields or "y" not in query.fields:
        return success({"fields": _fields_meta(), "points": [], "count": 0, "truncated": False})
    async with request.app[SESSIONS]() as session:
        points, truncated = await aggregate_points(session, me, query)
    return success(
        {"fields": _fields_meta(), "points": points, "count": len(points), "truncated": truncated}
    )
