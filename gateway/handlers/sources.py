"""Sources (objs): create, list, read, delete."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.analysis_views import analysis_dict
from gateway.auth import principal
from gateway.schemas.sources import NewSource, SourceGroupsChange
from gateway.schemas.validation import validated
from gateway.serialize import source_dict
from gateway.source_access import (
    groups_named,
    source_not_found,
    visible_obj,
)
from gateway.source_filters import source_list_bounds, source_list_condition
from http_edge.app_keys import SESSIONS, SETTINGS
from http_edge.web import bad_request, json_body, page_from_query, query_bool, success
from shared.bus.outbox import enqueue
from shared.db.models import Obj, ObjAnalysis, User, obj_analysis_groups, obj_groups
from shared.domain.access import Principal, visible
from shared.domain.analysis_lifecycle import delete_analyses_where
from shared.domain.events import SourceSaved


def _new_obj(new: NewSource, me: Principal) -> Obj:
    return Obj(
        id=new.id,
        ra=new.ra,
        dec=new.dec,
        redshift=new.redshift,
        redshift_error=new.redshift_error,
        redshift_origin=new.redshift_origin,
        created_by_id=me.user_id,
    )


async def post_source(request: web.Request) -> web.Response:
    me = principal(request)
    new = validated(NewSource, await json_body(request, optional=False))
    obj = _new_obj(new, me)
    # One message whether or not the caller can see the existing source: it reveals nothing.
    taken = bad_request(f"Source {obj.id} already exists")
    async with request.app[SESSIONS].begin() as session:
        groups = await groups_named(session, me, new.group_ids)
        if not groups:
            raise bad_request("A source must be shared with at least one group")
        if await session.scalar(select(Obj.id).where(Obj.id == obj.id)) is not None:
            raise taken
        obj.groups = groups
        session.add(obj)
        try:
            await session.flush()
        except IntegrityError:
            raise taken from None
        for group in groups:
            enqueue(session, SourceSaved(obj_id=obj.id, group_id=group.id))
    return success({"id": obj.id})


async def post_source_groups(request: web.Request) -> web.Response:
    """Save a source to more groups (``inviteGroupIds``) or unsave it from some
    (``unsaveGroupIds``), as SkyPortal's ``/api/source_groups``; each new save is a
    ``source.saved`` event."""
    me = principal(request)
    change = validated(SourceGroupsChange, await json_body(request, optional=False))
    obj_id, invite, unsave = change.objId, change.inviteGroupIds or [], change.unsaveGroupIds or []
    async with request.app[SESSIONS].begin() as session:
        obj = await visible_obj(session, me, obj_id)
        saved_to = {g.id for g in obj.groups}
        if invite:
            await groups_named(session, me, invite)
        if unsave:
            await groups_named(session, me, unsave)
        added = [g for g in invite if g not in saved_to]
        remaining = (saved_to | set(added)) - set(unsave)
        if not remaining:
            raise bad_request("A source must stay saved to at least one group")
        if added:
            links = [{"obj_id": obj_id, "group_id": g} for g in added]
            await session.execute(insert(obj_groups), links)
        if unsave:
            await session.execute(
                delete(obj_groups).where(
                    obj_groups.c.obj_id == obj_id, obj_groups.c.group_id.in_(unsave)
                )
            )
        for group_id in added:
            enqueue(session, SourceSaved(obj_id=obj_id, group_id=group_id))
    return success({"saved_group_ids": added, "unsaved_group_ids": sorted(set(unsave) & saved_to)})


async def list_sources(request: web.Request) -> web.Response:
    me = principal(request)
    settings = request.app[SETTINGS]
    page = page_from_query(request, settings.page_size_default, settings.page_size_max)
    condition = visible(obj_groups, Obj.id, me)
    bounds = source_list_bounds(request)
    async with request.app[SESSIONS]() as session:
        if bounds:
            condition = and_(condition, await source_list_condition(session, me, bounds))
        counted = await session.execute(select(func.count()).select_from(Obj).where(condition))
        total = counted.scalar_one()
        objs = await session.scalars(
            select(Obj)
            .where(condition)
            .order_by(Obj.created_at.desc(), Obj.id)
            .offset(page.offset)
            .limit(page.size)
        )
        sources = [source_dict(obj, me) for obj in objs]
    return success(page.answer(total, sources=sources))


async def get_source(request: web.Request) -> web.Response:
    me = principal(request)
    obj_id = request.match_info["obj_id"]
    async with request.app[SESSIONS]() as session:
        obj = await visible_obj(session, me, obj_id)
        data = source_dict(obj, me)
        data["summary_history"] = await _with_usernames(session, data["summary_history"])
        if query_bool(request, "includeAnalyses"):
            analyses = await session.scalars(
                select(ObjAnalysis)
                .where(
                    ObjAnalysis.obj_id == obj_id,
                    visible(obj_analysis_groups, ObjAnalysis.id, me),
                )
                .order_by(ObjAnalysis.created_at, ObjAnalysis.id)
            )
            data["analyses"] = [analysis_dict(a, viewer=me) for a in analyses]
    return success(data)


async def _with_usernames(
    session: AsyncSession, history: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each history entry with ``set_by_username`` beside SkyPortal's ``set_by_user_id``."""
    user_ids = {e["set_by_user_id"] for e in history if e.get("set_by_user_id") is not None}
    if not user_ids:
        return history
    rows = await session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
    names: dict[int, str] = {user_id: name for user_id, name in rows}
    return [{**e, "set_by_username": _username(names, e.get("set_by_user_id"))} for e in history]


def _username(names: dict[int, str], user_id: int | None) -> str | None:
    return None if user_id is None else names.get(user_id)


async def delete_source(request: web.Request) -> web.Response:
    obj_id = request.match_info["obj_id"]
    async with request.app[SESSIONS].begin() as session:
        if await session.scalar(select(Obj.id).where(Obj.id == obj_id)) is None:
            raise source_not_found(obj_id)
        # The analyses with their artifacts first (the cascade would leave their blobs); the
        # database cascades to the source's other data and links.
        await delete_analyses_where(session, ObjAnalysis.obj_id == obj_id)
        await session.execute(delete(Obj).where(Obj.id == obj_id))
    return success()
