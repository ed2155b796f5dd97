"""Who is calling, what they may do, and which rows they may see."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, exists, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from shared.db.dialect import in_bound, name_of
from shared.db.models import Group, GroupUser, Token, User
from shared.domain.access_versions import PRINCIPALS, Versioned, version_of
from shared.domain.enums import ACL
from shared.domain.errors import DomainError, InvalidInput, PermissionMissing
from shared.domain.ids import is_id
from shared.security.secrets import hash_token


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    is_admin: bool
    acls: frozenset[str]
    group_ids: frozenset[int]
    admin_group_ids: frozenset[int]

    def has_acl(self, acl: ACL) -> bool:
        if self.is_admin:
            return True
        if ACL.VIEW_ONLY in self.acls:
            return False
        return acl in self.acls

    def require(self, acl: ACL) -> None:
        if not self.has_acl(acl):
            raise PermissionMissing(f"This endpoint requires the ACL: {acl}")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionMissing("This endpoint requires a system admin")

    def can_admin_group(self, group_id: int) -> bool:
        return self.is_admin or group_id in self.admin_group_ids


def principal_for(user: User) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        acls=frozenset(user.acls or ()),
        group_ids=frozenset(m.group_id for m in user.memberships),
        admin_group_ids=frozenset(m.group_id for m in user.memberships if m.admin),
    )


async def principal_from_token(session: AsyncSession, token: str) -> Principal | None:
    """The caller of an authenticated request (see :func:`principals_from_token_hashes`)."""
    (found,) = await principals_from_token_hashes(session, [hash_token(token)])
    return found


async def principals_from_token_hashes(
    session: AsyncSession, token_hashes: Sequence[str]
) -> list[Principal | None]:
    """The callers these token hashes name (None where none), in one query (users and
    memberships), plain rows rather than ORM objects, since it runs before every handler."""
    found = await versioned_principals(session, token_hashes)
    return [None if copy is None else copy.value for copy in found]


async def versioned_principals(
    session: AsyncSession, token_hashes: Sequence[str]
) -> list[Versioned[Principal] | None]:
    """:func:`principals_from_token_hashes`, each with the ``principals`` counter read in the
    same statement (for a cache: see :mod:`shared.domain.access_versions`)."""
    query = _principals_by_token(name_of(session))
    rows = (await session.execute(query, {"token_hashes": sorted(set(token_hashes))})).all()
    by_hash: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_hash[row.token_hash].append(row)
    return [
        Versioned(principal_of_rows(by_hash[h]), by_hash[h][0].principals_version)
        if h in by_hash
        else None
        for h in token_hashes
    ]


@functools.cache
def _principals_by_token(dialect: str) -> Select[Any]:
    counter = version_of(PRINCIPALS).label("principals_version")
    return (
        principal_rows(Token.token_hash, counter)
        .join(Token, Token.user_id == User.id)
        .where(in_bound(Token.token_hash, "token_hashes", dialect))
    )


def principal_rows(*extra: Any) -> Select[Any]:
    """Users with one row per membership (or one with no group), as
    :func:`principal_of_rows` reads them, plus the ``extra`` columns."""
    return select(
        User.id,
        User.username,
        User.is_admin,
        User.acls,
        GroupUser.group_id,
        GroupUser.admin,
        *extra,
    ).outerjoin(GroupUser, GroupUser.user_id == User.id)


def principal_of_rows(rows: Sequence[Any]) -> Principal:
    """A user's plain rows, one per membership (or one with no group): ``id``, ``username``,
    ``is_admin``, ``acls``, and the membership's ``group_id`` and ``admin``."""
    user = rows[0]
    memberships = [r for r in rows if r.group_id is not None]
    return principal_of(
        user.id,
        user,
        (r.group_id for r in memberships),
        (r.group_id for r in memberships if r.admin),
    )


def principal_of(
    user_id: int, user: Any, group_ids: Iterable[int], admin_group_ids: Iterable[int]
) -> Principal:
    """The principal of a user row (``username``, ``is_admin``, ``acls``) and its groups."""
    return Principal(
        user_id=user_id,
        username=user.username,
        is_admin=user.is_admin,
        acls=frozenset(user.acls or ()),
        group_ids=frozenset(group_ids),
        admin_group_ids=frozenset(admin_group_ids),
    )


def visible(
    link: Table, row_id: ColumnElement[Any] | QueryableAttribute[Any], principal: Principal
) -> ColumnElement[bool]:
    """SQL condition: the row (linked via ``link`` on ``row_id``) shares a group with the caller."""
    if principal.is_admin:
        return true()
    row_column, group_column = _link_columns(link)
    return exists().where(row_column == row_id, group_column.in_(principal.group_ids))


def visible_to_bound(
    link: Table,
    row_id: ColumnElement[Any] | QueryableAttribute[Any],
    name: str,
    dialect: str,
    *,
    admin: bool,
) -> ColumnElement[bool]:
    """:func:`visible` for a statement built once per dialect and kind of caller: the
    caller's group ids are bound at execution under ``name``; an admin reads every row."""
    if admin:
        return true()
    row_column, group_column = _link_columns(link)
    return exists().where(row_column == row_id, in_bound(group_column, name, dialect))


def _link_columns(link: Table) -> tuple[ColumnElement[object], ColumnElement[object]]:
    group_column = link.c.group_id
    (row_column,) = (c for c in link.c if c.name != "group_id")
    return row_column, group_column


def groups_not_found(group_ids: Iterable[int]) -> str:
    """SkyPortal's message, with the ids as the client listed them."""
    return f"Cannot find one or more groups with IDs: {list(group_ids)}."


async def resolve_group_ids(
    session: AsyncSession,
    principal: Principal,
    group_ids: object,
    *,
    refusal: type[DomainError] = InvalidInput,
) -> list[Group]:
    """Groups named by ``group_ids`` that the caller belongs to (all of them, or an error).

    ``None`` means every group the caller belongs to (SkyPortal's default).
    """
    if group_ids is None:
        if principal.is_admin and not principal.group_ids:
            return []
        ids: Iterable[int] = principal.group_ids
    else:
        if not isinstance(group_ids, list) or not all(is_id(g) for g in group_ids):
            raise InvalidInput("Invalid group_ids: must be a list of integer group IDs")
        ids = group_ids
    wanted = set(ids)
    if not wanted:
        return []
    groups = (await session.execute(select(Group).where(Group.id.in_(wanted)))).scalars().all()
    found = {g.id for g in groups}
    allowed = found if principal.is_admin else found & principal.group_ids
    if allowed != wanted:
        raise refusal(groups_not_found(ids if group_ids is not None else sorted(wanted)))
    return list(groups)
