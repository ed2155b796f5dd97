"""The platform services' operational routes: liveness, readiness (the database and the bus
answer) and Prometheus metrics with the pipeline's gauges (analyses by status, outbox backlog
and lag, queue depths) refreshed at each scrape. The standalone analysis services have their
own, in :mod:`service_kit.operations`, and never import this module (nor the database or bus).
"""

from __future__ import annotations

import logging

from aiohttp import web

from http_edge.access import Access
from http_edge.app_keys import BUS, ENGINE, provide
from http_edge.observability import metrics_middleware
from http_edge.web import Route, add_routes
from service_kit.operations import healthz, prometheus_response
from shared.observability.platform import readiness_problems, refresh_gauges
from shared.runtime.resources import Resources


async def readyz(request: web.Request) -> web.Response:
    problems = await readiness_problems(request.app[ENGINE], request.app[BUS])
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    try:
        await refresh_gauges(request.app[ENGINE], request.app[BUS])
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
    provide(app, resources)
    add_routes(app, OBSERVABILITY_ROUTES)
    return app
