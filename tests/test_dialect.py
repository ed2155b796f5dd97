"""The dialect layer's row sets: many rows as one table in a set-based statement. Every kind of
value comes back as it went in, on PostgreSQL and on SQLite, and one statement, built once,
serves batches of every size: the rows are bound at execution, so a hot statement is built,
compiled (and on PostgreSQL prepared) once rather than once per batch."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
)

from shared.db.dialect import (
    RowSet,
    all_at_once,
    json_list,
    lock_reserve_and_read,
    write_all,
    write_then_read,
    written_and_read,
)
from shared.db.types import UTCDateTime
from shared.runtime.resources import Resources
from tests.support.statements import statements_on

COLUMNS: dict[str, Any] = {
    "number": Integer(),
    "text": String(64),
    "moment": UTCDateTime(),
    "document": JSON(),
    "flag": Boolean(),
    "ratio": Float(),
    "data": LargeBinary(),
}
NOW = datetime(2026, 12, 5, 3, 4, 5, 678901, tzinfo=UTC)
ROWS: list[dict[str, Any]] = [
    {
        "number": 1,
        "text": 'quote " and comma, and ünïcode',
        "moment": NOW,
        "document": {"nested": [1, 2.5, None, "x"], "flag": True},
        "flag": True,
        "ratio": 0.1,
        "data": bytes(range(256)),
    },
    {
        "number": 2,
        "text": None,
        "moment": NOW + timedelta(days=1),
        "document": {},
        "flag": False,
        "ratio": -1e300,
        "data": b"",
    },
    {k: None for k in COLUMNS} | {"number": 3},
]


@asynccontextmanager
async def _created(resources: Resources, table: Table) -> AsyncIterator[None]:
    """The table, made for the block and dropped after it."""
    async with resources.engine.begin() as connection:
        await connection.run_sync(table.metadata.create_all)
    try:
        yield
    finally:
        async with resources.engine.begin() as connection:
            await connection.run_sync(table.metadata.drop_all)


def _scratch_table(name: str, *columns: Column[Any], **options: Any) -> Table:
    """A table of its own for one test (a unique name: runs can share a database)."""
    return Table(f"{name}_{uuid.uuid4().hex[:8]}", MetaData(), *columns, **options)


@pytest.mark.usefixtures("backend")
async def test_a_row_set_gives_back_every_kind_of_value_as_it_went_in(
    resources: Resources,
) -> None:
    given = RowSet("given", COLUMNS, resources.engine.dialect.name)
    statement = select(given.table).order_by(given.table.c.number)
    async with resources.engine.connect() as connection:
        found = (await connection.execute(statement, given.bound(ROWS))).all()

    assert [dict(row._mapping) for row in found] == ROWS


@pytest.mark.usefixtures("backend")
async def test_one_row_set_statement_serves_batches_of_every_size(resources: Resources) -> None:
    given = RowSet("given", COLUMNS, resources.engine.dialect.name)
    statement = select(given.table.c.number, given.table.c.data).order_by(given.table.c.number)
    async with resources.engine.connect() as connection:
        for count in (3, 1, 0, 2):
            found = (await connection.execute(statement, given.bound(ROWS[:count]))).all()
            assert [tuple(row) for row in found] == [(r["number"], r["data"]) for r in ROWS[:count]]


@pytest.mark.usefixtures("backend")
async def test_independent_writes_run_together_in_the_callers_transaction(
    resources: Resources,
) -> None:
    """``all_at_once``: one statement on PostgreSQL (one round trip), one after another on
    SQLite; either way every write lands, a row set with no rows writes nothing, and a
    rollback takes all of them back."""
    dialect = resources.engine.dialect.name
    notes = _scratch_table(
        "notes",
        Column("number", Integer),
        Column("label", String),
    )
    given = RowSet("given", {"number": Integer()}, dialect)
    labelled = bindparam("label", type_=String())
    write = all_at_once(
        dialect,
        [
            insert(notes).from_select(["number", "label"], select(given.table.c.number, labelled)),
            notes.update().where(notes.c.number == -1).values(label=labelled),
        ],
    )
    async with _created(resources, notes):
        with statements_on(resources.engine, transaction_control=False) as seen:
            async with resources.engine.begin() as connection:
                await write_all(connection, write, {**given.bound([{"number": 1}]), "label": "a"})
        assert len(seen) == (1 if dialect == "postgresql" else 2)
        with pytest.raises(RuntimeError):
            async with resources.engine.begin() as connection:
                parameters = {**given.bound([{"number": 2}, {"number": 3}]), "label": "b"}
                await write_all(connection, write, parameters)
                raise RuntimeError("the rest of the transaction failed")
        async with resources.engine.begin() as connection:
            await write_all(connection, write, {**given.bound([]), "label": "c"})
            found = (await connection.execute(select(notes.c.number, notes.c.label))).all()
        assert [tuple(row) for row in found] == [(1, "a")]


@pytest.mark.usefixtures("backend")
async def test_reserved_ids_are_new_ids_taken_with_the_locks_and_a_read(
    resources: Resources,
) -> None:
    """``lock_reserve_and_read``: the locks, the ids and the read in one statement on
    PostgreSQL; the read's rows come back (none when it finds none); the ids are ones the
    table never gave, rows inserted under them keep the table's ids unique, and an id deleted
    is never given again (the tables' ids only grow, on SQLite too)."""
    dialect = resources.engine.dialect.name
    items = _scratch_table(
        "items",
        Column("id", Integer, primary_key=True),
        Column("label", String),
        sqlite_autoincrement=True,
    )
    labelled = select(items.c.id, items.c.label).where(items.c.label == bindparam("wanted"))

    async def reserve(count: int, wanted: str = "none") -> tuple[list[int], list[Any]]:
        async with resources.sessions.begin() as session:
            keys = ["a-key", "b-key"]
            return await lock_reserve_and_read(
                session, keys, items, count, labelled, {"wanted": wanted}
            )

    async with _created(resources, items):
        with statements_on(resources.engine, transaction_control=False) as seen:
            first, found = await reserve(3)
        assert found == []
        assert len(seen) == (1 if dialect == "postgresql" else 3)
        assert first == sorted(set(first)) and len(first) == 3
        async with resources.engine.begin() as connection:
            await connection.execute(insert(items), [{"id": i, "label": "reserved"} for i in first])
            await connection.execute(insert(items), [{"label": "by default"}])
            ids = [row.id for row in await connection.execute(select(items.c.id))]
        assert len(ids) == len(set(ids)) == 4 and max(ids) > max(first)
        async with resources.engine.begin() as connection:
            await connection.execute(items.delete().where(items.c.id == max(ids)))
        more, found = await reserve(2, "reserved")
        assert min(more) > max(ids)
        assert sorted((row.id, row.label) for row in found) == [(i, "reserved") for i in first]
        assert (await reserve(0))[0] == []


@pytest.mark.usefixtures("backend")
async def test_a_write_and_a_read_of_the_rows_it_touched(resources: Resources) -> None:
    """``written_and_read``: one statement on PostgreSQL, two on SQLite; either way the read
    gets only the rows the write matched, what the write changed included, and nothing when
    it matched none."""
    dialect = resources.engine.dialect.name
    counters = _scratch_table(
        "counters",
        Column("id", Integer, primary_key=True),
        Column("count", Integer),
        Column("label", String),
    )
    bumped = (
        counters.update()
        .where(counters.c.id.in_(bindparam("ids", expanding=True)), counters.c.count < 2)
        .values(count=counters.c.count + 1)
        .returning(counters.c.id, counters.c.count)
    )

    def labelled(written: Any, matched: Any) -> Any:
        return select(counters.c.label, written.count).where(matched).order_by(counters.c.id)

    pair = written_and_read(dialect, bumped, labelled)
    async with _created(resources, counters):
        async with resources.engine.begin() as connection:
            rows = [{"id": 1, "count": 0, "label": "a"}, {"id": 2, "count": 2, "label": "b"}]
            await connection.execute(insert(counters), rows)
        with statements_on(resources.engine, transaction_control=False) as seen:
            async with resources.engine.begin() as connection:
                found = await write_then_read(connection, pair, {"ids": [1, 2, 3]})
        assert [tuple(row) for row in found] == [("a", 1)]
        assert len(seen) == (1 if dialect == "postgresql" else 2)
        async with resources.engine.begin() as connection:
            assert await write_then_read(connection, pair, {"ids": [2, 3]}) == []
            counts = (await connection.execute(select(counters.c.count))).scalars().all()
        assert sorted(counts) == [1, 2]


@pytest.mark.usefixtures("backend")
async def test_a_json_list_holds_a_groups_values_and_reads_as_a_list(resources: Resources) -> None:
    """``json_list``: each group's values come back as a Python list; over no rows the
    aggregate is NULL on PostgreSQL and ``[]`` on SQLite, which callers read as empty."""
    members = _scratch_table(
        "members",
        Column("id", Integer, primary_key=True),
        Column("team", String),
        Column("member", Integer),
    )
    per_team = (
        select(members.c.team, json_list(members.c.member).label("ids"))
        .group_by(members.c.team)
        .order_by(members.c.team)
    )
    of_nobody = select(json_list(members.c.member)).where(members.c.team == "nobody")
    async with _created(resources, members):
        async with resources.engine.begin() as connection:
            rows = [
                {"team": "a", "member": 3},
                {"team": "a", "member": 1},
                {"team": "b", "member": 2},
            ]
            await connection.execute(insert(members), rows)
            found = {team: sorted(ids) for team, ids in await connection.execute(per_team)}
            empty = (await connection.execute(of_nobody)).scalar_one()
    assert found == {"a": [1, 3], "b": [2]}
    assert (empty or []) == []
