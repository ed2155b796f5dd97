"""The platform's readiness and gauges, read from the database and the bus."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.bus.base import Bus
from shared.db.models import ObjAnalysis, OutboxMessage
from shared.domain.analysis_lifecycle import running
from shared.domain.enums import ACTIVE_STATUSES
from shared.observability.metrics import ANALYSES, OUTBOX_BACKLOG, OUTBOX_LAG, QUEUE_DEPTH


async def _database_problem(engine: AsyncEngine) -> str | None:
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        return f"database: {type(exc).__name__}"
    return None


def _bus_problem(bus: Bus) -> str | None:
    return None if bus.is_connected else "bus: not connected"


async def readiness_problems(engine: AsyncEngine, bus: Bus) -> list[str]:
    """What keeps a platform service from taking work: the database or the bus not answering."""
    return [p for p in (await _database_problem(engine), _bus_problem(bus)) if p]


async def refresh_gauges(engine: AsyncEngine, bus: Bus) -> None:
    """The running analyses by status, the outbox's backlog and lag, and the bus's queue
    depths. Only the running analyses: their partial index makes the count cheap, while the
    finished ones, which no index holds by status, would be a scan of the whole table at
    every scrape."""
    async with engine.connect() as connection:
        counts = await connection.execute(
            select(ObjAnalysis.status, func.count()).where(running()).group_by(ObjAnalysis.status)
        )
        by_status = {str(status): count for status, count in counts}
        # Every running status, 0 when none: another worker may have reported it last.
        for status in ACTIVE_STATUSES:
            ANALYSES.labels(status.value).set(by_status.get(status.value, 0))
        pending, oldest = (
            await connection.execute(select(func.count(), func.min(OutboxMessage.created_at)))
        ).one()
    OUTBOX_BACKLOG.set(pending)
    OUTBOX_LAG.set(0 if oldest is None else (datetime.now(UTC) - _aware(oldest)).total_seconds())
    try:
        depths = await bus.queue_depths()
    except ConnectionError:
        return
    for queue, depth in depths.items():
        QUEUE_DEPTH.labels(queue).set(depth)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
