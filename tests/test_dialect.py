"""The dialect layer's row sets: many rows as one table in a set-based statement. Every kind of
value comes back as it went in, on PostgreSQL and on SQLite, and the statement's text is the
same whatever the number of rows, so each hot statement is compiled (and on PostgreSQL
prepared) once rather than once per batch size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, Float, Integer, LargeBinary, String, select
from sqlalchemy.dialects import postgresql, sqlite

from shared.db.dialect import row_set
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
    dialect = resources.engine.dialect.name
    table = row_set("given", COLUMNS, ROWS, dialect)
    async with resources.engine.connect() as connection:
        found = (await connection.execute(select(table).order_by(table.c.number))).all()

    assert [dict(row._mapping) for row in found] == ROWS


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()])
def test_a_row_set_statement_reads_the_same_whatever_the_number_of_rows(dialect: Any) -> None:
    def statement_text(count: int) -> str:
        table = row_set("given", COLUMNS, ROWS[:count], dialect.name)
        return str(select(table).compile(dialect=dialect))

    assert statement_text(1) == statement_text(2) == statement_text(3)
