"""A raw aio-pika consumer beside the bus: what really travels on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from shared.bus.wire import BATCH_CONTENT_TYPE


class AmqpTap:
    """Counts the AMQP messages published to an exchange with a routing key, and their events.

    Bound with a queue of its own (exclusive, deleted with its connection), so it sees a copy of
    each message without taking any from the bus's queues.
    """

    def __init__(self) -> None:
        self.messages: list[AbstractIncomingMessage] = []
        self.events = 0
        self._changed = asyncio.Condition()

    @classmethod
    @contextlib.asynccontextmanager
    async def bound(cls, url: str, exchange: str, routing_key: str) -> AsyncIterator[AmqpTap]:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            await queue.bind(exchange, routing_key)
            tap = cls()
            await queue.consume(tap._record, no_ack=True)
            yield tap
        finally:
            await connection.close()

    async def _record(self, message: AbstractIncomingMessage) -> None:
        async with self._changed:
            self.messages.append(message)
            self.events += events_in(message)
            self._changed.notify_all()

    async def wait_events(self, count: int, within: float = 15.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.events >= count)


def events_in(message: AbstractIncomingMessage) -> int:
    if message.content_type == BATCH_CONTENT_TYPE:
        return len(json.loads(message.body))
    return 1


async def publish_single_event(
    url: str, exchange: str, routing_key: str, message_id: str, payload: dict[str, object]
) -> None:
    """Publish as older skyhook code (and operators) did: one event, its payload as the body."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        message = aio_pika.Message(
            json.dumps(payload).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
        )
        await target.publish(message, routing_key)
