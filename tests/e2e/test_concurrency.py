"""1,000 analyses started concurrently all complete exactly once, with their events.

An analysis service that posts its results to the callback URL as soon as it gets a request
(and only then answers the dispatcher) is the hardest case for exactly-once: the webhook races
the dispatcher's own bookkeeping of the send. 1,000 analyses of such a service are started
through the API by 64 concurrent clients, spread over 20 sources, in two deployments:

* **split**: PostgreSQL and RabbitMQ, the gateway, the dispatcher and the webhook receiver as
  separate services (``tests/e2e/harness.py``), events tapped from a queue of the test's own
  bound to ``<prefix>.events`` (single-event and batch messages decoded);
* **embedded**: ``skyhook run``'s composition (``run_embedded``: SQLite and the in-process
  bus, all services in one process), events from ``bus.listen`` on that process's bus.

Each run then proves, with no wall-clock assertion (only generous bounds on polls):

* every one of the 1,000 rows is ``completed`` with the service's results stored;
* the service received each analysis exactly once (a re-send carries the same callback
  token, derived from the analysis, so it would show as a duplicate) and skyhook recorded one
  accepted dispatch attempt for it;
* each analysis' single callback was accepted (HTTP 200), and the service made no other;
* on the bus, each analysis has exactly one ``analysis.completed`` event (after removing
  redeliveries of one message id, which at-least-once delivery allows) matching its row, at
  least one ``analysis.requested``, and no ``analysis.failed``, ``.timed_out`` or
  ``.cancelled``. Events are counted up to a barrier message published once the outbox held
  nothing more for these analyses, so none still in flight is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.bus import Envelope
from shared.bus.wire import BATCH_CONTENT_TYPE
from shared.db.migrate import upgrade_async
from shared.db.models import DispatchAttempt, ObjAnalysis, OutboxMessage
from shared.db.session import create_engine
from shared.runtime.resources import Resources
from shared.runtime.settings import load_settings
from shared.security.secrets import hash_token
from skyhook import composition
from tests.conftest import _dsn, _pg_admin
from tests.e2e.conftest import MANAGE_SERVICES, RUN_ANALYSES, UPLOAD_DATA
from tests.e2e.harness import (
    AMQP_URL,
    FINAL,
    Pipeline,
    Source,
    User,
    running_pipeline,
    wait_listening,
)
from tests.e2e.services import Products, b64
from tests.support.api import ApiClient
from tests.support.fake_service import Call, FakeService, WebhookBody
from tests.support.polling import eventually
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

ANALYSES = 1000
CLIENTS = 64
SOURCES = 20
# Per (source, user): 50 analyses land on each source; the cap is not what this test is about.
CAP = 100
VISIBLE_POINTS = 4  # of each source's photometry, what the starting user may see
# Generous bounds on polls (the expected run is well under a minute per deployment).
ALL_FINAL_WITHIN = 600.0
EVENTS_WITHIN = 120.0
ENDED_OTHERWISE = ("analysis.failed", "analysis.timed_out", "analysis.cancelled")
ENDED = frozenset({"analysis.completed", *ENDED_OTHERWISE})
BARRIER_KEY = "concurrency-test.barrier"


# --- what the bus carried ----------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One event as delivered to the test's listener."""

    message_id: str
    routing_key: str
    payload: dict[str, Any]


@dataclass
class EventLog:
    """Every analysis event delivered during a run (redeliveries included), and barriers."""

    deliveries: list[Seen] = field(default_factory=list)
    ended: set[int] = field(default_factory=set)  # analyses with an event saying they ended
    barriers: set[str] = field(default_factory=set)
    wire: Counter[str] = field(default_factory=Counter)  # AMQP messages per content type

    def record(self, message_id: str, routing_key: str, payload: dict[str, Any]) -> None:
        if routing_key == BARRIER_KEY:
            self.barriers.add(str(payload.get("barrier")))
            return
        self.deliveries.append(Seen(message_id, routing_key, payload))
        analysis_id = payload.get("analysis_id")
        if routing_key in ENDED and isinstance(analysis_id, int):
            self.ended.add(analysis_id)

    async def on_envelope(self, envelope: Envelope) -> None:
        self.record(envelope.message_id, envelope.routing_key, envelope.payload)

    def distinct(self, analysis_ids: set[int]) -> list[Seen]:
        """The events of these analyses, one per message id (a redelivery must be identical)."""
        by_id: dict[str, Seen] = {}
        for seen in self.deliveries:
            if seen.payload.get("analysis_id") not in analysis_ids:
                continue  # left in a shared database's outbox by another test
            first = by_id.setdefault(seen.message_id, seen)
            assert first == seen, (
                f"message id {seen.message_id} carried two events: {first}, {seen}"
            )
        return list(by_id.values())


PublishBarrier = Callable[[str], Awaitable[None]]


@contextlib.asynccontextmanager
async def rabbit_events(prefix: str) -> AsyncIterator[tuple[EventLog, PublishBarrier]]:
    """A raw consumer of ``<prefix>.events``: an exclusive queue of the test's own bound to
    ``analysis.#`` (it takes no message from the services' queues), and a barrier publisher."""
    log = EventLog()
    exchange_name = f"{prefix}.events"

    async def consume(message: AbstractIncomingMessage) -> None:
        log.wire[message.content_type or ""] += 1
        for message_id, routing_key, payload in decode(message):
            log.record(message_id, routing_key, payload)

    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange_name, "analysis.#")
        await queue.bind(exchange_name, BARRIER_KEY)
        await queue.consume(consume, no_ack=True)
        publisher = await connection.channel(publisher_confirms=True)
        exchange = await publisher.get_exchange(exchange_name, ensure=False)

        async def publish_barrier(barrier: str) -> None:
            body = json.dumps({"barrier": barrier}).encode()
            message = aio_pika.Message(
                body, content_type="application/json", message_id=uuid.uuid4().hex
            )
            await exchange.publish(message, BARRIER_KEY)

        yield log, publish_barrier
    finally:
        await connection.close()


def decode(message: AbstractIncomingMessage) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(message id, routing key, payload) of each event a message carries: a batch message is a
    JSON array of ``{message_id, payload, ...}`` items, a single-event message is the payload
    with the id in its ``message_id`` property."""
    body = json.loads(message.body)
    routing_key = message.routing_key or ""
    if message.content_type == BATCH_CONTENT_TYPE:
        assert isinstance(body, list), body
        for item in body:
            yield item["message_id"], item.get("routing_key") or routing_key, item["payload"]
    else:
        assert isinstance(body, dict), body
        yield message.message_id or "", routing_key, body


# --- the embedded composition, in this process ---------------------------------------------------


@dataclass(frozen=True)
class Embedded:
    pipeline: Pipeline
    resources: Resources  # those run_embedded opened: its in-process bus


@contextlib.asynccontextmanager
async def running_embedded(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Embedded]:
    """``run_embedded`` (what ``skyhook run`` runs) as a task of this event loop, on a SQLite
    database of its own, with the in-process bus. ``open_resources`` is wrapped only to hand
    the test the resources it opened (so it can listen on that process's bus)."""
    port = free_port()
    settings = load_settings(
        None,
        database_url=f"sqlite+aiosqlite:///{workdir / 'skyhook.db'}",
        amqp_url="memory://",
        host="127.0.0.1",
        port=port,
        artifact_dir=workdir / "artifacts",
        secret_key="concurrency-secret-key",
        max_analyses_per_obj_per_user=CAP,
    )
    opened: asyncio.Future[Resources] = asyncio.get_running_loop().create_future()
    open_resources = composition.open_resources

    @contextlib.asynccontextmanager
    async def observed(settings_: Any) -> AsyncIterator[Resources]:
        async with open_resources(settings_) as resources:
            opened.set_result(resources)
            yield resources

    monkeypatch.setattr(composition, "open_resources", observed)
    stop = asyncio.Event()
    task = asyncio.create_task(composition.run_embedded(settings, stop), name="skyhook-run")
    pipeline = Pipeline(settings, f"http://127.0.0.1:{port}")
    try:
        await wait_listening(port, task, within=120)
        yield Embedded(pipeline, opened.result())
    finally:
        await pipeline.http.close()
        stop.set()
        async with asyncio.timeout(120):
            await task


# --- the run -------------------------------------------------------------------------------------


def answer(png: str) -> Callable[[Call], WebhookBody]:
    """Results naming the source and counting the photometry points the service was sent."""

    def results(call: Call) -> WebhookBody:
        payload = call.payload
        obj_id = payload["resource_id"]
        points = len(list(csv.DictReader(io.StringIO(payload["inputs"]["photometry"]))))
        return {
            "status": "success",
            "message": f"fit of {obj_id}",
            "analysis": {
                "plots": [{"format": "png", "data": png}],
                "results": {"format": "json", "data": {"obj_id": obj_id, "points": points}},
                "model_name": "gaussian",
                "n_detections": points,
            },
        }

    return results


@dataclass(frozen=True)
class Started:
    analysis_id: int
    obj_id: str


async def by_clients(user: User, requests: list[tuple[str, str]]) -> list[tuple[int, Any]]:
    """(status, JSON body) of each (method, URL), in order, made by CLIENTS clients at once,
    each with an HTTP session of its own."""
    replies: dict[int, tuple[int, Any]] = {}
    jobs = iter(enumerate(requests))  # one iterator shared by all clients

    async def client() -> None:
        async with ApiClient.at("", user) as api:  # the requests name whole URLs
            for index, (method, url) in jobs:
                reply = await api.call(method, url, json={} if method == "POST" else None)
                replies[index] = (reply.status, reply.body)

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return [replies[i] for i in range(len(requests))]


async def start_concurrently(
    gateway_url: str, user: User, service_id: int, sources: list[Source]
) -> list[Started]:
    """ANALYSES starts, round-robin over the sources, by CLIENTS clients at once; every start
    must be accepted."""
    obj_ids = [sources[i % len(sources)].obj_id for i in range(ANALYSES)]
    starts = [("POST", f"{gateway_url}/api/obj/{o}/analysis/{service_id}") for o in obj_ids]
    replies = await by_clients(user, starts)
    refused = [reply for reply in replies if reply[0] != 200]
    assert not refused, f"{len(refused)} starts refused, e.g. {refused[:3]}"
    started = [
        Started(int(body["data"]["id"]), o) for (_, body), o in zip(replies, obj_ids, strict=True)
    ]
    assert len({s.analysis_id for s in started}) == ANALYSES
    return started


async def rows_of(engine: AsyncEngine, service_id: int) -> list[Any]:
    query = select(
        ObjAnalysis.id,
        ObjAnalysis.obj_id,
        ObjAnalysis.status,
        ObjAnalysis.status_message,
        ObjAnalysis.token_hash,
        ObjAnalysis.artifacts,
        ObjAnalysis.data_summary,
    ).where(ObjAnalysis.analysis_service_id == service_id)
    async with engine.connect() as connection:
        return list(await connection.execute(query))


async def attempts_of(engine: AsyncEngine, ids: set[int]) -> dict[int, list[tuple[str, Any]]]:
    query = select(
        DispatchAttempt.analysis_id, DispatchAttempt.outcome, DispatchAttempt.http_status
    ).order_by(DispatchAttempt.analysis_id, DispatchAttempt.attempt_number)
    found: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    async with engine.connect() as connection:
        for analysis_id, outcome, http_status in await connection.execute(query):
            if analysis_id in ids:
                found[analysis_id].append((outcome, http_status))
    return found


async def outbox_holds(engine: AsyncEngine, ids: set[int]) -> int:
    """Messages about these analyses not yet confirmed by the bus (the relay deletes the rest)."""
    query = select(OutboxMessage.payload).where(OutboxMessage.routing_key.like("analysis.%"))
    async with engine.connect() as connection:
        payloads = (await connection.execute(query)).scalars()
        return sum(1 for payload in payloads if payload.get("analysis_id") in ids)


async def users_and_sources(pipeline: Pipeline) -> tuple[User, str, list[Source]]:
    """The user who starts the analyses, their group, and SOURCES sources with photometry
    (some of it visible only to another group: it must not reach the service)."""
    group, other = f"conc-{uuid.uuid4().hex[:8]}", f"conc-other-{uuid.uuid4().hex[:8]}"
    astro = await pipeline.user([RUN_ANALYSES, UPLOAD_DATA, MANAGE_SERVICES], [group])
    outsider = await pipeline.user([UPLOAD_DATA], [group, other])
    sources = [
        await pipeline.source_with_photometry(astro, group, outsider, other) for _ in range(SOURCES)
    ]
    assert all(s.visible_points == VISIBLE_POINTS for s in sources)
    return astro, group, sources


async def run_and_check(
    pipeline: Pipeline,
    engine: AsyncEngine,
    log: EventLog,
    publish_barrier: PublishBarrier,
    products: Products,
    deployment: str,
) -> None:
    astro, group, sources = await users_and_sources(pipeline)
    async with FakeService(answer(b64(products.png)), callback_before_answer=True) as service:
        service_id = await pipeline.register(astro, group, service.url)
        began = time.monotonic()
        started = await start_concurrently(pipeline.gateway_url, astro, service_id, sources)
        starts_took = time.monotonic() - began
        ids = {s.analysis_id for s in started}
        obj_of = {s.analysis_id: s.obj_id for s in started}

        async def all_final() -> list[Any] | None:
            rows = await rows_of(engine, service_id)
            return rows if sum(r.status in FINAL for r in rows) >= ANALYSES else None

        try:
            rows = await eventually(
                all_final, "all 1,000 analyses final", ALL_FINAL_WITHIN, every=0.1
            )
        except AssertionError:
            statuses = Counter(r.status for r in await rows_of(engine, service_id))
            callback_statuses = Counter(c.status for c in service.sent)
            raise AssertionError(
                f"not all final within {ALL_FINAL_WITHIN} s: {dict(statuses)}; service got "
                f"{len(service.received)} requests, callbacks {dict(callback_statuses)}"
            ) from None
        final_took = time.monotonic() - began

        async def attempts_recorded() -> dict[int, list[tuple[str, Any]]] | None:
            found = await attempts_of(engine, ids)
            done = all(found.get(i) and found[i][-1][0] != "sending" for i in ids)
            return found if done else None

        attempts = await eventually(
            attempts_recorded, "every send's answer recorded", 60, every=0.1
        )

        async def all_ended_seen() -> bool:
            return ids <= log.ended

        await eventually(
            all_ended_seen, "an event saying each analysis ended", EVENTS_WITHIN, every=0.1
        )

        async def outbox_drained() -> bool:
            return await outbox_holds(engine, ids) == 0

        await eventually(outbox_drained, "the outbox relayed every analysis event", 60, every=0.1)
        barrier = uuid.uuid4().hex
        await publish_barrier(barrier)

        async def barrier_seen() -> bool:
            return barrier in log.barriers

        await eventually(barrier_seen, "the barrier behind every event", EVENTS_WITHIN, every=0.1)
        received, sent = list(service.received), list(service.sent)
    events = log.distinct(ids)
    print(
        f"\n{deployment}: {ANALYSES} starts by {CLIENTS} clients in {starts_took:.1f} s, "
        f"all final after {final_took:.1f} s; {len(log.deliveries)} event deliveries, "
        f"{len(events)} distinct: {dict(Counter(e.routing_key for e in events))}; "
        f"AMQP messages by content type: {dict(log.wire)}"
    )

    # Every row completed, with the results of its own source stored.
    assert {r.id for r in rows} == ids
    assert Counter(r.status for r in rows) == {"completed": ANALYSES}
    for row in rows:
        assert row.obj_id == obj_of[row.id]
        assert row.status_message == f"fit of {row.obj_id}"
        assert row.data_summary["message"] == f"fit of {row.obj_id}"
        assert row.data_summary["n_detections"] == VISIBLE_POINTS
        assert row.data_summary["model_name"] == "gaussian"
        assert row.artifacts.get("results"), row.artifacts
        assert len(row.artifacts.get("plots", [])) == 1, row.artifacts
    # …readable through the API: the results each service call sent back.
    results = await by_clients(
        astro,
        [("GET", f"{pipeline.gateway_url}/api/obj/analysis/{i}/results") for i in sorted(ids)],
    )
    wrong = [
        (i, status, body)
        for i, (status, body) in zip(sorted(ids), results, strict=True)
        if status != 200 or body["data"] != {"obj_id": obj_of[i], "points": VISIBLE_POINTS}
    ]
    assert not wrong, f"{len(wrong)} analyses without their results, e.g. {wrong[:3]}"

    # The service got each analysis exactly once: the callback token is derived from the
    # analysis, so a re-send would repeat it.
    analysis_of_hash = {r.token_hash: r.id for r in rows}
    tokens = Counter(call.callback_url.rsplit("/", 1)[1] for call in received)
    repeated = {t: n for t, n in tokens.items() if n > 1}
    assert not repeated, (
        f"{len(repeated)} analyses sent more than once: {sorted(repeated.values())}"
    )
    assert len(received) == ANALYSES
    sent_for = {analysis_of_hash.get(hash_token(token)) for token in tokens}
    assert sent_for == ids
    for call in received:
        token = call.callback_url.rsplit("/", 1)[1]
        assert call.payload["resource_id"] == obj_of[analysis_of_hash[hash_token(token)]]
    # …and skyhook recorded one send, accepted, for each.
    attempt_shapes = Counter(tuple(found) for found in attempts.values())
    assert attempt_shapes == {(("accepted", 200),): ANALYSES}, attempt_shapes

    # One callback per analysis, accepted.
    callbacks = Counter(c.url.rsplit("/", 1)[1] for c in sent)
    assert set(callbacks) == set(tokens)
    assert set(callbacks.values()) == {1}, Counter(callbacks.values())
    assert Counter(c.status for c in sent) == {200: ANALYSES}, [
        (c.status, c.reply) for c in sent if c.status != 200
    ][:5]

    # Events: exactly one completed per analysis (matching its row), none ended otherwise,
    # each requested at least once.
    per_key: dict[str, Counter[int]] = defaultdict(Counter)
    for event in events:
        per_key[event.routing_key][event.payload["analysis_id"]] += 1
    completed = per_key["analysis.completed"]
    assert set(completed) == ids
    twice = {i: n for i, n in completed.items() if n != 1}
    assert not twice, f"analyses with several distinct completed events: {twice}"
    for key in ENDED_OTHERWISE:
        assert not per_key[key], f"{key} for {sorted(per_key[key])[:10]}"
    assert set(per_key["analysis.requested"]) == ids
    for event in events:
        if event.routing_key == "analysis.completed":
            analysis_id = event.payload["analysis_id"]
            assert event.payload == {
                "analysis_id": analysis_id,
                "obj_id": obj_of[analysis_id],
                "analysis_service_id": service_id,
                "status": "completed",
                "is_summary": False,
            }


# --- the two deployments -------------------------------------------------------------------------


@pytest.fixture
async def own_pg_database_url() -> AsyncIterator[str]:
    """A database of this test's own: its 1,000 analyses must not crowd the database the API
    tests share (an admin's unpaginated list is bounded)."""
    name = f"skyhook_test_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    url = _dsn(name).replace("postgresql://", "postgresql+asyncpg://")
    try:
        await upgrade_async(url)
        yield url
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_split_postgresql_rabbitmq_completes_each_of_1000_exactly_once(
    own_pg_database_url: str, tmp_path: Path, bus_prefix: str, products: Products
) -> None:
    pg_database_url = own_pg_database_url
    # Pools kept small (the server is shared); the dispatch timeout is the production default,
    # not the harness's 5 s for retry tests: this test is about concurrency, not slow answers.
    settings: dict[str, Any] = {
        "max_analyses_per_obj_per_user": CAP,
        "dispatch_timeout_seconds": 30.0,
        "db_pool_size": 4,
        "db_max_overflow": 4,
    }
    engine = create_engine(pg_database_url, pool_size=1, max_overflow=1)
    try:
        async with (
            running_pipeline(
                pg_database_url, tmp_path / "artifacts", bus_prefix, **settings
            ) as pipeline,
            rabbit_events(bus_prefix) as (log, publish_barrier),
        ):
            await run_and_check(pipeline, engine, log, publish_barrier, products, "split")
    finally:
        await engine.dispose()


async def test_embedded_sqlite_memory_bus_completes_each_of_1000_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, products: Products
) -> None:
    async with running_embedded(tmp_path / "run", monkeypatch) as embedded:
        log = EventLog()
        bus = embedded.resources.bus
        await bus.listen(["analysis.*", BARRIER_KEY], log.on_envelope)

        async def publish_barrier(barrier: str) -> None:
            await bus.publish([Envelope(uuid.uuid4().hex, BARRIER_KEY, {"barrier": barrier})])

        engine = create_engine(embedded.pipeline.settings.database_url)
        try:
            await run_and_check(
                embedded.pipeline, engine, log, publish_barrier, products, "embedded"
            )
        finally:
            await engine.dispose()
