"""Request latency metrics for the platform's HTTP services."""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web

from http_edge.web import Handler
from shared.observability.metrics import HTTP_LATENCY, WORKER_REQUESTS


def metrics_middleware(service: str) -> Any:
    @web.middleware
    async def record_latency(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            HTTP_LATENCY.labels(service, request.method, route, str(status)).observe(
                time.perf_counter() - started
            )
            WORKER_REQUESTS.labels(service, str(os.getpid())).inc()

    return record_latency
