"""What the analysis handlers share: which services a caller may use, which analyses they may
read, how a start request names its flags and groups, and the batchers of concurrent starts."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import raiseload

from http_edge.web import ApiError, forbidden
from shared.db.dialect import in_bound, name_of
from shared.db.models import (
    AnalysisService,
    ObjAnalysis,
    analysis_service_groups,
    obj_analysis_groups,
    obj_groups,
)
from shared.db.session import read_session
from shared.domain.access import Principal, resolve_group_ids, visible
from shared.domain.access_versions import SERVICES as SERVICES_COUNTER
from shared.domain.access_versions import Versioned, VersionedCache, version_of
from shared.domain.analysis_lifecycle import AnalysisCreator, NewAnalysis
from shared.runtime.group_commit import GroupCommit

SERVICE_ID_LABEL = "analysis_service_id"

# Concurrent starts of this process, created together (one transaction per batch).
ANALYSIS_CREATOR = web.AppKey("analysis_creator", AnalysisCreator)
START_BATCHER = web.AppKey("start_batcher", GroupCommit[NewAnalysis, int])


@dataclass(frozen=True)
class SharedService:
    """A service and the groups it is shared with."""

    service: AnalysisService
    group_ids: frozenset[int]

    def usable_by(self, me: Principal) -> bool:
        """Shared with one of the caller's groups, or the caller is a system admin."""
        return me.is_admin or bool(self.group_ids & me.group_ids)


SERVICES = web.AppKey("services", GroupCommit[int, Versioned[SharedService] | None])
# Services by id, as start requests use them (each write checks its copy is current).
CACHED_SERVICES = web.AppKey("cached_services", VersionedCache[int, SharedService])
CACHED_SERVICES_LIMIT = 1_000


def cannot_access_service(service_id: int) -> ApiError:
    return forbidden(f"Could not access Analysis Service ID: {service_id}.")


async def usable_service(session: AsyncSession, me: Principal, service_id: int) -> AnalysisService:
    """The service if it is shared with one of the caller's groups, else SkyPortal's 403."""
    found = (await shared_services(session, [service_id]))[0]
    if found is None or not found.value.usable_by(me):
        raise cannot_access_service(service_id)
    return found.value.service


async def shared_services(
    session: AsyncSession, service_ids: Sequence[int]
) -> list[Versioned[SharedService] | None]:
    """For each id: the service with its groups and the ``services`` counter read with it, or
    None when there is no such service. Two queries in all."""
    services_query, groups_query = _services_and_groups(name_of(session))
    parameters = {"service_ids": sorted(set(service_ids))}
    services = {
        service.id: (service, version)
        for service, version in await session.execute(services_query, parameters)
    }
    shared_with: dict[int, set[int]] = defaultdict(set)
    for service_id, group_id in await session.execute(groups_query, parameters):
        shared_with[service_id].add(group_id)
    return [
        Versioned(SharedService(services[i][0], frozenset(shared_with[i])), services[i][1])
        if i in services
        else None
        for i in service_ids
    ]


@functools.cache
def _services_and_groups(dialect: str) -> tuple[Any, Any]:
    """The services with the counter, and whom they are shared with; bound with the ids."""
    services = (
        select(AnalysisService, version_of(SERVICES_COUNTER))
        .where(in_bound(AnalysisService.id, "service_ids", dialect))
        .options(raiseload(AnalysisService.groups))  # not needed here: one query fewer
    )
    links = analysis_service_groups.c
    groups = select(links.analysis_service_id, links.group_id).where(
        in_bound(links.analysis_service_id, "service_ids", dialect)
    )
    return services, groups


def services_batcher(engine: AsyncEngine) -> GroupCommit[int, Versioned[SharedService] | None]:
    """The services of concurrent start requests, read together."""

    async def read(service_ids: list[int]) -> list[Versioned[SharedService] | None]:
        async with read_session(engine) as session:
            return await shared_services(session, service_ids)

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
