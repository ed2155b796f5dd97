"""PostgreSQL's plan for a statement as skyhook runs it: its own SQL and bound parameters."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "


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


async def plan_of(session: AsyncSession, statement: Any, parameters: dict[str, Any]) -> Any:
    """The plan's top node, with what running it did (rows, loops, buffers)."""
    connection = await session.connection()  # Core: no ORM handling of the rows it returns
    await connection.execute(statement.execution_options(explain=True), parameters)
    explained = connection.info.pop("plan")
    if isinstance(explained, str):
        explained = json.loads(explained)
    return explained[0]["Plan"]


def rows_read_from(plan: dict[str, Any], table: str) -> int:
    """How many rows the plan's scans of ``table`` looked at: those they returned and those
    their filters removed, over all their loops."""
    read = 0
    if plan.get("Relation Name") == table and "Scan" in plan["Node Type"]:
        looked_at = (
            plan["Actual Rows"]
            + plan.get("Rows Removed by Filter", 0)
            + plan.get("Rows Removed by Index Recheck", 0)
        )
        read += looked_at * plan["Actual Loops"]
    for child in plan.get("Plans", []):
        read += rows_read_from(child, table)
    return read
