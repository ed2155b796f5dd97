"""Analyses of a source: start, list, read, dispatch attempts, cancel, delete.

SkyPortal's paths, envelopes and messages, with its weaknesses fixed:
parameter values are checked, disabled services refuse to run, the cap is atomic, ``objID``
matches exactly, lists are bounded, nothing secret or server-side (paths) is returned.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.analysis_access import (
    CACHED_SERVICES,
    SERVICE_ID_LABEL,
    SERVICES,
    START_BATCHER,
    cannot_access_service,
    readable_conditions,
    refuse_if_disabled,
    request_group_ids,
)
from gateway.analysis_views import analysis_brief, analysis_dict, attempt_dict
from gateway.auth import PRINCIPAL_VERSION, principal, reauthenticate
from gateway.schemas.analyses import StartAnalysis
from gateway.schemas.validation import validated
from http_edge.app_keys import ARTIFACTS, ENGINE, SESSIONS, SETTINGS
from http_edge.web import (
    Page,
    bad_request,
    forbidden,
    json_body,
    not_found,
    page_from_query,
    path_int,
    query_bool,
    query_id,
    success,
    success_page,
)
from shared.db.models import (
    AnalysisService,
    DispatchAttempt,
    ObjAnalysis,
)
from shared.db.session import read_session
from shared.domain.access import Principal
from shared.domain.access_versions import ReadAt, StaleAccess
from shared.domain.analysis_data import load_analysis_data
from shared.domain.analysis_lifecycle import (
    CapReached,
    NewAnalysis,
    ObjNotVisible,
    cancel_analyses,
    delete_analysis,
    obj_visible,
)
from shared.domain.analysis_parameters import (
    ParameterError,
    display_parameters,
    parameter_specs,
    validate_analysis_parameters,
)
from shared.domain.artifacts import ArtifactStore

log = logging.getLogger("skyhook.gateway.analyses")

CANNOT_ACCESS = "Cannot access this Analysis."
CANNOT_DELETE = "Cannot delete this Analysis."
CANNOT_CANCEL = "Only the author of this Analysis or a system admin can cancel it."
START_CAP_MESSAGE = (
    "You have reached the maximum number of analyses for this object. "
    "Please delete some analyses before attempting to start more analyses."
)
ANALYSIS_ID_LABEL = "analysis_id"
MODEL_LIGHTCURVE_KEYS = ("model_lightcurve", "model_lightcurves")


# --- start ------------------------------------------------------------------------------------


def _checked_parameters(service: AnalysisService, body: dict[str, Any]) -> dict[str, Any]:
    try:
        specs = parameter_specs(service.optional_analysis_parameters)
        return validate_analysis_parameters(specs, body.get("analysis_parameters"))
    except ParameterError as exc:
        raise bad_request(str(exc)) from None


def _input_filters(wanted: StartAnalysis) -> dict[str, Any]:
    if wanted.input_filters is None:
        return {}
    return wanted.input_filters.model_dump(exclude_none=True)


async def post_analysis(request: web.Request) -> web.Response:
    """Start an analysis. The caller and the service may be this process' cached copies: the
    creating transaction checks they are still current, and when they are not, both are read
    afresh and everything is decided again (a revoked token gets its 401, an unshared or
    disabled service its 403)."""
    body = await json_body(request)
    try:
        analysis_id = await _start(request, body, principal(request), cached=True)
    except StaleAccess:
        request.app[CACHED_SERVICES].clear()
        me = await reauthenticate(request)
        analysis_id = await _start(request, body, me, cached=False)
    return success({"id": analysis_id})


async def _service_for(
    request: web.Request, me: Principal, service_id: int, *, cached: bool
) -> tuple[AnalysisService, int]:
    """The service the caller may use and the ``services`` counter it was read at."""
    copy = await request.app[CACHED_SERVICES].read_through(
        service_id, request.app[SERVICES].submit, cached=cached
    )
    if copy is None or not copy.value.usable_by(me):
        raise cannot_access_service(service_id)
    return copy.value.service, copy.version


async def _start(request: web.Request, body: dict[str, Any], me: Principal, *, cached: bool) -> int:
    service_id = path_int(request, SERVICE_ID_LABEL, SERVICE_ID_LABEL)
    obj_id = request.match_info["obj_id"]
    service, service_version = await _service_for(request, me, service_id, cached=cached)
    if service.upload_only:
        raise forbidden(
            f"Analysis Service ID: {service_id} is of type upload_only. "
            "Please use the analysis_upload endpoint."
        )
    refuse_if_disabled(service)
    parameters = _checked_parameters(service, body)
    wanted = validated(StartAnalysis, body)
    group_ids = sorted(me.group_ids)  # none named: the caller's, already known (no query)
    if wanted.group_ids:
        async with read_session(request.app[ENGINE]) as session:
            group_ids = await request_group_ids(session, me, wanted.group_ids)
    new = NewAnalysis(
        obj_id=obj_id,
        service=service,
        author=me,
        group_ids=group_ids,
        parameters=parameters,
        display_parameters=display_parameters(parameters),
        input_filters=_input_filters(wanted),
        show_parameters=bool(wanted.show_parameters),
        show_plots=bool(wanted.show_plots),
        show_corner=bool(wanted.show_corner),
        read_at=ReadAt(request.get(PRINCIPAL_VERSION), service_version) if cached else None,
    )
    try:
        analysis_id = await request.app[START_BATCHER].submit(new)
    except ObjNotVisible:
        raise not_found(f"Error posting analysis: Obj {obj_id} not found") from None
    except CapReached:
        raise forbidden(START_CAP_MESSAGE) from None
    log.info(
        "analysis %d queued: service %d, obj %s, user %d",
        analysis_id,
        service_id,
        obj_id,
        me.user_id,
    )
    return analysis_id


# --- reads ------------------------------------------------------------------------------------


async def readable_analysis(
    session: AsyncSession, me: Principal, analysis_id: int, obj_id: str | None = None
) -> ObjAnalysis:
    query = select(ObjAnalysis).where(ObjAnalysis.id == analysis_id, *readable_conditions(me))
    if obj_id is not None:
        query = query.where(ObjAnalysis.obj_id == obj_id)
    analysis = (await session.scalars(query)).one_or_none()
    if analysis is None:
        raise forbidden(CANNOT_ACCESS)
    return analysis


async def _require_obj(session: AsyncSession, me: Principal, obj_id: str) -> None:
    if not await obj_visible(session, obj_id, me):
        raise not_found(f"Obj {obj_id} not found")


def _obj_filter(request: web.Request) -> str | None:
    """The path's obj id wins over ``objID`` (as in SkyPortal); both match exactly."""
    return request.match_info.get("obj_id") or request.query.get("objID") or None


async def get_analysis(request: web.Request) -> web.Response:
    me = principal(request)
    analysis_id = path_int(request, ANALYSIS_ID_LABEL, ANALYSIS_ID_LABEL)
    obj_id = _obj_filter(request)
    async with request.app[SESSIONS]() as session:
        if obj_id is not None:
            await _require_obj(session, me, obj_id)
        analysis = await readable_analysis(session, me, analysis_id, obj_id)
    data = analysis_dict(analysis, me)
    if query_bool(request, "includeAnalysisData"):
        data["data"] = await load_analysis_data(request.app[ARTIFACTS], analysis)
    return success(data)


async def _model_lightcurves(store: ArtifactStore, analysis: ObjAnalysis) -> dict[str, Any]:
    """Only the model light curves of an analysis (for overlays), not its other artifacts."""
    found: dict[str, Any] = dict.fromkeys(MODEL_LIGHTCURVE_KEYS)
    for key in MODEL_LIGHTCURVE_KEYS:
        ref = (analysis.artifacts or {}).get(key)
        if not isinstance(ref, dict) or "path" not in ref:
            continue
        try:
            raw = await store.read(ref)
        except FileNotFoundError:
            log.warning("analysis %d: the %s artifact file is missing", analysis.id, key)
            continue
        found[key] = await asyncio.to_thread(json.loads, raw)
    return found


def _list_conditions(request: web.Request, me: Principal, obj_id: str | None) -> list[Any]:
    conditions: list[Any] = readable_conditions(me)
    if obj_id is not None:
        conditions.append(ObjAnalysis.obj_id == obj_id)
    service_id = query_id(request, "analysisServiceID")
    if service_id is not None:
        conditions.append(ObjAnalysis.analysis_service_id == service_id)
    if query_bool(request, "summaryOnly"):
        summaries = select(AnalysisService.id).where(AnalysisService.is_summary.is_(True))
        conditions.append(ObjAnalysis.analysis_service_id.in_(summaries))
    return conditions


def _page(request: web.Request) -> tuple[Page, bool]:
    settings = request.app[SETTINGS]
    if "pageNumber" in request.query or "numPerPage" in request.query:
        return page_from_query(request, settings.page_size_default, settings.page_size_max), True
    return Page(1, settings.page_size_max), False


async def list_analyses(request: web.Request) -> web.Response:
    """SkyPortal's list in ``data`` (at most ``page_size_max`` items without paging;
    ``X-Total-Matches`` tells how many matched). With ``pageNumber``/``numPerPage``, ``data``
    is still that list (SkyPortal clients index it) and the paging metadata sits beside it."""
    me = principal(request)
    obj_id = _obj_filter(request)
    conditions = _list_conditions(request, me, obj_id)
    page, paginated = _page(request)
    async with request.app[SESSIONS]() as session:
        if obj_id is not None:
            await _require_obj(session, me, obj_id)
        query = select(ObjAnalysis).where(*conditions).order_by(ObjAnalysis.id)
        rows = list(await session.scalars(query.offset(page.offset).limit(page.size)))
        total = len(rows)
        if paginated or total == page.size:
            count = select(func.count(ObjAnalysis.id)).where(*conditions)
            total = int(await session.scalar(count) or 0)
    if obj_id is None:
        items = [analysis_brief(a) for a in rows]
    else:
        # As SkyPortal's per-object list: every item carries its model light curves (for the
        # photometry overlay); only analyses that stored one cost a file read.
        items = [analysis_dict(a, me) for a in rows]
        artifacts = request.app[ARTIFACTS]
        curves = await asyncio.gather(*(_model_lightcurves(artifacts, a) for a in rows))
        for item, found in zip(items, curves, strict=True):
            item.update(found)
    response = success_page(items, page, total) if paginated else success(items)
    response.headers["X-Total-Matches"] = str(total)
    return response


async def list_attempts(request: web.Request) -> web.Response:
    me = principal(request)
    analysis_id = path_int(request, ANALYSIS_ID_LABEL, ANALYSIS_ID_LABEL)
    async with request.app[SESSIONS]() as session:
        await readable_analysis(session, me, analysis_id)
        attempts = await session.scalars(
            select(DispatchAttempt)
            .where(DispatchAttempt.analysis_id == analysis_id)
            .order_by(DispatchAttempt.attempt_number)
        )
        return success([attempt_dict(a) for a in attempts])


# --- cancel and delete ------------------------------------------------------------------------


async def _own_analysis(
    session: AsyncSession, me: Principal, analysis_id: int, refusal: str
) -> ObjAnalysis:
    """The analysis when the caller wrote it or is a system admin; else 403 (``refusal`` when
    the caller can read it, SkyPortal's "Cannot access" when they cannot)."""
    analysis = await session.get(ObjAnalysis, analysis_id)
    if analysis is None:
        raise forbidden(CANNOT_ACCESS)
    if me.is_admin or analysis.author_id == me.user_id:
        return analysis
    await readable_analysis(session, me, analysis_id)
    raise forbidden(refusal)


async def post_cancel(request: web.Request) -> web.Response:
    me = principal(request)
    analysis_id = path_int(request, ANALYSIS_ID_LABEL, ANALYSIS_ID_LABEL)
    async with request.app[SESSIONS].begin() as session:
        await _own_analysis(session, me, analysis_id, CANNOT_CANCEL)
        if not await cancel_analyses(session, [analysis_id], me.username):
            status = await session.scalar(
                select(ObjAnalysis.status).where(ObjAnalysis.id == analysis_id)
            )
            raise bad_request(f"Analysis is already {status}")
    log.info("analysis %d cancelled by user %d", analysis_id, me.user_id)
    return success({"id": analysis_id, "status": "cancelled"})


async def delete_analysis_handler(request: web.Request) -> web.Response:
    me = principal(request)
    analysis_id = path_int(request, ANALYSIS_ID_LABEL, ANALYSIS_ID_LABEL)
    async with request.app[SESSIONS].begin() as session:
        analysis = await _own_analysis(session, me, analysis_id, CANNOT_DELETE)
        await delete_analysis(session, analysis)
    log.info("analysis %d deleted by user %d", analysis_id, me.user_id)
    return success()
