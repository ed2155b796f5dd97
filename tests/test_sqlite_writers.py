"""The embedded default's SQLite writers take turns in the event loop (shared.db.sqlite_writers):
a second writing transaction waits for the first to commit instead of meeting SQLite's lock,
readers never wait, and a rolled-back or failed transaction hands the turn on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db.session import create_engine
from shared.db.sqlite_writers import is_write


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'writers.db'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    yield engine
    await engine.dispose()


async def _impatient(connection: AsyncConnection) -> None:
    """SQLite gives up at once on a lock another connection holds ("database is locked"):
    only the queue can make a second writer wait."""
    await connection.execute(text("PRAGMA busy_timeout = 0"))


async def test_a_second_writer_waits_for_the_first_to_commit(engine: AsyncEngine) -> None:
    events: list[str] = []
    first_wrote, first_may_commit = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with engine.begin() as connection:
            await _impatient(connection)
            await connection.execute(text("INSERT INTO notes (body) VALUES ('first')"))
            events.append("first wrote")
            first_wrote.set()
            await first_may_commit.wait()
            events.append("first commits")

    async def second() -> None:
        await first_wrote.wait()
        async with engine.begin() as connection:
            await _impatient(connection)
            events.append("second writes")
            await connection.execute(text("INSERT INTO notes (body) VALUES ('second')"))
            events.append("second wrote")

    async def reader() -> None:
        await first_wrote.wait()
        async with engine.connect() as connection:
            count = (await connection.execute(text("SELECT count(*) FROM notes"))).scalar()
        events.append(f"read {count} committed")
        first_may_commit.set()  # the reader did not wait for the writer

    await asyncio.gather(first(), second(), reader())

    assert events.index("read 0 committed") < events.index("first commits")
    assert events.index("first commits") < events.index("second wrote")
    async with engine.connect() as connection:
        bodies = (await connection.execute(text("SELECT body FROM notes ORDER BY id"))).all()
    assert [b for (b,) in bodies] == ["first", "second"]


async def test_a_rolled_back_or_failed_writer_hands_the_turn_on(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError):
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO notes (body) VALUES ('undone')"))
            raise RuntimeError("the transaction fails")
    with pytest.raises(Exception, match="no such table"):
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO missing (body) VALUES ('x')"))

    async with engine.begin() as connection:
        await _impatient(connection)
        await connection.execute(text("INSERT INTO notes (body) VALUES ('kept')"))
    async with engine.connect() as connection:
        bodies = (await connection.execute(text("SELECT body FROM notes"))).all()
    assert bodies == [("kept",)]


@pytest.mark.parametrize(
    ("statement", "writes"),
    [
        ("SELECT * FROM notes", False),
        ("  select 1", False),
        ("PRAGMA journal_mode", False),
        ("WITH x AS (SELECT 1) SELECT * FROM x", False),
        ("INSERT INTO notes VALUES (1, 'a')", True),
        ("update notes SET body = 'b'", True),
        ("DELETE FROM notes", True),
        ("WITH done AS MATERIALIZED (SELECT 1 AS id) UPDATE notes SET body = 'c'", True),
        ("CREATE TABLE t (id INTEGER)", True),
    ],
)
def test_writes_are_told_from_reads(statement: str, writes: bool) -> None:
    assert is_write(statement) is writes
