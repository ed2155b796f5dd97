"""Operations: liveness, readiness, Prometheus metrics, JSON logs and the dead-letter commands."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.bus.base import Envelope
from shared.bus.rabbit import RabbitBus
from shared.observability.metrics import JSONLogFormatter, bind_analysis
from shared.runtime.resources import Resources
from tests.conftest import AMQP_URL
from tests.support.api import Accounts, ApiClient
from tests.support.metrics import metric_by, metric_total
from tests.support.pipeline import make_analysis, make_obj, make_service

SKYHOOK = Path(sys.executable).with_name("skyhook")


async def test_health_and_readiness_report_database_and_bus(
    api: ApiClient, resources: Resources
) -> None:
    assert (await api.get("/healthz", None)).body == {"status": "ok"}
    assert (await api.get("/readyz", None)).body == {"status": "ready"}
    await resources.bus.close()
    reply = await api.get("/readyz", None)
    assert reply.status == 503
    assert reply.body["problems"] == ["bus: not connected"]
    assert (await api.get("/healthz", None)).status == 200


async def test_metrics_expose_latency_analyses_and_outbox(
    api: ApiClient, accounts: Accounts
) -> None:
    user = await accounts.user()
    await api.get("/api/internal/profile", user)
    reply = await api.get("/metrics", None)
    assert reply.status == 200
    text = reply.body.decode()
    assert (
        'skyhook_http_request_duration_seconds_count{method="GET",'
        'route="/api/internal/profile",service="gateway",status="200"}'
    ) in text
    assert "skyhook_outbox_pending" in text
    assert "skyhook_queue_messages" in text


async def test_unusual_methods_are_counted_under_one_label(api: ApiClient) -> None:
    """Methods HTTP knows but the API does not use (WebDAV's, a cache's PURGE) are refused,
    and share one label: the metrics keep the seven methods an API answers."""
    methods = ["PROPFIND", "MKCOL", "LOCK", "PURGE", "SEARCH"]
    for method in methods:
        assert (await api.call(method, "/api/sysinfo")).status in (401, 405)
    text = (await api.get("/metrics", None)).body.decode()
    counted = metric_by(text, "skyhook_http_request_duration_seconds_count", "method")
    assert not set(methods) & set(counted)
    assert metric_total(text, "skyhook_http_request_duration_seconds_count", method="other") >= 5


def _running_gauge(metrics: str) -> dict[str, float]:
    return metric_by(metrics, "skyhook_analyses", "status")


async def test_metrics_count_the_running_analyses_by_status(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    """Every running status, from the running analyses' own index; the finished ones, which
    no index holds by status, are not counted at each scrape."""
    group = await accounts.group()
    author = await accounts.user(groups=(group,))
    obj_id = await make_obj(resources, [group])
    service_id = await make_service(resources, "http://127.0.0.1:9/", [group])
    before = _running_gauge((await api.get("/metrics", None)).body.decode())
    for status in ("queued", "queued", "pending", "completed"):
        await make_analysis(resources, obj_id, service_id, author.id, [group], status=status)

    after = _running_gauge((await api.get("/metrics", None)).body.decode())

    assert set(after) == {"queued", "dispatching", "pending"}
    grew = {status: after[status] - before.get(status, 0.0) for status in after}
    assert grew == {"queued": 2.0, "dispatching": 0.0, "pending": 1.0}


def test_json_logs_carry_the_analysis_id() -> None:
    formatter = JSONLogFormatter("dispatcher")
    record = logging.LogRecord("skyhook.x", logging.INFO, __file__, 1, "sent %s", ("ok",), None)
    with bind_analysis(42):
        entry = json.loads(formatter.format(record))
    assert entry["analysis_id"] == 42
    assert entry["message"] == "sent ok" and entry["service"] == "dispatcher"
    assert "analysis_id" not in json.loads(formatter.format(record))


def _cli(prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYHOOK_AMQP_URL": AMQP_URL, "SKYHOOK_BUS_PREFIX": prefix}
    return subprocess.run(
        [str(SKYHOOK), "dead-letters", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
async def rabbit() -> AsyncIterator[RabbitBus]:
    bus = RabbitBus(AMQP_URL, prefix=f"test-ops-{uuid.uuid4().hex[:8]}", delivery_limit=1)
    await bus.start()
    yield bus
    channel = await bus._require_connection().channel()
    for name in (*bus.declared_queues, bus.dead_letter_queue):
        await channel.queue_delete(name)
    for name in (bus.exchange, bus.dead_letter_exchange):
        await channel.exchange_delete(name)
    await bus.close()


async def test_dead_letters_are_listed_and_replayed_from_the_command_line(
    rabbit: RabbitBus,
) -> None:
    # A message no queue is bound to lands among the dead letters.
    await rabbit.publish([Envelope("m-1", "analysis.requested", {"analysis_id": 7})])
    listed = _cli(rabbit.prefix, "list")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert json.loads(line)["message_id"] == "m-1"
    assert json.loads(line)["payload"] == {"analysis_id": 7}
    # Listing leaves it in place; replay re-publishes it to a queue that now exists.
    await rabbit.declare("dispatcher", ["analysis.requested"])
    replayed = _cli(rabbit.prefix, "replay", "--id", "m-1")
    assert replayed.returncode == 0 and "replayed 1" in replayed.stderr
    assert _cli(rabbit.prefix, "list").stdout == ""
    depths = await rabbit.queue_depths()
    assert depths[rabbit.queue_name("dispatcher")] == 1


def test_dead_letter_commands_need_a_broker() -> None:
    env = {**os.environ, "SKYHOOK_AMQP_URL": "memory://"}
    done = subprocess.run(
        [str(SKYHOOK), "dead-letters", "list"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "memory://" in done.stderr
