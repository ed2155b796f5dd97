"""Health, readiness, Prometheus metrics and structured logs for every skyhook service.

Each service process mounts ``/healthz`` (the process answers), ``/readyz`` and ``/metrics``
(Prometheus text format): the platform services with :mod:`http_edge.operations` (readiness: the
database and the bus answer), the standalone analysis services with the routes below, which
need neither. Logs are JSON lines carrying the analysis id when one is bound
(``bind_analysis``).

With several worker processes (``skyhook gateway --workers N``) every worker writes its metrics
to files in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` reports the sum over the workers:
counters and histograms add up; the gauges below, refreshed from the database or the broker by
whichever worker answers, report the most recent value.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

HTTP_LATENCY = Histogram(
    "skyhook_http_request_duration_seconds",
    "HTTP request latency by service, route template and status code",
    ["service", "method", "route", "status"],
)
DISPATCH_ATTEMPTS = Counter(
    "skyhook_dispatch_attempts_total",
    "Dispatch attempts to analysis services by outcome (accepted, retry, failed)",
    ["outcome"],
)
WEBHOOK_BODY_BYTES = Histogram(
    "skyhook_webhook_body_bytes",
    "Size of webhook bodies posted by analysis services",
    buckets=(1e3, 1e4, 1e5, 1e6, 1e7, 1e8),
)
# Facts about the deployment, not the process: with several workers the latest value counts.
QUEUE_DEPTH = Gauge(
    "skyhook_queue_messages",
    "Messages waiting in each bus queue",
    ["queue"],
    multiprocess_mode="mostrecent",
)
OUTBOX_BACKLOG = Gauge(
    "skyhook_outbox_pending",
    "Outbox rows not yet deleted (a published message's row goes within 0.1 s)",
    multiprocess_mode="mostrecent",
)
OUTBOX_LAG = Gauge(
    "skyhook_outbox_lag_seconds",
    "Age of the oldest outbox row (over 10 s: left behind, swept every second)",
    multiprocess_mode="mostrecent",
)
ANALYSES = Gauge(
    "skyhook_analyses",
    "Running analyses by status (queued, dispatching, pending)",
    ["status"],
    multiprocess_mode="mostrecent",
)
# Requests each process answered (one series per pid): how a service's workers share the load.
WORKER_REQUESTS = Counter(
    "skyhook_worker_http_requests",
    "HTTP requests answered, by service and process id",
    ["service", "pid"],
)
DEFAULT_ANALYSIS_TRIGGERS = Counter(
    "skyhook_default_analysis_triggers_total",
    "Default-analysis triggers by outcome (matched, started, skipped, limited) and reason",
    ["outcome", "reason"],
)

_analysis_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "skyhook_analysis_id", default=None
)


@contextmanager
def bind_analysis(analysis_id: int | None) -> Iterator[None]:
    """Log lines written inside the block carry this analysis id."""
    token = _analysis_id.set(analysis_id)
    try:
        yield
    finally:
        _analysis_id.reset(token)


class JSONLogFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        analysis_id = getattr(record, "analysis_id", None) or _analysis_id.get()
        if analysis_id is not None:
            entry["analysis_id"] = analysis_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO", *, json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JSONLogFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("alembic", "aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def metrics_text() -> bytes:
    """This process's metrics, or with several workers the sum over all of them."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest()
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry)
