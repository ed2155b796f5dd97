"""Pooled PostgreSQL connections: an idle connection the server dropped is replaced before use;
a connection used moments ago is not pinged (no extra round trips on the hot paths)."""

from __future__ import annotations

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
