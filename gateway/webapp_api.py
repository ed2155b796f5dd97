"""API endpoints the web app needed that had no equivalent: a searchable source overview with
analysis counts, and analysis health (counts by status over a window, newest failures)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from gateway import source_filters
from gateway.analysis_access import readable_conditions
from gateway.auth import principal
from http_edge.app_keys import SESSIONS, SETTINGS
from http_edge.web import bad_request, page_from_query, query_id, query_int, success
from shared.db.models import AnalysisService, Obj, ObjAnalysis, obj_groups
from shared.db.types import utcnow
from shared.domain.access import visible
from shared.domain.enums import AnalysisStatus

WINDOWS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
FAILED = (AnalysisStatus.FAILURE, AnalysisStatus.TIMED_OUT)
SUMMARY_PREVIEW_CHARS = 200


def _search_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


async def source_overview(request: web.Request) -> web.Response:
    me = principal(request)
    settings = request.app[SETTINGS]
    page = page_from_query(request, settings.page_size_default, settings.page_size_max)
    conditions: list[Any] = [visible(obj_groups, Obj.id, me)]
    text = request.query.get("q", "").strip()
    if text:
        conditions.append(func.lower(Obj.id).like(_search_pattern(text), escape="\\"))
    bounds = source_filters.source_list_bounds(request)
    columns = (Obj.id, Obj.ra, Obj.dec, Obj.redshift, Obj.summary, Obj.created_at)
    async with request.app[SESSIONS]() as session:
        if bounds:
            conditions.append(await source_filters.source_list_condition(session, me, bounds))
        total = int(await session.scalar(select(func.count(Obj.id)).where(*conditions)) or 0)
        query = (
            select(*columns)
            .where(*conditions)
            .order_by(Obj.created_at.desc(), Obj.id)
            .offset(page.offset)
            .limit(page.size)
        )
        rows = [dict(r) for r in (await session.execute(query)).mappings()]
        counts = await _counts_by_obj(session, me, [r["id"] for r in rows])
    for row in rows:
        summary = row.pop("summary") or ""
        row["summary_preview"] = summary[:SUMMARY_PREVIEW_CHARS] or None
        row["analyses_by_status"] = counts.get(row["id"], {})
    return success(page.answer(total, sources=rows))


async def _counts_by_obj(session: Any, me: Any, obj_ids: list[str]) -> dict[str, dict[str, int]]:
    if not obj_ids:
        return {}
    query = (
        select(ObjAnalysis.obj_id, ObjAnalysis.status, func.count(ObjAnalysis.id))
        .where(ObjAnalysis.obj_id.in_(obj_ids), *readable_conditions(me))
        .group_by(ObjAnalysis.obj_id, ObjAnalysis.status)
    )
    counts: dict[str, dict[str, int]] = {}
    for obj_id, status, count in await session.execute(query):
        counts.setdefault(obj_id, {})[str(status)] = int(count)
    return counts


def _health_filters(request: web.Request) -> tuple[str, list[Any]]:
    window = request.query.get("window", "24h")
    if window not in WINDOWS:
        raise bad_request(f"Invalid window: {window} (one of {', '.join(WINDOWS)})")
    conditions: list[Any] = [
        *readable_conditions(principal(request)),
        ObjAnalysis.created_at >= utcnow() - WINDOWS[window],
    ]
    service_id = query_id(request, "analysisServiceID")
    if service_id is not None:
        conditions.append(ObjAnalysis.analysis_service_id == service_id)
    status = request.query.get("status")
    if status:
        if status not in {s.value for s in AnalysisStatus}:
            raise bad_request(f"Invalid status: {status}")
        conditions.append(ObjAnalysis.status == status)
    return window, conditions


async def analysis_health(request: web.Request) -> web.Response:
    window, conditions = _health_filters(request)
    limit = query_int(request, "numFailures", 50)
    assert limit is not None
    if not 1 <= limit <= 500:
        raise bad_request("Invalid numFailures: must be between 1 and 500")
    counts_query = (
        select(ObjAnalysis.status, func.count(ObjAnalysis.id))
        .where(*conditions)
        .group_by(ObjAnalysis.status)
    )
    failures_query = (
        select(
            ObjAnalysis.id,
            ObjAnalysis.obj_id,
            ObjAnalysis.status,
            ObjAnalysis.status_message,
            ObjAnalysis.created_at,
            ObjAnalysis.last_activity,
            ObjAnalysis.analysis_service_id,
            AnalysisService.display_name.label("analysis_service_name"),
        )
        .join(AnalysisService)
        .where(*conditions, ObjAnalysis.status.in_(FAILED))
        .order_by(ObjAnalysis.last_activity.desc(), ObjAnalysis.id.desc())
        .limit(limit)
    )
    async with request.app[SESSIONS]() as session:
        counts = {str(s): int(n) for s, n in await session.execute(counts_query)}
        failures = [dict(r) for r in (await session.execute(failures_query)).mappings()]
    return success({"window": window, "counts": counts, "failures": failures})
