"""Async engine and session factory for PostgreSQL (asyncpg) or SQLite (aiosqlite)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from shared.db.dialect import UNHEX, is_postgresql
from shared.db.sqlite_writers import is_write, queue_writers

# Pinging a connection on every checkout (SQLAlchemy's pool_pre_ping: three round trips with
# asyncpg) cost more than the queries of the analysis hot paths. A connection used moments ago
# is alive; only one idle for longer than this is pinged, and replaced if the ping fails (a
# database restart drops idle pooled connections).
IDLE_PING_SECONDS = 5.0
_LAST_CHECKIN = "skyhook_last_checkin"
# PostgreSQL connections per process unless told otherwise (SKYHOOK_DB_POOL_SIZE,
# SKYHOOK_DB_MAX_OVERFLOW): small enough that a deployment's processes together stay well
# inside the server's default max_connections of 100.
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 5


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # SQLite before 3.41 has no unhex(): row sets carry bytes as hex (shared.db.dialect).
    dbapi_connection.create_function(UNHEX, 1, _unhex, deterministic=True)


def _begin_before_cte_write(connection: Connection, cursor: Any, statement: str, *_: Any) -> None:
    """Python's sqlite3 opens the transaction by itself only before a statement that starts
    with INSERT, UPDATE, DELETE or REPLACE: a write that starts with WITH (a row set's CTE)
    would run, and commit, on its own, outside the transaction it belongs to. Such a write
    opens it explicitly (unless the connection is in autocommit mode)."""
    if statement.lstrip()[:4].upper() != "WITH" or not is_write(statement):
        return
    driver: Any = connection.connection.driver_connection
    if driver.isolation_level is not None and not driver.in_transaction:
        cursor.execute("BEGIN")


def _unhex(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    # Bound parameters (tokens' hashes, ciphertexts, user text) never appear in error messages.
    kwargs.setdefault("hide_parameters", True)
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(database_url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "before_cursor_execute", _begin_before_cte_write)
        queue_writers(engine)
        return engine
    idle_ping_seconds = kwargs.pop("idle_ping_seconds", IDLE_PING_SECONDS)
    kwargs.setdefault("pool_size", DEFAULT_POOL_SIZE)
    kwargs.setdefault("max_overflow", DEFAULT_MAX_OVERFLOW)
    engine = create_async_engine(database_url, **kwargs)
    _ping_when_idle(engine, idle_ping_seconds)
    return engine


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    def checkin(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info[_LAST_CHECKIN] = time.monotonic()

    def checkout(
        dbapi_connection: DBAPIConnection,
        record: ConnectionPoolEntry,
        _proxy: PoolProxiedConnection,
    ) -> None:
        last = record.info.get(_LAST_CHECKIN)
        if last is None or time.monotonic() - last < idle_seconds:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool discards this connection and checks out another (or a new one).
            raise DisconnectionError(f"idle connection is gone: {exc}") from exc

    event.listen(engine.sync_engine, "checkin", checkin)
    event.listen(engine.sync_engine, "checkout", checkout)


Sessions = async_sessionmaker[AsyncSession]
"""A session factory (``async with sessions() as session``, ``sessions.begin()``)."""


def create_session_factory(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def read_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session for reads that need no transaction around them: its connection is in
    autocommit mode, so each read is one round trip (no BEGIN before it, no ROLLBACK after).
    Never write through it: every statement would commit on its own."""
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        async with AsyncSession(bind=connection, expire_on_commit=False) as session:
            yield session


@asynccontextmanager
async def statement_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session for work whose every write is one statement on PostgreSQL (a row set's
    write, a :func:`~shared.db.dialect.written_and_read` pair, an ``all_at_once`` write):
    there its connection is in autocommit mode, so each statement commits on its own and no
    BEGIN or COMMIT round trip surrounds them. On SQLite, where such a write may be several
    statements, the session is one transaction, committed at the end of the block."""
    if is_postgresql(engine):
        async with read_session(engine) as session:
            yield session
        return
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        yield session
