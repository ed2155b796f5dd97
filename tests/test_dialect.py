"""The dialect layer's row sets: many rows as one table in a set-based statement. Every kind of
value comes back as it went in, on PostgreSQL and on SQLite, and one statement, built once,
serves batches of every size: the rows are bound at execution, so a hot statement is built,
compiled (and on PostgreSQL prepared) once rather than once per batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, Float, Integer, LargeBinary, String, select

from shared.db.dialect import RowSet
from shared.db.types import UTCDateTime
from shared.runtime.resources import Resources

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
