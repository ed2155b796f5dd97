"""The whole pipeline for end-to-end tests, and a client that uses it only through HTTP.

Each service runs as the composition root runs it in its own process (``run_service``): the
gateway, the webhook receiver and the dispatcher each open their own resources (database
engine, RabbitMQ connection, outbox relay) and listen on their own 127.0.0.1 port. RabbitMQ
names carry a prefix unique to the test, and the test's exchanges and queues are deleted
afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.exceptions import ChannelClosed

from shared.runtime.settings import Settings, load_settings
from skyhook.composition import run_service
from skyhook.provision import create_token
from tests.support.api import ApiClient, ok
from tests.support.polling import eventually
from tests.support.ports import free_port

AMQP_URL = os.environ.get("SKYHOOK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SECRET_KEY = "e2e-secret-key"
DISPATCHER_QUEUE = "dispatcher"
FINAL = frozenset({"completed", "failure", "timed_out", "cancelled"})
# Short delays so retries, expiry and reaping happen within a test.
FAST: dict[str, Any] = {
    "dispatch_retry_delays_seconds": [0.3, 0.3, 0.5, 1.0, 1.0, 2.0, 2.0],
    "dispatch_poll_interval_seconds": 0.05,
    "dispatch_timeout_seconds": 5.0,
    "dispatch_reap_margin_seconds": 1.0,
    "sweep_interval_seconds": 0.25,
}


def pipeline_settings(
    database_url: str, artifact_dir: Path, prefix: str, webhook_port: int, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "amqp_url": AMQP_URL,
        "bus_prefix": prefix,
        "public_url": f"http://127.0.0.1:{webhook_port}",
        "artifact_dir": artifact_dir,
        "secret_key": SECRET_KEY,
        "allow_loopback_urls": True,
        "allow_private_urls": True,
        "host": "127.0.0.1",
        **FAST,
        **overrides,
    }
    return load_settings(None, **values)


# --- RabbitMQ names of one test ---------------------------------------------------------------


def rabbit_names(prefix: str) -> tuple[list[str], list[str]]:
    """(queues, exchanges) a pipeline with this prefix declares."""
    queues = [
        f"{prefix}.{DISPATCHER_QUEUE}",
        f"{prefix}.default_analyses",
        f"{prefix}.summaries",
        f"{prefix}.dead-letter",
    ]
    exchanges = [f"{prefix}.events", f"{prefix}.dead-letter"]
    return queues, exchanges


async def delete_rabbit_names(queues: Iterable[str], exchanges: Iterable[str]) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        for name in queues:
            channel = await connection.channel()
            await channel.queue_delete(name)
            await channel.close()
        for name in exchanges:
            channel = await connection.channel()
            await channel.exchange_delete(name)
            await channel.close()
    finally:
        await connection.close()


async def wait_for_queue(name: str, within: float = 20.0) -> None:
    """Until the queue exists (its consumer declared it)."""
    connection = await aio_pika.connect(AMQP_URL)
    try:

        async def declared() -> bool:
            channel = await connection.channel()
            try:
                await channel.declare_queue(name, passive=True)
            except ChannelClosed:
                return False
            await channel.close()
            return True

        await eventually(declared, f"queue {name} to be declared", within)
    finally:
        await connection.close()


async def wait_listening(port: int, task: asyncio.Task[None] | None, within: float = 20) -> None:
    async def listening() -> bool:
        if task is not None and task.done():
            task.result()  # raises what stopped the service
            raise AssertionError(f"the service for port {port} stopped")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    await eventually(listening, f"something to listen on port {port}", within)


# --- a user of the HTTP API -------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    name: str
    token: str


@dataclass(frozen=True)
class Source:
    obj_id: str
    instrument_id: int
    visible_points: int
    hidden_points: int


class Pipeline:
    """The running services and what a user does with them."""

    def __init__(self, settings: Settings, gateway_url: str) -> None:
        self.settings = settings
        self.gateway_url = gateway_url
        self.http = ApiClient.at(gateway_url)
        self.prefix = settings.bus_prefix

    # --- accounts (the operator's `skyhook token create`) ---

    async def user(self, acls: Iterable[str], groups: Iterable[str]) -> User:
        name = f"user-{uuid.uuid4().hex[:8]}"
        provisioning = self.settings.model_copy(update={"amqp_url": "memory://"})
        token = await create_token(provisioning, name, acls=list(acls), groups=list(groups))
        return User(name, token)

    async def group_ids(self, user: User, names: Iterable[str]) -> list[int]:
        groups = ok(await self.http.get("/api/groups", user))["user_groups"]
        by_name = {g["name"]: g["id"] for g in groups}
        return [by_name[n] for n in names]

    # --- data ---

    async def source_with_photometry(
        self, owner: User, group: str, outsider: User, outsider_group: str
    ) -> Source:
        """A source both users can see; four points of the owner's group, two that only the
        outsider's group may see (they must never reach a service started by the owner)."""
        (group_id,) = await self.group_ids(owner, [group])
        (other_id,) = await self.group_ids(outsider, [outsider_group])
        instrument = {"name": f"ZTF-{uuid.uuid4().hex[:6]}", "filters": ["ztfg", "ztfr"]}
        instrument_id = ok(await self.http.post("/api/instrument", owner, instrument))["id"]
        obj_id = f"ZTF24{uuid.uuid4().hex[:8]}"
        source = {"id": obj_id, "ra": 150.1, "dec": 2.2, "group_ids": [group_id, other_id]}
        ok(await self.http.post("/api/sources", outsider, source))
        visible = {
            "obj_id": obj_id,
            "instrument_id": instrument_id,
            "mjd": [59001.5, 59003.25, 59010.0, 59012.75],
            "filter": ["ztfg", "ztfr", "ztfg", "ztfr"],
            "flux": [120.0, 250.5, 310.25, 95.0],
            "fluxerr": [5.0, 7.5, 6.0, 4.0],
            "zp": 25.0,
            "magsys": "ab",
            "group_ids": [group_id],
        }
        ok(await self.http.post("/api/photometry", owner, visible))
        hidden = {**visible, "mjd": [59020.0, 59021.0], "filter": ["ztfg", "ztfg"]}
        hidden.update(flux=[999.0, 998.0], fluxerr=[1.0, 1.0], group_ids=[other_id])
        ok(await self.http.post("/api/photometry", outsider, hidden))
        return Source(obj_id, instrument_id, visible_points=4, hidden_points=2)

    # --- services and analyses ---

    async def register(self, manager: User, group: str, url: str, **fields: Any) -> int:
        (group_id,) = await self.group_ids(manager, [group])
        body = {
            "name": f"svc-{uuid.uuid4().hex[:8]}",
            "display_name": "E2E fitter",
            "url": url,
            "authentication_type": "none",
            "analysis_type": "lightcurve_fitting",
            "input_data_types": ["photometry"],
            "timeout": 120.0,
            "group_ids": [group_id],
            **fields,
        }
        return int(ok(await self.http.post("/api/analysis_service", manager, body))["id"])

    async def start(self, user: User, obj_id: str, service_id: int, **body: Any) -> int:
        reply = await self.http.post(f"/api/obj/{obj_id}/analysis/{service_id}", user, body)
        return int(ok(reply)["id"])

    async def analysis(self, user: User, analysis_id: int, **query: str) -> dict[str, Any]:
        return dict(ok(await self.http.get(f"/api/obj/analysis/{analysis_id}", user, params=query)))

    async def attempts(self, user: User, analysis_id: int) -> list[dict[str, Any]]:
        return list(ok(await self.http.get(f"/api/obj/analysis/{analysis_id}/attempts", user)))

    async def wait_final(
        self, user: User, analysis_id: int, within: float = 20.0
    ) -> dict[str, Any]:
        """Poll GET /api/obj/analysis/<id> until the analysis is final."""
        seen: list[dict[str, Any]] = []

        async def final() -> dict[str, Any] | None:
            seen.append(await self.analysis(user, analysis_id))
            return seen[-1] if seen[-1]["status"] in FINAL else None

        try:
            return await eventually(final, f"analysis {analysis_id} to be final", within)
        except AssertionError:
            last = seen[-1]
            raise AssertionError(
                f"analysis {analysis_id} still {last['status']!r} after {within} s: "
                f"{last['status_message']!r}"
            ) from None


@contextlib.asynccontextmanager
async def running_services(
    settings: Settings, names: Iterable[str], ports: dict[str, int]
) -> AsyncIterator[None]:
    """Each named service as ``skyhook <name>`` runs it, as a task of this event loop."""
    tasks: dict[str, asyncio.Task[None]] = {}
    try:
        for name in names:
            service_settings = settings.model_copy(update={"port": ports[name]})
            tasks[name] = asyncio.create_task(run_service(name, service_settings), name=name)
        for name, task in tasks.items():
            if name != "dispatcher":
                await wait_listening(ports[name], task)
        yield
    finally:
        for task in tasks.values():
            task.cancel()
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        failures = [r for r in results if not isinstance(r, asyncio.CancelledError | type(None))]
        if failures:
            raise failures[0]


@contextlib.asynccontextmanager
async def running_pipeline(
    database_url: str,
    artifact_dir: Path,
    prefix: str,
    *,
    services: Iterable[str] = ("dispatcher", "gateway", "webhook-receiver"),
    **overrides: Any,
) -> AsyncIterator[Pipeline]:
    ports = {name: free_port() for name in ("gateway", "webhook-receiver", "dispatcher")}
    settings = pipeline_settings(
        database_url, artifact_dir, prefix, ports["webhook-receiver"], **overrides
    )
    pipeline = Pipeline(settings, f"http://127.0.0.1:{ports['gateway']}")
    try:
        async with running_services(settings, services, ports):
            if "dispatcher" in services:
                await wait_for_queue(f"{prefix}.{DISPATCHER_QUEUE}")
            yield pipeline
    finally:
        await pipeline.http.close()
        await delete_rabbit_names(*rabbit_names(prefix))
