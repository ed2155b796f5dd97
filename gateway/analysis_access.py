"""What the analysis handlers share: which services a caller may use, which analyses they may
read, how a start request names its flags and groups, and the batchers of concurrent starts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from aiohttp import web
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import raiseload

from http_edge.web import ApiError, forbidden
from shared.db.dialect import in_set, name_of
from shared.db.models import (
    AnalysisService,
    ObjAnalysis,
    analysis_service_groups,
    obj_analysis_groups,
    obj_groups,
)
from shared.db.session import read_session
from shared.domain.access import Principal, resolve_group_ids, visible
from shared.domain.analysis_lifecycle import AnalysisCreator, NewAnalysis
from shared.runtime.group_commit import GroupCommit

SERVICE_ID_LABEL = "analysis_service_id"

# Concurrent starts of this process, created together (one transaction per batch).
ANALYSIS_CREATOR = web.AppKey("analysis_creator", AnalysisCreator)
START_BATCHER = web.AppKey("start_batcher", GroupCommit[NewAnalysis, int])
SERVICES = web.AppKey("services", GroupCommit[tuple[Principal, int], AnalysisService])


async def usable_service(session: AsyncSession, me: Principal, service_id: int) -> AnalysisService:
    """The service if it is shared with one of the caller's groups, else SkyPortal's 403."""
    (found,) = await usable_services(session, [(me, service_id)])
    if isinstance(found, ApiError):
        raise found
    return found


async def usable_services(
    session: AsyncSession, wanted: Sequence[tuple[Principal, int]]
) -> list[AnalysisService | ApiError]:
    """For each (caller, service id): the service if it is shared with one of the caller's
    groups (any service for a system admin), else SkyPortal's 403. Two queries in all."""
    dialect = name_of(session)
    ids = sorted({service_id for _, service_id in wanted})
    query = (
        select(AnalysisService)
        .where(in_set(AnalysisService.id, ids, dialect))
        .options(raiseload(AnalysisService.groups))  # not needed here: one query fewer
    )
    services = {service.id: service for service in await session.scalars(query)}
    links = analysis_service_groups.c
    shared_with: dict[int, set[int]] = defaultdict(set)
    for service_id, group_id in await session.execute(
        select(links.analysis_service_id, links.group_id).where(
            in_set(links.analysis_service_id, ids, dialect)
        )
    ):
        shared_with[service_id].add(group_id)
    return [
        services[service_id]
        if service_id in services and (me.is_admin or shared_with[service_id] & me.group_ids)
        else forbidden(f"Could not access Analysis Service ID: {service_id}.")
        for me, service_id in wanted
    ]


def services_batcher(engine: AsyncEngine) -> GroupCommit[tuple[Principal, int], AnalysisService]:
    """The services of concurrent start requests, read together."""

    async def read(wanted: list[tuple[Principal, int]]) -> list[AnalysisService | ApiError]:
        async with read_session(engine) as session:
            return await usable_services(session, wanted)

    return GroupCommit(read)


def refuse_if_disabled(service: AnalysisService) -> None:
    if not service.enabled:
        raise forbidden(
            f"Analysis Service ID: {service.id} is disabled; it cannot be used until a "
            "service manager enables it again."
        )


async def request_group_ids(session: AsyncSession, me: Principal, group_ids: object) -> list[int]:
    """The groups that may read the new analysis; none given means all of the caller's."""
    if not group_ids:  # the caller's memberships, already known: no query
        return sorted(me.group_ids)
    groups = await resolve_group_ids(session, me, group_ids)
    return sorted(g.id for g in groups)


def readable_conditions(me: Principal) -> list[ColumnElement[bool]]:
    """An analysis is readable when it shares a group with the caller and the caller can read
    its object (SkyPortal's rule); system admins read everything."""
    if me.is_admin:
        return []
    return [
        visible(obj_analysis_groups, ObjAnalysis.id, me),
        visible(obj_groups, ObjAnalysis.obj_id, me),
    ]
