"""Request latency metrics for the platform's HTTP services."""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web

from http_edge.web import Handler
from shared.observability.metrics import HTTP_LATENCY, WORKER_REQUESTS

# Any other method a client sends is counted as "other": a label per made-up method would let
# strangers grow the metrics without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def metrics_middleware(service: str) -> Any:
    # The labelled series, looked up once each: the labels are a few routes and statuses.
    latency_of: dict[tuple[str, str, int], Any] = {}
    requests_of: dict[int, Any] = {}  # by process id: workers count their own requests

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
            method = request.method if request.method in KNOWN_METHODS else "other"
            latency = latency_of.get((method, route, status))
            if latency is None:
                latency = HTTP_LATENCY.labels(service, method, route, str(status))
                latency_of[method, route, status] = latency
            latency.observe(time.perf_counter() - started)
            pid = os.getpid()
            counted = requests_of.get(pid)
            if counted is None:
                counted = requests_of[pid] = WORKER_REQUESTS.labels(service, str(pid))
            counted.inc()

    return record_latency
