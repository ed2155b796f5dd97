"""SQLite: one writing transaction at a time in this process, queued in the event loop.

SQLite lets one connection write at a time. A second writer waits in SQLite's busy handler,
which sleeps between tries (1 ms, then longer, up to 100 ms), so under load the embedded
default spent most of its time asleep there while the lock was free. Here a connection takes
a process-wide asyncio lock before its transaction's first write and gives it back once the
transaction has committed or rolled back: writers queue in the event loop and each goes as
soon as the one before it is done. Reads take no lock (WAL lets them run beside a writer).

Nothing new can deadlock: a transaction waiting here for another would have waited for it in
SQLite's busy handler all the same.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_

_WRITE = re.compile(
    r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|ALTER|DROP)\b"
    r"|\s*WITH\b.*\b(INSERT|UPDATE|DELETE)\b",
    re.IGNORECASE | re.DOTALL,
)


def is_write(statement: str) -> bool:
    return _WRITE.match(statement) is not None


class WriteQueue:
    """The process-wide lock of an SQLite engine's writers (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._holders: set[Any] = set()  # DBAPI connections inside a writing transaction

    def before_write(self, dbapi_connection: Any, statement: str) -> None:
        if dbapi_connection in self._holders or not is_write(statement):
            return
        try:
            await_(self._lock.acquire())
        except MissingGreenlet:
            return  # a synchronous caller, outside asyncio: SQLite's own lock serializes it
        self._holders.add(dbapi_connection)

    def transaction_ended(self, dbapi_connection: Any) -> None:
        if dbapi_connection in self._holders:
            self._holders.discard(dbapi_connection)
            self._lock.release()


def queue_writers(engine: AsyncEngine) -> WriteQueue:
    """Make ``engine``'s writing transactions take turns through a :class:`WriteQueue`."""
    queue = WriteQueue()
    sync_engine = engine.sync_engine

    def before_cursor_execute(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        queue.before_write(conn.connection.dbapi_connection, statement)

    event.listen(sync_engine, "before_cursor_execute", before_cursor_execute)
    dialect: Any = sync_engine.dialect
    dialect.do_commit = _then_ended(dialect.do_commit, queue)
    dialect.do_rollback = _then_ended(dialect.do_rollback, queue)
    # A connection that leaves the pool's hands some other way ends its transaction too.
    for name in ("checkin", "close", "invalidate", "soft_invalidate"):
        event.listen(sync_engine.pool, name, lambda dbapi, *_: queue.transaction_ended(dbapi))
    return queue


def _then_ended(end: Callable[[Any], None], queue: WriteQueue) -> Callable[[Any], None]:
    """``end`` (the dialect's commit or rollback), then the lock goes to the next writer."""

    def ended(dbapi_connection: Any) -> None:
        try:
            end(dbapi_connection)
        finally:
            queue.transaction_ended(dbapi_connection)

    return ended
