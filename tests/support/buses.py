"""Buses for tests: a recording handler, and RabbitMQ buses isolated by a unique name prefix."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aio_pika

from shared.bus.base import Envelope
from shared.bus.rabbit import RabbitBus


class Inbox:
    """A handler that records every delivery; ``fail_first`` deliveries of a message raise."""

    def __init__(self, *, fail_first: int = 0, hold: asyncio.Event | None = None) -> None:
        self.fail_first = fail_first
        self.always_fail: set[str] = set()
        self.hold = hold
        self.deliveries: list[Envelope] = []
        self.handled: list[Envelope] = []
        self._changed = asyncio.Condition()

    async def __call__(self, envelope: Envelope) -> None:
        await self._record(self.deliveries, envelope)
        if self.hold is not None:
            await self.hold.wait()
        attempts = sum(1 for d in self.deliveries if d.message_id == envelope.message_id)
        if envelope.message_id in self.always_fail or attempts <= self.fail_first:
            raise RuntimeError(f"handler refuses {envelope.message_id} (attempt {attempts})")
        await self._record(self.handled, envelope)

    async def _record(self, into: list[Envelope], envelope: Envelope) -> None:
        async with self._changed:
            into.append(envelope)
            self._changed.notify_all()

    def handled_ids(self) -> list[str]:
        return [e.message_id for e in self.handled]

    async def wait_until(self, condition: Callable[[], bool], within: float = 15.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(condition)

    async def wait_handled(self, count: int, within: float = 15.0) -> None:
        await self.wait_until(lambda: len(self.handled) >= count, within)


def envelopes(routing_key: str, count: int, **payload: Any) -> list[Envelope]:
    return [Envelope(str(uuid.uuid4()), routing_key, {"n": n, **payload}) for n in range(count)]


def rabbit_bus_for_tests(amqp_url: str, prefix: str, **options: Any) -> RabbitBus:
    """Fast redelivery and shutdown, a small delivery limit, a connection name tests can find."""
    defaults: dict[str, Any] = {
        "delivery_limit": 2,
        "redelivery_delay": 0.01,
        "max_redelivery_delay": 0.05,
        "close_timeout": 0.5,
        "reconnect_interval": 0.5,
        "publish_timeout": 5.0,
        "connection_name": f"{prefix}-{uuid.uuid4().hex[:6]}",
    }
    return RabbitBus(amqp_url, prefix=prefix, **{**defaults, **options})


async def delete_topology(amqp_url: str, buses: Iterable[RabbitBus]) -> None:
    """Delete every queue and exchange these buses declared (tests leave nothing behind)."""
    buses = list(buses)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queues = {q for bus in buses for q in bus.declared_queues}
        queues |= {bus.dead_letter_queue for bus in buses}
        exchanges = {bus.exchange for bus in buses} | {bus.dead_letter_exchange for bus in buses}
        for name in sorted(queues):
            await channel.queue_delete(name)
        for name in sorted(exchanges):
            await channel.exchange_delete(name)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def isolated_rabbit(amqp_url: str) -> AsyncIterator[Callable[..., RabbitBus]]:
    """Yields a factory of RabbitBus objects sharing one unique prefix; cleans up after."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    made: list[RabbitBus] = []

    def make(**options: Any) -> RabbitBus:
        bus = rabbit_bus_for_tests(amqp_url, prefix, **options)
        made.append(bus)
        return bus

    try:
        yield make
    finally:
        for bus in made:
            await bus.close()
        await delete_topology(amqp_url, made)


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


async def force_close_connection(connection_name: str) -> None:
    """Have the broker drop this client's connection, as a broker restart would."""
    listing = await asyncio.to_thread(
        rabbitmqctl, "list_connections", "pid", "client_properties", "--no-table-headers"
    )
    pids = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if f'{{"connection_name","{connection_name}"}}' in line
    ]
    if not pids:
        raise AssertionError(f"no broker connection named {connection_name!r}")
    for pid in pids:
        await asyncio.to_thread(rabbitmqctl, "close_connection", pid, "test: simulated outage")
