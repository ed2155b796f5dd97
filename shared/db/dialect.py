"""What PostgreSQL and SQLite do differently, in one place.

Business code calls these functions with the session, connection or engine it already has and
never asks which database it talks to: the embedded default (SQLite) and the deployments
(PostgreSQL) run the same logic. Everything here is a statement builder or a one-statement
helper; none of it commits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Select,
    Table,
    bindparam,
    cast,
    column,
    exists,
    func,
    literal,
    select,
    text,
    true,
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


@dataclass(frozen=True)
class GuardedRows:
    """Rows to insert only if a :func:`write_together` guard matched.

    ``guard_id``: the column that receives the id the guard returned (e.g. an analysis id).
    ``keep_existing``: the unique columns on which a conflicting row is kept as it is (and, on
    PostgreSQL, locked until commit by a no-op update of another of its columns)."""

    table: Table
    rows: Sequence[Mapping[str, Any]]
    guard_id: str | None = None
    keep_existing: Sequence[str] = ()


async def write_together(
    engine: AsyncEngine,
    guard: Any,
    *,
    always: Sequence[Any] = (),
    if_guarded: Sequence[GuardedRows] = (),
) -> list[Any]:
    """One atomic write: ``guard`` (a conditional UPDATE … RETURNING, its first column an id),
    the ``always`` statements whatever it matched, and the ``if_guarded`` rows inserted only
    when it matched a row. Returns the guard's rows (empty when it matched none).

    PostgreSQL: a single autocommit statement of data-modifying CTEs (one round trip instead of
    BEGIN, several statements and COMMIT); the rows travel as bound arrays, so the statement's
    text depends only on which tables are written. SQLite: the same writes in one transaction.
    """
    if is_postgresql(engine):
        return await _write_together_in_one_statement(engine, guard, always, if_guarded)
    async with engine.begin() as connection:
        matched = list(await connection.execute(guard))
        for statement in always:
            await connection.execute(statement)
        if matched:
            for rows in if_guarded:
                await _insert_guarded(connection, rows, matched[0][0])
    return matched


async def _insert_guarded(connection: AsyncConnection, rows: GuardedRows, guard_id: Any) -> None:
    if not rows.rows:
        return
    values = [{**row, **({rows.guard_id: guard_id} if rows.guard_id else {})} for row in rows.rows]
    await connection.execute(_insert(rows, "sqlite"), values)


def _array(name: str, values: list[Any], item_type: Any) -> Any:
    kind = postgresql.ARRAY(item_type)
    return cast(bindparam(name, values, type_=kind), kind)


def _unnested(rows: GuardedRows, index: int) -> Any:
    """The rows as ``unnest(array, array, …)`` of one bound array per column."""
    columns = [c for c in rows.rows[0] if c != rows.guard_id]
    arrays = [
        _array(f"guarded_{index}_{c}", [row[c] for row in rows.rows], rows.table.c[c].type)
        for c in columns
    ]
    typed = [column(c, rows.table.c[c].type) for c in columns]
    return func.unnest(*arrays).table_valued(*typed).render_derived(name=f"rows_{index}")


def _guarded_insert(guarded: Any, rows: GuardedRows, index: int) -> Any:
    source = _unnested(rows, index)
    names = [c.name for c in source.c]
    picked = [source.c[n] for n in names]
    if rows.guard_id:
        names = [rows.guard_id, *names]
        query = select(guarded.c[guarded.c.keys()[0]], *picked).select_from(
            guarded.join(source, true())
        )
    else:
        query = select(*picked).where(exists(select(guarded)))
    return _insert(rows, POSTGRESQL).from_select(names, query).cte(f"guarded_{index}")


def _insert(rows: GuardedRows, dialect: str) -> Any:
    if rows.keep_existing:
        return insert_keeping(dialect, rows.table, rows.keep_existing)
    return rows.table.insert()


async def _write_together_in_one_statement(
    engine: AsyncEngine,
    guard: Any,
    always: Sequence[Any],
    if_guarded: Sequence[GuardedRows],
) -> list[Any]:
    guarded = guard.cte("guarded")
    statement = select(guarded)
    for index, extra in enumerate(always):
        statement = statement.add_cte(extra.cte(f"always_{index}"))
    for index, rows in enumerate(if_guarded):
        if rows.rows:
            statement = statement.add_cte(_guarded_insert(guarded, rows, index))
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


def insert_keeping(dialect: str, table: Table, keys: Sequence[str]) -> Any:
    """INSERT that keeps a row already there on a conflict over the unique ``keys``.

    PostgreSQL: ``ON CONFLICT DO UPDATE`` that changes nothing, so the existing row is locked
    until this transaction commits (a concurrent delete of it waits or skips it); SQLite:
    ``ON CONFLICT DO NOTHING`` (one writer at a time: nothing to lock)."""
    if dialect == POSTGRESQL:
        statement = postgresql.insert(table)
        lock = next(c.name for c in table.c if c.name not in keys)
        return statement.on_conflict_do_update(
            index_elements=list(keys), set_={lock: statement.excluded[lock]}
        )
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys))
