"""PostgreSQL's plan for a statement as skyhook runs it: its own SQL and bound parameters."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.db.session import create_engine, create_session_factory

EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
SCANS = ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan")


def explainable(engine: AsyncEngine) -> None:
    """Statements run on ``engine`` with the execution option ``explain=True`` are run under
    ``EXPLAIN ANALYZE``, as compiled and bound for the real run; their one row is the plan.
    ANALYZE runs the statement: explain writes in a transaction that is rolled back."""

    def prefixed(
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext,
        executemany: bool,
    ) -> tuple[str, Any]:
        if context.execution_options.get("explain"):
            statement = EXPLAIN + statement
        return statement, parameters

    def kept(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith(EXPLAIN):  # keep the plan, not the statement's rows
            conn.info["plan"] = cursor.fetchall()[0][0]

    event.listen(engine.sync_engine, "before_cursor_execute", prefixed, retval=True)
    event.listen(engine.sync_engine, "after_cursor_execute", kept)


@asynccontextmanager
async def rolled_back_session(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session on an :func:`explainable` engine whose transaction is rolled back at the end:
    the rows a test builds, and the statistics its ANALYZE stores, go with it."""
    assert database_url.startswith("postgresql")
    engine = create_engine(database_url)
    explainable(engine)
    session = create_session_factory(engine)()
    try:
        yield session
    finally:
        await session.rollback()
        await session.close()
        await engine.dispose()


async def plan_of(session: AsyncSession, statement: Any, parameters: dict[str, Any]) -> Any:
    """The plan's top node, with what running it did (rows, loops, buffers)."""
    connection = await session.connection()  # Core: no ORM handling of the rows it returns
    await connection.execute(statement.execution_options(explain=True), parameters)
    explained = connection.info.pop("plan")
    if isinstance(explained, str):
        explained = json.loads(explained)
    return explained[0]["Plan"]


def nodes_of(plan: dict[str, Any], node_type: str) -> list[dict[str, Any]]:
    """The plan's nodes of this type, at any depth."""
    found = [plan] if plan["Node Type"] == node_type else []
    for child in plan.get("Plans", []):
        found += nodes_of(child, node_type)
    return found


def rows_read_from(plan: dict[str, Any], table: str) -> int:
    """How many rows the plan's scans of ``table`` looked at: those they returned and those
    their filters removed, over all their loops."""
    scans = [node for kind in SCANS for node in nodes_of(plan, kind)]
    return sum(
        (
            node["Actual Rows"]
            + node.get("Rows Removed by Filter", 0)
            + node.get("Rows Removed by Index Recheck", 0)
        )
        * node["Actual Loops"]
        for node in scans
        if node.get("Relation Name") == table
    )
