"""Users, groups and API tokens."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from gateway.auth import principal
from gateway.schemas.accounts import NewGroup, NewMember, NewToken, NewUser, UserChange
from gateway.schemas.validation import validated
from gateway.serialize import token_dict, user_dict
from http_edge.app_keys import SECRET_BOX, SESSIONS, SETTINGS
from http_edge.web import (
    ApiError,
    bad_request,
    json_body,
    not_found,
    page_from_query,
    path_int,
    success,
)
from shared.db.models import Group, GroupUser, Token, User
from shared.domain.access import Principal, groups_not_found
from shared.domain.accounts import add_member, issue_token
from shared.domain.llm_keys import user_llm_key


async def post_user(request: web.Request) -> web.Response:
    new = validated(NewUser, await json_body(request, optional=False))
    username, acls, is_admin, group_ids = new.username, new.acls, new.is_admin, new.group_ids
    async with request.app[SESSIONS].begin() as session:
        found = await session.execute(select(Group).where(Group.id.in_(group_ids)))
        groups = list(found.scalars())
        if len(groups) != len(set(group_ids)):
            raise bad_request(groups_not_found(group_ids))
        user = User(username=username, is_admin=is_admin, acls=acls)
        session.add(user)
        try:
            await session.flush()
        except IntegrityError:
            raise bad_request(f"User with username {username!r} already exists") from None
        for group in groups:
            await add_member(session, group, user)
        user_id = user.id
    return success({"id": user_id})


async def _load_user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id, options=[selectinload(User.memberships)])
    if user is None:
        raise not_found(f"User {user_id} not found")
    return user


async def get_user(request: web.Request) -> web.Response:
    me = principal(request)
    user_id = path_int(request, "user_id", "user_id")
    if not me.is_admin and user_id != me.user_id:
        raise ApiError(403, "Only system admins can view other users")
    async with request.app[SESSIONS]() as session:
        return success(user_dict(await _load_user(session, user_id)))


async def list_users(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    page = page_from_query(request, settings.page_size_default, settings.page_size_max)
    async with request.app[SESSIONS]() as session:
        total = (await session.execute(select(func.count(User.id)))).scalar_one()
        users = await session.scalars(
            select(User).order_by(User.id).offset(page.offset).limit(page.size)
        )
        items = [user_dict(u) for u in users]
    return success(page.answer(total, users=items))


async def patch_user(request: web.Request) -> web.Response:
    user_id = path_int(request, "user_id", "user_id")
    change = validated(UserChange, await json_body(request, optional=False))
    async with request.app[SESSIONS].begin() as session:
        user = await _load_user(session, user_id)
        if change.acls is not None:
            user.acls = change.acls
        if change.is_admin is not None:
            user.is_admin = change.is_admin
    return success()


async def get_profile(request: web.Request) -> web.Response:
    box = request.app[SECRET_BOX]
    async with request.app[SESSIONS]() as session:
        user = await _load_user(session, principal(request).user_id)
        return success({**user_dict(user), "llm_key_set": user_llm_key(box, user) is not None})


def _group_dict(group: Group, members: list[GroupUser] | None, me: Principal) -> dict[str, object]:
    data: dict[str, object] = {
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "created_at": group.created_at,
        "is_member": group.id in me.group_ids,
        "can_admin": me.can_admin_group(group.id),
    }
    if members is not None:
        data["users"] = [
            {"id": m.user_id, "username": m.user.username, "admin": m.admin} for m in members
        ]
    return data


async def post_group(request: web.Request) -> web.Response:
    new = validated(NewGroup, await json_body(request, optional=False))
    name, description, admins = new.name, new.description, new.group_admins
    async with request.app[SESSIONS].begin() as session:
        users = list(await session.scalars(select(User).where(User.id.in_(admins))))
        if len(users) != len(set(admins)):
            raise bad_request(f"Cannot find one or more users with IDs: {sorted(admins)}")
        group = Group(name=name, description=description)
        session.add(group)
        try:
            await session.flush()
        except IntegrityError:
            raise bad_request(f"Group with name {name!r} already exists") from None
        for user in users:
            await add_member(session, group, user, admin=True)
        group_id = group.id
    return success({"id": group_id})


async def list_groups(request: web.Request) -> web.Response:
    me = principal(request)
    async with request.app[SESSIONS]() as session:
        query = select(Group).order_by(Group.id)
        if not me.is_admin:
            query = query.where(Group.id.in_(me.group_ids))
        groups = [_group_dict(g, None, me) for g in await session.scalars(query)]
    return success({"user_groups": [g for g in groups if g["is_member"]], "all_groups": groups})


async def get_group(request: web.Request) -> web.Response:
    me = principal(request)
    group_id = path_int(request, "group_id", "group_id")
    if not me.is_admin and group_id not in me.group_ids:
        raise not_found(f"Group {group_id} not found")
    async with request.app[SESSIONS]() as session:
        group = await session.get(Group, group_id)
        if group is None:
            raise not_found(f"Group {group_id} not found")
        members = list(
            await session.scalars(
                select(GroupUser)
                .where(GroupUser.group_id == group_id)
                .options(selectinload(GroupUser.user))
                .order_by(GroupUser.user_id)
            )
        )
        return success(_group_dict(group, members, me))


def _admin_group_or_fail(me: Principal, group_id: int) -> None:
    if not me.can_admin_group(group_id):
        raise ApiError(403, "Only group admins and system admins can change a group's members")


async def post_group_user(request: web.Request) -> web.Response:
    me = principal(request)
    group_id = path_int(request, "group_id", "group_id")
    _admin_group_or_fail(me, group_id)
    member = validated(NewMember, await json_body(request, optional=False))
    user_id = member.userID if "userID" in member.model_fields_set else member.user_id
    username, admin = member.username, member.admin
    if user_id is None and username is None:
        raise bad_request("Missing userID or username")
    async with request.app[SESSIONS].begin() as session:
        group = await session.get(Group, group_id)
        if group is None:
            raise not_found(f"Group {group_id} not found")
        query = select(User)
        if user_id is not None:
            query = query.where(User.id == user_id)
        else:
            query = query.where(User.username == username)
        user = (await session.execute(query)).scalar_one_or_none()
        if user is None:
            raise not_found(f"User {user_id if user_id is not None else username} not found")
        await add_member(session, group, user, admin=admin)
        data = {"group_id": group_id, "user_id": user.id, "admin": admin}
    return success(data)


async def delete_group_user(request: web.Request) -> web.Response:
    me = principal(request)
    group_id = path_int(request, "group_id", "group_id")
    user_id = path_int(request, "user_id", "user_id")
    _admin_group_or_fail(me, group_id)
    async with request.app[SESSIONS].begin() as session:
        membership = await session.get(GroupUser, (group_id, user_id))
        if membership is None:
            raise not_found(f"User {user_id} is not a member of group {group_id}")
        await session.delete(membership)
    return success()


async def post_token(request: web.Request) -> web.Response:
    me = principal(request)
    wanted = validated(NewToken, await json_body(request))
    name = wanted.name
    user_id = me.user_id if "user_id" not in wanted.model_fields_set else wanted.user_id
    if user_id is None:
        raise bad_request("Invalid user_id: must be an integer")
    if user_id != me.user_id and not me.is_admin:
        raise ApiError(403, "Only system admins can create tokens for other users")
    async with request.app[SESSIONS].begin() as session:
        user = await _load_user(session, user_id)
        token, secret = await issue_token(session, user, name)
        data = {**token_dict(token), "token": secret}
    return success(data)


async def list_tokens(request: web.Request) -> web.Response:
    me = principal(request)
    async with request.app[SESSIONS]() as session:
        tokens = await session.scalars(
            select(Token).where(Token.user_id == me.user_id).order_by(Token.id)
        )
        return success([token_dict(t) for t in tokens])


async def delete_token(request: web.Request) -> web.Response:
    me = principal(request)
    token_id = path_int(request, "token_id", "token_id")
    async with request.app[SESSIONS].begin() as session:
        token = await session.get(Token, token_id)
        if token is None or (token.user_id != me.user_id and not me.is_admin):
            raise not_found(f"Token {token_id} not found")
        await session.delete(token)
    return success()
