"""Creating users, groups and API tokens (used by the API and by ``skyhook token create``)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Group, GroupUser, Token, User
from shared.domain.enums import ACL
from shared.security.secrets import hash_token, new_api_token

VALID_ACLS = tuple(a.value for a in ACL)


class AccountError(ValueError):
    """Bad account input; the message is meant for the user."""


def check_acls(acls: object) -> list[str]:
    if not isinstance(acls, list) or not all(isinstance(a, str) for a in acls):
        raise AccountError("Invalid acls: must be a list of ACL names")
    unknown = [a for a in acls if a not in VALID_ACLS]
    if unknown:
        raise AccountError(f"Invalid ACL(s): {unknown}. Valid ACLs: {', '.join(VALID_ACLS)}")
    return sorted(set(acls))


def check_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AccountError(f"`{field}` is required and must be a non-empty string")
    if len(value) > 255:
        raise AccountError(f"`{field}` must be at most 255 characters")
    return value.strip()


async def get_or_create_group(session: AsyncSession, name: str) -> Group:
    group = (await session.execute(select(Group).where(Group.name == name))).scalar_one_or_none()
    if group is None:
        group = Group(name=name)
        session.add(group)
        await session.flush()
    return group


async def add_member(session: AsyncSession, group: Group, user: User, admin: bool = False) -> None:
    existing = await session.get(GroupUser, (group.id, user.id))
    if existing is None:
        session.add(GroupUser(group_id=group.id, user_id=user.id, admin=admin))
    else:
        existing.admin = admin
    await session.flush()


async def ensure_user(
    session: AsyncSession,
    username: str,
    *,
    admin: bool = False,
    acls: Iterable[str] = (),
    groups: Iterable[str] = (),
) -> User:
    """Create the user (and groups) if missing; add the ACLs, admin flag and memberships."""
    user = (
        await session.execute(select(User).where(User.username == username))
    ).scalar_one_or_none()
    if user is None:
        user = User(username=username, is_admin=admin, acls=check_acls(list(acls)))
        session.add(user)
        await session.flush()
    else:
        user.is_admin = user.is_admin or admin
        user.acls = check_acls(sorted(set(user.acls) | set(acls)))
    for name in groups:
        await add_member(session, await get_or_create_group(session, name), user)
    return user


async def issue_token(session: AsyncSession, user: User, name: str = "") -> tuple[Token, str]:
    """A new API token; the secret is returned once and only its hash is stored."""
    secret = new_api_token()
    token = Token(user_id=user.id, name=name, token_hash=hash_token(secret))
    session.add(token)
    await session.flush()
    return token, secret
