"""The platform services' operational routes: liveness, readiness (the database and the bus
answer) and Prometheus metrics with the pipeline's gauges (analyses by status, outbox backlog
and lag, queue depths) refreshed at each scrape. The standalone analysis services have their
own, in :mod:`shared.observability.metrics`, and never import this module (nor the database or bus).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp import web
from sqlalchemy import func, select, text

from http_edge.access import Access
from http_edge.web import Route, add_routes
from shared.db.models import ObjAnalysis, OutboxMessage
from shared.domain.enums import AnalysisStatus
from shared.observability.metrics import (
    ANALYSES,
    OUTBOX_BACKLOG,
    OUTBOX_LAG,
    QUEUE_DEPTH,
    healthz,
    metrics_middleware,
    prometheus_response,
)
from shared.runtime.resources import RESOURCES, Resources


async def _database_ready(resources: Resources) -> str | None:
    try:
        async with resources.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        return f"database: {type(exc).__name__}"
    return None


def _bus_ready(resources: Resources) -> str | None:
    return None if resources.bus.is_connected else "bus: not connected"


async def _refresh_gauges(resources: Resources) -> None:
    async with resources.sessions() as session:
        counts = await session.execute(
            select(ObjAnalysis.status, func.count()).group_by(ObjAnalysis.status)
        )
        by_status = {str(status): count for status, count in counts}
        # Every status, 0 when none: another worker may have reported it last.
        for status in AnalysisStatus:
            ANALYSES.labels(status.value).set(by_status.pop(status.value, 0))
        for unknown, count in by_status.items():
            ANALYSES.labels(unknown).set(count)
        pending, oldest = (
            await session.execute(select(func.count(), func.min(OutboxMessage.created_at)))
        ).one()
    OUTBOX_BACKLOG.set(pending)
    OUTBOX_LAG.set(0 if oldest is None else (datetime.now(UTC) - _aware(oldest)).total_seconds())
    try:
        depths = await resources.bus.queue_depths()
    except ConnectionError:
        return
    for queue, depth in depths.items():
        QUEUE_DEPTH.labels(queue).set(depth)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def readyz(request: web.Request) -> web.Response:
    resources = request.app[RESOURCES]
    problems = [p for p in (await _database_ready(resources), _bus_ready(resources)) if p]
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    try:
        await _refresh_gauges(request.app[RESOURCES])
    except Exception:
        logging.getLogger("skyhook.metrics").warning("could not refresh gauges", exc_info=True)
    return prometheus_response()


_TAG = "operations"
OBSERVABILITY_ROUTES = [
    Route("GET", "/healthz", healthz, Access.PUBLIC, "Liveness: the process answers", _TAG),
    Route("GET", "/readyz", readyz, Access.PUBLIC, "Readiness: database and bus answer", _TAG),
    Route("GET", "/metrics", metrics, Access.PUBLIC, "Prometheus metrics", _TAG),
]


def create_operations_app(resources: Resources, service: str) -> web.Application:
    """A small app with only the operational routes (for services without their own API)."""
    app = web.Application(middlewares=[metrics_middleware(service)])
    app[RESOURCES] = resources
    add_routes(app, OBSERVABILITY_ROUTES)
    return app
