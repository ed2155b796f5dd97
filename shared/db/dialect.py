"""What PostgreSQL and SQLite do differently, in one place.

Business code calls these functions with the session, connection or engine it already has and
never asks which database it talks to: the embedded default (SQLite) and the deployments
(PostgreSQL) run the same logic. Everything here is a statement builder or a one-statement
helper; none of it commits.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BindParameter,
    ColumnElement,
    Integer,
    LargeBinary,
    Select,
    String,
    Table,
    bindparam,
    case,
    cast,
    column,
    func,
    literal,
    select,
    text,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.functions import FunctionElement

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


def upsert_selected(
    dialect: str,
    table: Table,
    names: Sequence[str],
    rows: Select[Any],
    keys: Sequence[str],
    *,
    update: Sequence[str] | None = None,
    where: ColumnElement[bool] | None = None,
) -> Any:
    """INSERT the ``rows`` a query selects into the ``names`` columns; on a conflict over the
    unique ``keys``, set the ``update`` columns (default: every other named column) to the
    new values, only where ``where`` holds. ``update=()`` means do nothing on a conflict. A
    query with no WHERE gets ``WHERE true``: SQLite cannot otherwise tell its ``ON CONFLICT``
    from a join's ``ON``."""
    insert = postgresql.insert if dialect == POSTGRESQL else sqlite.insert
    statement = insert(table).from_select(list(names), rows.where(true()))
    columns = [k for k in names if k not in keys] if update is None else list(update)
    if not columns:
        return statement.on_conflict_do_nothing(index_elements=list(keys))
    return statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={k: statement.excluded[k] for k in columns},
        where=where,
    )


NOW = bindparam("now", type_=UTCDateTime())
"""The moment of a prepared statement's write, bound at execution (``{"now": …}``)."""


class RowSet:
    """Many rows as one table (``name``, with the typed ``columns``) to join in a set-based
    statement, whose rows are bound at execution: build statements on :attr:`table` once,
    then execute them with :meth:`bound` of each batch's rows. The statement's text does not
    depend on the number of rows, so it is compiled (and on PostgreSQL prepared) once.

    PostgreSQL: ``unnest`` of one bound array per column. SQLite: one JSON array of the rows,
    each an array of its values as each column's type binds them (bytes as hex), read back by
    ``json_each``."""

    def __init__(self, name: str, columns: Mapping[str, Any], dialect: str) -> None:
        self.name, self.columns, self.dialect = name, dict(columns), dialect
        self.table: Any
        if dialect == POSTGRESQL:
            arrays = [_array(f"{name}_{c}", None, kind) for c, kind in self.columns.items()]
            typed = [column(c, kind) for c, kind in self.columns.items()]
            self.table = func.unnest(*arrays).table_valued(*typed).render_derived(name=name)
            return
        self._binders = [_sqlite_binder(kind) for kind in self.columns.values()]
        source = func.json_each(bindparam(f"{name}_rows", type_=String()))
        items = source.table_valued("value").alias(f"{name}_items")
        selected = []
        for index, (c, kind) in enumerate(self.columns.items()):
            value: Any = func.json_extract(items.c.value, f"$[{index}]")
            if self._binders[index][0]:
                value = getattr(func, UNHEX)(value)
            selected.append(type_coerce(value, kind).label(c))
        # Materialized: read once into a temporary table, not once per row it is joined to.
        self.table = select(*selected).select_from(items).cte(name).prefix_with("MATERIALIZED")

    def bound(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The execution parameters that make :attr:`table` hold these rows."""
        if self.dialect == POSTGRESQL:
            return {f"{self.name}_{c}": [row[c] for row in rows] for c in self.columns}
        names = list(self.columns)
        values = [
            [_sqlite_value(row[c], *binder) for c, binder in zip(names, self._binders, strict=True)]
            for row in rows
        ]
        return {f"{self.name}_rows": json.dumps(values, allow_nan=False)}


_SQLITE = sqlite.dialect()
UNHEX = "skyhook_unhex"  # registered on every SQLite connection (shared.db.session)


def _sqlite_binder(kind: Any) -> tuple[bool, Callable[[Any], Any] | None]:
    """(binary, the type's bind processor) of a column type, on SQLite."""
    impl = kind.dialect_impl(_SQLITE)
    if isinstance(impl, LargeBinary):
        return True, None
    return False, impl.bind_processor(_SQLITE)


def _sqlite_value(value: Any, binary: bool, process: Callable[[Any], Any] | None) -> Any:
    if value is None:
        return None
    if binary:
        return bytes(value).hex()
    return process(value) if process is not None else value


def in_bound(column: Any, name: str, dialect: str) -> ColumnElement[bool]:
    """``column IN`` the list bound at execution under ``name``, for statements built once,
    whose SQL text does not depend on how many values there are (PostgreSQL: ``= ANY`` of one
    array, so the statement is prepared once; SQLite: an expanding parameter)."""
    if dialect == POSTGRESQL:
        return column == func.any(_array(name, None, column.type))
    return column.in_(bindparam(name, expanding=True))


def merged_json(column: Any, new: dict[str, Any] | Any, dialect: str) -> ColumnElement[Any]:
    """SQL for ``column`` with the top-level keys of ``new`` (a dict, or a JSON column of a
    :class:`RowSet`) set, computed by the database so that a concurrent writer of other keys
    (e.g. the dispatcher's ``inputs``) is never lost."""
    if not isinstance(new, dict):
        return _merged_json_column(column, new, dialect)
    if dialect == POSTGRESQL:
        current = func.coalesce(column, cast("{}", postgresql.JSONB))
        return current.op("||")(cast(literal(json.dumps(new, allow_nan=False)), postgresql.JSONB))
    arguments: list[Any] = [func.coalesce(column, "{}")]
    for key, value in new.items():
        arguments += [f'$."{key}"', func.json(json.dumps(value, allow_nan=False))]
    return func.json_set(*arguments, type_=JSON) if new else column


def _merged_json_column(column: Any, new: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == POSTGRESQL:
        return func.coalesce(column, cast("{}", postgresql.JSONB)).op("||")(new)
    # SQLite has no top-level merge (json_patch recurses and drops nulls): rebuild the object
    # from the old members that ``new`` does not name, then ``new``'s members.
    old_items = func.json_each(func.coalesce(column, "{}")).table_valued("key", "value", "type")
    new_keys = func.json_each(new).table_valued("key")
    new_items = func.json_each(new).table_valued("key", "value", "type")
    kept = select(old_items.c.key, old_items.c.value, old_items.c.type).where(
        old_items.c.key.not_in(select(new_keys.c.key))
    )
    items = union_all(kept, select(new_items.c.key, new_items.c.value, new_items.c.type))
    merged = items.subquery("merged_items")
    kind = merged.c.type
    value = case(  # json_each gives true/false/null as 1/0/NULL and members as text
        (kind == "true", func.json("true")),
        (kind == "false", func.json("false")),
        (kind == "null", func.json("null")),
        (kind.in_(("object", "array")), func.json(merged.c.value)),
        else_=merged.c.value,
    )
    return select(func.json_group_object(merged.c.key, value)).scalar_subquery()


class json_list(FunctionElement[Any]):
    """An aggregate: the values of its argument over the group's rows, as a JSON array
    (PostgreSQL ``json_agg``, SQLite ``json_group_array``). Over no rows PostgreSQL gives
    NULL and SQLite ``[]``: read both as empty."""

    type = JSON()
    name = "json_list"
    inherit_cache = True


@compiles(json_list, "postgresql")
def _json_list_postgresql(element: json_list, compiler: Any, **kw: Any) -> str:
    return f"json_agg({compiler.process(element.clauses, **kw)})"


@compiles(json_list, "sqlite")
def _json_list_sqlite(element: json_list, compiler: Any, **kw: Any) -> str:
    return f"json_group_array({compiler.process(element.clauses, **kw)})"


def skip_locked(query: Select[Any], dialect: str) -> Select[Any]:
    """Rows another transaction holds are skipped (PostgreSQL). SQLite has one writer at a
    time, so there is nothing to skip there."""
    return query.with_for_update(skip_locked=True) if dialect == POSTGRESQL else query


def outerjoin_each(
    dialect: str,
    query: Select[Any],
    left: Any,
    right: Any,
    on: ColumnElement[bool],
    columns: Sequence[Any],
    name: str,
) -> Select[Any]:
    """``query`` (which reads ``left``) with the ``columns`` of each of its rows' matches
    ``on`` the condition in ``right``, or NULLs for a row with none.

    PostgreSQL: a LATERAL subquery, so each row's matches are looked up through their index
    whatever the planner guesses of the tables' sizes (as a plain join, a small table's
    statistics let it read every row of ``right`` the condition allows, for any batch).
    SQLite has no LATERAL: a plain LEFT JOIN, which its planner runs as that loop anyway."""
    if dialect == POSTGRESQL:
        matches = select(*columns).select_from(right).where(on).lateral(name)
        return query.add_columns(*matches.c).outerjoin_from(left, matches, true())
    return query.add_columns(*columns).outerjoin_from(left, right, on)


def row_check(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """``condition`` as a check on the rows a statement finds by other means (their ids),
    never as a way to find them: ``(condition) IS TRUE``, which no index matches.

    Statements over a batch of ids also check each row's status. Left bare, that check lets
    the planner scan the status index instead of looking the ids up, whenever its statistics
    (the last ANALYZE) say the status is rare: after 100,000 analyses queued that it believed
    were a handful, claiming 64 of them read all 100,000 (20 ms instead of 0.1 ms), on every
    claim until the next ANALYZE."""
    return condition.is_(true())


def in_taken(column: Any, taken: Select[Any], dialect: str) -> ColumnElement[bool]:
    """``column IN`` the rows ``taken`` selects, locked as :func:`skip_locked` locks them,
    with the subquery run once.

    PostgreSQL: ``= ANY(ARRAY(subquery))``, which the planner runs once, first. As a plain
    ``IN (subquery)`` it may, expecting a handful of rows, join the subquery in a nested loop
    and run it again (locks included) for every row of the outer scan: quadratic in the rows
    waiting (an outbox relay pass over 200 pending rows read 51,000 buffers in 62 ms)."""
    once = skip_locked(taken, dialect).scalar_subquery()
    if dialect == POSTGRESQL:
        return column == func.any(func.array(once))
    return column.in_(once)


# A write that changes nothing, so SQLite takes its write lock now.
_SQLITE_WRITE_LOCK = text("UPDATE objs SET id = id WHERE 0")


async def take_write_lock(session: AsyncSession | AsyncConnection, key: str) -> None:
    """Serialize transactions that use the same ``key`` until this transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite has a single writer: a no-op write
    as the first statement of the transaction takes the write lock at once, so nothing read
    afterwards can go stale before this transaction commits.
    """
    if is_postgresql(session):
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))
    else:
        await session.execute(_SQLITE_WRITE_LOCK)


async def lock_rows_first(session: AsyncSession, key: str) -> None:
    """Before a ``SELECT … FOR UPDATE``: SQLite ignores row locks, so take its write lock
    (keyed as :func:`take_write_lock`); PostgreSQL's row lock does the work by itself."""
    if not is_postgresql(session):
        await take_write_lock(session, key)


MATCHED_IDS: BindParameter[Any] = bindparam("matched_ids", expanding=True)


@dataclass(frozen=True)
class Together:
    """A write over a set of rows, built once (see :func:`together`)."""

    guard: Any
    always: tuple[Any, ...]
    then: tuple[Any, ...]
    statement: Any | None  # PostgreSQL: all of it as one statement


def together(
    dialect: str,
    guard: Any,
    *,
    always: Sequence[Any] = (),
    then: Sequence[Callable[[Any], Any]] = (),
) -> Together:
    """One atomic write over a set of rows: ``guard``, a conditional UPDATE … RETURNING (its
    first column an id, typically joined to a :class:`RowSet`); the ``always`` statements,
    whatever it matched; and the statements each of ``then`` builds from the matched ids
    (something ``column.in_()`` takes), which therefore write only for the rows it matched.
    Build it once and run it with :func:`write_together`.

    PostgreSQL: a single autocommit statement of data-modifying CTEs (one round trip instead
    of BEGIN, several statements and COMMIT). SQLite: one transaction."""
    if dialect == POSTGRESQL:
        guarded = guard.cte("guarded")
        statement = select(guarded)
        for index, extra in enumerate(always):
            statement = statement.add_cte(extra.cte(f"always_{index}"))
        matched_ids = select(guarded.c[guarded.c.keys()[0]])
        for index, follow in enumerate(then):
            statement = statement.add_cte(follow(matched_ids).cte(f"then_{index}"))
        return Together(guard, (), (), statement)
    return Together(guard, tuple(always), tuple(follow(MATCHED_IDS) for follow in then), None)


async def write_together(
    engine: AsyncEngine, prepared: Together, parameters: Mapping[str, Any]
) -> list[Any]:
    """Run a :func:`together` write with these execution parameters (its row sets' rows,
    ``now``, …). Returns the guard's rows (empty when it matched none)."""
    if prepared.statement is not None:
        return await _execute_retrying_deadlocks(engine, prepared.statement, parameters)
    async with engine.begin() as connection:
        return await write_together_in(connection, prepared, parameters)


async def write_together_in(
    executor: AsyncSession | AsyncConnection, prepared: Together, parameters: Mapping[str, Any]
) -> list[Any]:
    """:func:`write_together` in the caller's transaction (one round trip on PostgreSQL)."""
    if prepared.statement is not None:
        return list(await executor.execute(prepared.statement, dict(parameters)))
    matched = list(await executor.execute(prepared.guard, dict(parameters)))
    for statement in prepared.always:
        await executor.execute(statement, dict(parameters))
    if matched:
        with_ids = {**parameters, MATCHED_IDS.key: [row[0] for row in matched]}
        for statement in prepared.then:
            await executor.execute(statement, with_ids)
    return matched


ReadOfWritten = Callable[[Any, ColumnElement[bool]], Select[Any]]
"""Builds a read of the rows a write touched: given the write's returned columns (by their
names) and the condition that picks those rows out of the written table."""


@dataclass(frozen=True)
class WrittenAndRead:
    """A write and a read of the rows it touched, built once (see :func:`written_and_read`)."""

    write: Any
    read: Any  # SQLite: bound with MATCHED_IDS
    statement: Any | None  # PostgreSQL: both as one statement


def written_and_read(dialect: str, write: Any, read: ReadOfWritten) -> WrittenAndRead:
    """``write``, an UPDATE … RETURNING whose first column is the written table's ``id``, and
    ``read``'s query over the rows it touched, for :func:`write_then_read`.

    PostgreSQL: one statement, the write as a CTE joined to the read (the read sees the
    table as it was before the write, so what the write changed comes from its returned
    columns). SQLite: the write, then the read by the returned ids, which sees the change."""
    table = write.table
    if dialect == POSTGRESQL:
        written = write.cte("written")
        statement = read(written.c, table.c.id == written.c.id)
        return WrittenAndRead(write, None, statement)
    return WrittenAndRead(write, read(table.c, table.c.id.in_(MATCHED_IDS)), None)


async def write_then_read(
    executor: AsyncSession | AsyncConnection,
    prepared: WrittenAndRead,
    parameters: Mapping[str, Any],
) -> list[Any]:
    """Run a :func:`written_and_read` pair; the read's rows (none when the write matched none).
    On SQLite the caller's transaction holds the two together."""
    if prepared.statement is not None:
        return list(await executor.execute(prepared.statement, dict(parameters)))
    written = [row[0] for row in await executor.execute(prepared.write, dict(parameters))]
    if not written:
        return []
    return list(await executor.execute(prepared.read, {**parameters, MATCHED_IDS.key: written}))


@dataclass(frozen=True)
class AllAtOnce:
    """Independent writes run as one (see :func:`all_at_once`)."""

    statements: tuple[Any, ...]
    statement: Any | None  # PostgreSQL: all of them as one statement


def all_at_once(dialect: str, statements: Sequence[Any]) -> AllAtOnce:
    """Writes of which none reads another's rows (a foreign key may name a row a sibling
    inserts: it is checked at the end of the statement), to run together in the caller's
    transaction with :func:`write_all`. PostgreSQL: one statement of data-modifying CTEs,
    so one round trip; SQLite: one after another. Build it once; the statements' bound
    parameter names must differ (a row set whose rows are none writes nothing)."""
    if dialect != POSTGRESQL:
        return AllAtOnce(tuple(statements), None)
    combined = select(literal(1))
    for index, write in enumerate(statements):
        combined = combined.add_cte(write.cte(f"write_{index}"))
    return AllAtOnce(tuple(statements), combined)


async def write_all(
    executor: AsyncSession | AsyncConnection, writes: AllAtOnce, parameters: Mapping[str, Any]
) -> None:
    if writes.statement is not None:
        await executor.execute(writes.statement, dict(parameters))
        return
    for statement in writes.statements:
        await executor.execute(statement, dict(parameters))


def _array(name: str, values: list[Any] | None, item_type: Any) -> Any:
    kind = postgresql.ARRAY(item_type)
    return cast(bindparam(name, values, type_=kind), kind)


DEADLOCK_RETRIES = 5
_DEADLOCK_DETECTED = "40P01"


async def _execute_retrying_deadlocks(
    engine: AsyncEngine, statement: Any, parameters: Mapping[str, Any]
) -> list[Any]:
    """One autocommit statement, run again when PostgreSQL aborted it to break a deadlock:
    set-based writers (a batch of callbacks, a batch of attempt ends) may lock the same rows
    in different orders. An aborted statement wrote nothing, so running it again is the
    same write."""
    for attempt in range(DEADLOCK_RETRIES + 1):
        try:
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                return list(await connection.execute(statement, dict(parameters)))
        except DBAPIError as exc:
            deadlocked = getattr(exc.orig, "sqlstate", None) == _DEADLOCK_DETECTED
            if not deadlocked or attempt == DEADLOCK_RETRIES:
                raise
    raise AssertionError("unreachable")


def seconds_since(column: Any, now: datetime, dialect: str) -> ColumnElement[float]:
    """SQL for the seconds from ``column`` (a timestamp) to ``now``, never negative."""
    elapsed: ColumnElement[Any]
    if dialect == POSTGRESQL:
        elapsed = func.extract("epoch", literal(now, UTCDateTime()) - column)
    else:
        naive = now.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        elapsed = (func.julianday(naive) - func.julianday(column)) * 86400.0
    return func.max(elapsed, 0.0) if dialect != POSTGRESQL else func.greatest(elapsed, 0.0)


async def lock_reserve_and_read(
    session: AsyncSession,
    keys: Sequence[str],
    table: Table,
    count: int,
    read: Select[Any],
    parameters: Mapping[str, Any],
) -> tuple[list[int], list[Any]]:
    """:func:`take_write_lock` for every key, ``count`` ids for rows of ``table`` this
    transaction will insert (so that the rows and whatever names them are written in one
    statement), and ``read``'s rows (its first column never NULL). The keys are taken in
    sorted order, so two transactions locking overlapping sets cannot deadlock.

    PostgreSQL: one round trip. The ids are drawn from the table's id sequence (an id not
    used leaves a gap, as a rolled-back insert does). The read's snapshot may predate the
    locks (a statement's snapshot is taken when it starts, and the locks may have to be
    waited for), so what the locks protect must be checked again by a later statement of the
    transaction. SQLite: the ids after the largest the table has had, and the read, both
    under the write lock, which keeps any other writer out until this one commits."""
    if is_postgresql(session):
        locked = {"lock_keys": sorted(set(keys)), "reserved_count": count, **parameters}
        rows = list(await session.execute(_locked_read(table.name, read), locked))
        return list(rows[0].reserved_ids), [row for row in rows if row[1] is not None]
    await session.execute(_SQLITE_WRITE_LOCK)
    last = (await session.execute(_sqlite_last_id(table.name))).scalar_one()
    found = list(await session.execute(read, dict(parameters)))
    return list(range(last + 1, last + 1 + count)), found


@functools.cache
def _locked_read(table_name: str, read: Select[Any]) -> Any:
    """The locks and the ids, one row, left-joined to ``read``'s rows (built once per read)."""
    locks = (
        text(
            "SELECT (SELECT count(pg_advisory_xact_lock(hashtext(k))) "
            "FROM (SELECT unnest(CAST(:lock_keys AS text[])) AS k ORDER BY 1) AS ordered) "
            "AS locked, "
            f"ARRAY(SELECT nextval(pg_get_serial_sequence('{table_name}', 'id')) "
            "FROM generate_series(1, :reserved_count)) AS reserved_ids"
        )
        .columns(column("locked", Integer), column("reserved_ids", postgresql.ARRAY(Integer)))
        .subquery("locks")
    )
    rows = read.subquery("read")
    return select(locks.c.reserved_ids, *rows.c).select_from(locks.outerjoin(rows, true()))


@functools.cache
def _sqlite_last_id(table_name: str) -> Any:
    # AUTOINCREMENT tables never reuse an id: the largest ever given is in sqlite_sequence.
    return text(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence "
        f"WHERE name = '{table_name}'), 0), coalesce((SELECT max(id) FROM {table_name}), 0))"
    )


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
