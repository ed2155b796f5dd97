"""What PostgreSQL and SQLite do differently, in one place.

Business code calls these functions with the session, connection or engine it already has and
never asks which database it talks to: the embedded default (SQLite) and the deployments
(PostgreSQL) run the same logic. Everything here is a statement builder or a one-statement
helper; none of it commits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Select,
    Table,
    cast,
    func,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase

from shared.db.types import UTCDateTime

POSTGRESQL = "postgresql"

Bound = AsyncSession | AsyncConnection | AsyncEngine


def name_of(bound: Bound) -> str:
    """The dialect's name (``postgresql`` or ``sqlite``) of whatever the caller holds."""
    if isinstance(bound, AsyncSession):
        return bound.get_bind().dialect.name
    return bound.dialect.name


def is_postgresql(bound: Bound) -> bool:
    return name_of(bound) == POSTGRESQL


def upsert(
    dialect: str,
    target: Table | type[DeclarativeBase],
    values: Mapping[str, Any],
    keys: Sequence[str],
    *,
    update: Sequence[str] | None = None,
    where: ColumnElement[bool] | None = None,
) -> Any:
    """INSERT ``values``; on a conflict over the unique ``keys``, set the ``update`` columns
    (default: every other column of ``values``) to the new values, only where ``where`` holds.
    ``update=()`` means do nothing on a conflict."""
    insert = postgresql.insert if dialect == POSTGRESQL else sqlite.insert
    statement = insert(target).values(dict(values))
    columns = [k for k in values if k not in keys] if update is None else list(update)
    if not columns:
        return statement.on_conflict_do_nothing(index_elements=list(keys))
    return statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={k: statement.excluded[k] for k in columns},
        where=where,
    )


def merged_json(column: Any, new: dict[str, Any], dialect: str) -> ColumnElement[Any]:
    """SQL for ``column`` with ``new``'s top-level keys set, computed by the database so that
    a concurrent writer of other keys (e.g. the dispatcher's ``inputs``) is never lost."""
    if dialect == POSTGRESQL:
        current = func.coalesce(column, cast("{}", postgresql.JSONB))
        return current.op("||")(cast(literal(json.dumps(new, allow_nan=False)), postgresql.JSONB))
    arguments: list[Any] = [func.coalesce(column, "{}")]
    for key, value in new.items():
        arguments += [f'$."{key}"', func.json(json.dumps(value, allow_nan=False))]
    return func.json_set(*arguments, type_=JSON) if new else column


def skip_locked(query: Select[Any], dialect: str) -> Select[Any]:
    """Rows another transaction holds are skipped (PostgreSQL). SQLite has one writer at a
    time, so there is nothing to skip there."""
    return query.with_for_update(skip_locked=True) if dialect == POSTGRESQL else query


async def take_write_lock(session: AsyncSession | AsyncConnection, key: str) -> None:
    """Serialize transactions that use the same ``key`` until this transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite has a single writer: a no-op write
    as the first statement of the transaction takes the write lock at once, so nothing read
    afterwards can go stale before this transaction commits.
    """
    if is_postgresql(session):
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))
    else:
        await session.execute(text("UPDATE objs SET id = id WHERE 0"))


async def lock_rows_first(session: AsyncSession, key: str) -> None:
    """Before a ``SELECT … FOR UPDATE``: SQLite ignores row locks, so take its write lock
    (keyed as :func:`take_write_lock`); PostgreSQL's row lock does the work by itself."""
    if not is_postgresql(session):
        await take_write_lock(session, key)


async def write_together(
    engine: AsyncEngine,
    guard: Any,
    *,
    always: Sequence[Any] = (),
    if_guarded: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]] = (),
) -> list[Any]:
    """One atomic write: ``guard`` (a conditional UPDATE … RETURNING), the ``always`` statements
    whatever it matched, and the ``if_guarded`` rows inserted only when it matched a row.
    Returns the guard's rows (empty when it matched none).

    PostgreSQL: a single autocommit statement of data-modifying CTEs (one round trip instead of
    BEGIN, several statements and COMMIT). SQLite: the same writes in one transaction.
    """
    if is_postgresql(engine):
        return await _write_together_in_one_statement(engine, guard, always, if_guarded)
    async with engine.begin() as connection:
        rows = list(await connection.execute(guard))
        for statement in always:
            await connection.execute(statement)
        if rows:
            for table, values in if_guarded:
                if values:
                    await connection.execute(table.insert(), [dict(v) for v in values])
    return rows


async def _write_together_in_one_statement(
    engine: AsyncEngine,
    guard: Any,
    always: Sequence[Any],
    if_guarded: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]],
) -> list[Any]:
    guarded = guard.cte("guarded")
    statement = select(guarded)
    for index, extra in enumerate(always):
        statement = statement.add_cte(extra.cte(f"always_{index}"))
    for index, (table, values) in enumerate(if_guarded):
        if not values:
            continue
        columns = list(values[0])
        selects = [
            select(*(literal(row[c], table.c[c].type) for c in columns))
            .select_from(guarded)
            .limit(1)
            for row in values
        ]
        source = selects[0] if len(selects) == 1 else union_all(*selects)
        statement = statement.add_cte(
            table.insert().from_select(columns, source).cte(f"if_{index}")
        )
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        return list(await connection.execute(statement))


def seconds_since(column: Any, now: datetime, dialect: str) -> ColumnElement[float]:
    """SQL for the seconds from ``column`` (a timestamp) to ``now``, never negative."""
    if dialect == POSTGRESQL:
        elapsed = func.extract("epoch", literal(now, UTCDateTime()) - column)
    else:
        naive = now.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        elapsed = (func.julianday(naive) - func.julianday(column)) * 86400.0
    return func.max(elapsed, 0.0) if dialect != POSTGRESQL else func.greatest(elapsed, 0.0)


async def take_write_locks(session: AsyncSession | AsyncConnection, keys: Sequence[str]) -> None:
    """:func:`take_write_lock` for every key, in one statement. Keys are taken in sorted
    order, so two transactions locking overlapping sets cannot deadlock."""
    if not keys:
        return
    if is_postgresql(session):
        ordered = sorted(set(keys))
        statement = text(
            "SELECT count(pg_advisory_xact_lock(hashtext(k))) "
            "FROM (SELECT unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS ordered"
        )
        await session.execute(statement, {"keys": ordered})
    else:
        await session.execute(text("UPDATE objs SET id = id WHERE 0"))
