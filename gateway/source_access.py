"""Helpers shared by the source and source-data handlers: field checks and visibility.

The bodies they check come from ``http_edge.web.json_body``, which already refuses NUL characters
anywhere in them (PostgreSQL text and JSONB cannot hold one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Table, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from http_edge.web import Page, bad_request, finite, not_found
from shared.db.models import Group, Instrument, Obj, obj_groups
from shared.domain.access import Principal, groups_not_found, resolve_group_ids, visible
from shared.domain.ids import MAX_ID

OBJ_ID_PATTERN = re.compile(r"[0-9A-Za-z_-]+")
MAX_NAME = 255


def source_not_found(obj_id: object) -> Exception:
    return not_found(f"Source {obj_id} not found")


def required(body: dict[str, Any], name: str) -> Any:
    if name not in body or body[name] is None:
        raise bad_request(f"Missing required field: {name}")
    return body[name]


def text_field(body: dict[str, Any], name: str, *, max_length: int = MAX_NAME) -> str:
    """A non-empty string of at most ``max_length`` characters."""
    value = required(body, name)
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"Invalid {name}: must be a non-empty string")
    if len(value) > max_length:
        raise bad_request(f"Invalid {name}: must be at most {max_length} characters")
    return value


def optional_text(body: dict[str, Any], name: str, *, max_length: int = MAX_NAME) -> str | None:
    if body.get(name) is None:
        return None
    return text_field(body, name, max_length=max_length)


def number_field(body: dict[str, Any], name: str) -> float:
    # finite() returns None only when allow_none is set.
    return cast(float, finite(required(body, name), name))


def optional_number(body: dict[str, Any], name: str) -> float | None:
    return finite(body.get(name), name, allow_none=True)


def bool_field(body: dict[str, Any], name: str, default: bool) -> bool:
    """A JSON boolean; absent or null means ``default``. (A request model's plain ``bool``
    field refuses with "must be true or false", the wording of other fields.)"""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"Invalid {name}: must be a boolean")
    return value


def int_id(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise bad_request(f"Invalid {name}: {value!r}")
    return value


async def groups_named(
    session: AsyncSession, principal: Principal, group_ids: object
) -> list[Group]:
    """``resolve_group_ids``, refusing ids no row can have before they reach the database."""
    if (
        isinstance(group_ids, list)
        and all(isinstance(g, int) and not isinstance(g, bool) for g in group_ids)
        and any(not 0 < g <= MAX_ID for g in group_ids)
    ):
        raise bad_request(groups_not_found(group_ids))
    return await resolve_group_ids(session, principal, group_ids)


def object_field(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = required(body, name)
    if not isinstance(value, dict):
        raise bad_request(f"Invalid {name}: must be a JSON object")
    return value


def check_obj_id(value: object) -> str:
    """SkyPortal-style source names: letters, digits, '_' and '-' (at most 255)."""
    if not isinstance(value, str) or not OBJ_ID_PATTERN.fullmatch(value):
        raise bad_request("Invalid id: must be a non-empty string of letters, digits, '_' and '-'")
    if len(value) > MAX_NAME:
        raise bad_request(f"Invalid id: must be at most {MAX_NAME} characters")
    return value


async def visible_obj(session: AsyncSession, principal: Principal, obj_id: object) -> Obj:
    """The source if the caller may see it; otherwise 404 whether or not it exists."""
    if not isinstance(obj_id, str) or not obj_id:
        raise bad_request(f"Invalid obj_id: {obj_id!r}")
    if len(obj_id) > MAX_NAME or "\x00" in obj_id:  # cannot be a stored id
        raise source_not_found(obj_id)
    found = await session.scalar(
        select(Obj).where(Obj.id == obj_id, visible(obj_groups, Obj.id, principal))
    )
    if found is None:
        raise source_not_found(obj_id)
    return found


async def visible_page(
    session: AsyncSession,
    principal: Principal,
    obj_id: str,
    model: Any,
    link: Table,
    order_by: Sequence[Any],
    page: Page,
) -> tuple[int, list[Any]]:
    """(how many rows of ``model`` on the source the caller may see, this page of them).

    404 when the source itself is not visible.
    """
    await visible_obj(session, principal, obj_id)
    condition = and_(model.obj_id == obj_id, visible(link, model.id, principal))
    total = await session.scalar(select(func.count(model.id)).where(condition))
    rows = await session.scalars(
        select(model).where(condition).order_by(*order_by).offset(page.offset).limit(page.size)
    )
    return int(total or 0), list(rows)


async def instrument_or_400(session: AsyncSession, instrument_id: object) -> Instrument:
    number = int_id(instrument_id, "instrument_id")
    instrument = await session.get(Instrument, number)
    if instrument is None:
        raise bad_request(f"Invalid instrument ID: {number}")
    return instrument


async def data_groups(
    session: AsyncSession, principal: Principal, group_ids: object, sources: Iterable[Obj]
) -> list[Group]:
    """Groups new data rows are shared with: the named groups (the caller must belong to
    them), by default all the caller's groups; a system admin outside every group defaults to
    the groups of the sources the rows belong to."""
    if isinstance(group_ids, list) and not group_ids:
        raise bad_request("Invalid group_ids: must name at least one group")
    groups = await groups_named(session, principal, group_ids)
    if not groups:
        groups = list({g.id: g for obj in sources for g in obj.groups}.values())
    if not groups:
        raise bad_request("Cannot share this data: no group to share it with")
    return groups


async def add_data_row(
    session: AsyncSession,
    principal: Principal,
    obj: Obj,
    group_ids: object,
    model: Any,
    **fields: Any,
) -> int:
    """Insert one data row of a source, owned by the caller and shared with ``group_ids``
    (see ``data_groups``); returns its id."""
    groups = await data_groups(session, principal, group_ids, [obj])
    row = model(**fields, obj_id=obj.id, owner_id=principal.user_id, groups=groups)
    session.add(row)
    await session.flush()
    return int(row.id)
