"""Default analyses of a service: ``/api/analysis_service/<id>/default_analysis[/<id>]``.

SkyPortal's fields, messages and status codes; unlike SkyPortal, only users who may manage the
service (``Manage Analysis Services`` and a member of one of its groups) create, change or delete
its defaults, and members of its groups read them.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.auth import principal
from gateway.schemas.default_analyses import DefaultAnalysisChange, NewDefaultAnalysis
from gateway.schemas.validation import validated
from gateway.source_access import groups_named
from http_edge.app_keys import SESSIONS
from http_edge.web import bad_request, json_body, not_found, path_int, success
from shared.db.models import AnalysisService, DefaultAnalysis, analysis_service_groups
from shared.domain import default_analyses as defaults
from shared.domain.access import Principal, visible
from shared.domain.default_analyses import DefaultAnalysisError

log = logging.getLogger("skyhook.gateway.default_analyses")

FLAGS = ("show_parameters", "show_plots", "show_corner")


async def _service(session: AsyncSession, me: Principal, service_id: int) -> AnalysisService:
    """The service when the caller shares a group with it; SkyPortal's 404 otherwise (a
    service of other groups is not revealed)."""
    query = select(AnalysisService).where(
        AnalysisService.id == service_id,
        visible(analysis_service_groups, AnalysisService.id, me),
    )
    service = (await session.scalars(query)).one_or_none()
    if service is None:
        raise not_found(f"Analysis service {service_id} not found")
    return service


async def _default(
    session: AsyncSession, service_id: int, default_id: int, missing: str
) -> DefaultAnalysis:
    found = await session.scalar(
        select(DefaultAnalysis).where(
            DefaultAnalysis.id == default_id, DefaultAnalysis.analysis_service_id == service_id
        )
    )
    if found is None:
        raise bad_request(missing.format(id=default_id))
    return found


async def _default_dict(session: AsyncSession, default: DefaultAnalysis) -> dict[str, Any]:
    return {
        "id": default.id,
        "analysis_service_id": default.analysis_service_id,
        "analysis_service_name": default.service.name,
        "author_id": default.author_id,
        "author": {"id": default.author.id, "username": default.author.username},
        "default_analysis_parameters": default.default_analysis_parameters,
        "source_filter": default.source_filter,
        "daily_limit": default.daily_limit,
        **{flag: getattr(default, flag) for flag in FLAGS},
        "groups": [
            {"id": g.id, "name": g.name} for g in sorted(default.groups, key=lambda g: g.id)
        ],
        "stats": await defaults.stats_of(session, default),
        "created_at": default.created_at,
        "modified": default.modified,
    }


def _checked(run: Any) -> Any:
    try:
        return run()
    except DefaultAnalysisError as exc:
        raise bad_request(str(exc)) from None


async def post_default_analysis(request: web.Request) -> web.Response:
    me = principal(request)
    service_id = path_int(request, "analysis_service_id")
    body = await json_body(request, optional=False)
    async with request.app[SESSIONS].begin() as session:
        service = await _service(session, me, service_id)
        parameters = _checked(
            lambda: defaults.check_parameters(service, body.get("default_analysis_parameters"))
        )
        new = validated(NewDefaultAnalysis, body)
        groups = await groups_named(session, me, new.group_ids)
        default = DefaultAnalysis(
            analysis_service_id=service.id,
            author_id=me.user_id,
            default_analysis_parameters=parameters,
            source_filter=new.source_filter,
            daily_limit=new.daily_limit,
            groups=groups,
            **{flag: getattr(new, flag) for flag in FLAGS},
        )
        session.add(default)
        await session.flush()
        default_id = default.id
    log.info("default analysis %d of service %d created by %d", default_id, service_id, me.user_id)
    return success({"id": default_id})


async def get_default_analyses(request: web.Request) -> web.Response:
    me = principal(request)
    service_id = path_int(request, "analysis_service_id")
    async with request.app[SESSIONS]() as session:
        await _service(session, me, service_id)
        rows = await session.scalars(
            select(DefaultAnalysis)
            .where(DefaultAnalysis.analysis_service_id == service_id)
            .order_by(DefaultAnalysis.id)
        )
        return success([await _default_dict(session, d) for d in rows.unique()])


async def get_default_analysis(request: web.Request) -> web.Response:
    me = principal(request)
    service_id = path_int(request, "analysis_service_id")
    default_id = path_int(request, "default_analysis_id")
    async with request.app[SESSIONS]() as session:
        await _service(session, me, service_id)
        default = await _default(
            session, service_id, default_id, "Could not load default analysis {id}"
        )
        return success(await _default_dict(session, default))


async def patch_default_analysis(request: web.Request) -> web.Response:
    me = principal(request)
    service_id = path_int(request, "analysis_service_id")
    default_id = path_int(request, "default_analysis_id")
    body = await json_body(request, optional=False)
    async with request.app[SESSIONS].begin() as session:
        service = await _service(session, me, service_id)
        default = await _default(
            session, service_id, default_id, "Could not find default analysis {id}"
        )
        await _apply_patch(session, me, service, default, body)
    return success()


async def _apply_patch(
    session: AsyncSession,
    me: Principal,
    service: AnalysisService,
    default: DefaultAnalysis,
    body: dict[str, Any],
) -> None:
    if "default_analysis_parameters" in body:
        value = body["default_analysis_parameters"]
        default.default_analysis_parameters = _checked(
            lambda: defaults.check_parameters(service, value)
        )
    change = validated(DefaultAnalysisChange, body)
    named = change.model_fields_set
    # The model has normalized both: the filter to an object, a null limit to the default.
    if "source_filter" in named:
        default.source_filter = cast(dict[str, Any], change.source_filter)
    if "daily_limit" in named:
        default.daily_limit = cast(int, change.daily_limit)
    if "group_ids" in named:
        default.groups = await groups_named(session, me, change.group_ids)
    for flag in FLAGS:
        if flag in named:
            setattr(default, flag, getattr(change, flag))


async def delete_default_analysis(request: web.Request) -> web.Response:
    me = principal(request)
    service_id = path_int(request, "analysis_service_id")
    default_id = path_int(request, "default_analysis_id")
    async with request.app[SESSIONS].begin() as session:
        await _service(session, me, service_id)
        default = await _default(
            session, service_id, default_id, "Could not find default analysis {id}"
        )
        await session.delete(default)
    return success()
