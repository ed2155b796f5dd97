"""Pooled PostgreSQL connections: an idle connection the server dropped is replaced before use;
a connection used moments ago is not pinged (no extra round trips on the hot paths). On SQLite, a
transaction is whole whatever its first statement."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.session import create_engine
from tests.conftest import PG_ADMIN_URL


async def _terminate(pid: int) -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text("SELECT pg_backend_pid()")))


async def test_an_idle_connection_the_server_dropped_is_replaced(pg_database_url: str) -> None:
    engine = create_engine(pg_database_url, pool_size=1, max_overflow=0, idle_ping_seconds=0.0)
    try:
        first = await _backend_pid(engine)
        await _terminate(first)
        second = await _backend_pid(engine)  # no error: the ping found it gone
        assert second != first
    finally:
        await engine.dispose()


async def test_a_recently_used_connection_is_used_without_a_ping(pg_database_url: str) -> None:
    engine = create_engine(pg_database_url, pool_size=1, max_overflow=0, idle_ping_seconds=60.0)
    try:
        first = await _backend_pid(engine)
        await _terminate(first)
        # Used a moment ago, so not pinged: the dropped connection fails on first use.
        with pytest.raises(DBAPIError):
            await _backend_pid(engine)
        assert await _backend_pid(engine) != first  # and is replaced right after
    finally:
        await engine.dispose()


async def test_an_sqlite_transaction_that_starts_with_a_cte_write_is_rolled_back_whole(
    tmp_path: Path,
) -> None:
    """Python's sqlite3 begins a transaction by itself only before INSERT, UPDATE, DELETE or
    REPLACE; a row set's write starts with WITH, and must not commit on its own."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE notes (body TEXT)"))
        with pytest.raises(RuntimeError):
            async with engine.begin() as connection:
                cte_write = (
                    "WITH rows(body) AS (SELECT 'first') INSERT INTO notes SELECT * FROM rows"
                )
                await connection.execute(text(cte_write))
                await connection.execute(text("INSERT INTO notes VALUES ('second')"))
                raise RuntimeError("the rest of the transaction failed")
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT count(*) FROM notes")) == 0
    finally:
        await engine.dispose()
