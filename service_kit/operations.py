"""Liveness, readiness and metrics routes for a standalone analysis service: it has no database
or bus to check, so answering is being ready."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from shared.observability.metrics import metrics_text


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def prometheus_response() -> web.Response:
    response = web.Response(body=metrics_text())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def standalone_ready(request: web.Request) -> web.Response:
    """Readiness of a service without database or bus: it answers, so it can take work."""
    return web.json_response({"status": "ready"})


async def standalone_metrics(request: web.Request) -> web.Response:
    return prometheus_response()


# For the standalone analysis services (sn-fitter, summarizer): no database or bus to check.
STANDALONE_OPERATIONS_ROUTES = [
    web.get("/healthz", healthz),
    web.get("/readyz", standalone_ready),
    web.get("/metrics", standalone_metrics),
]
