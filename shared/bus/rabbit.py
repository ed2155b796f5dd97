"""The RabbitMQ bus (aio-pika): durable topic exchange, quorum queues, dead letters.

Topology, for a ``prefix`` of ``skyhook`` (as seen in the management console):

- ``skyhook.events``: durable topic exchange every message is published to. Its alternate
  exchange is the dead-letter exchange, so a message no queue is bound to is kept, not dropped.
- ``skyhook.<queue>``: one durable quorum queue per ``declare``/``subscribe`` name (the prefix
  is added unless the name already starts with it), bound to the exchange with the given topic
  patterns; ``x-delivery-limit`` counts failed deliveries and a message that fails more often
  is dead-lettered (``x-dead-letter-strategy: at-least-once``, which needs
  ``x-overflow: reject-publish``).
- ``skyhook.dead-letter``: durable topic exchange and, bound to it with ``#``, a durable
  classic queue of the same name. Classic on purpose: listing dead letters takes them and puts
  them back, which a quorum queue would count as failed deliveries.

Publishing uses a channel in confirm mode: a batch is written at once and ``publish`` returns
when the broker has confirmed every message (persistent, JSON, with ``message_id``). Each
subscription has its own channel with ``basic_qos(prefetch)``. ``connect_robust`` reconnects
after a broker restart and restores the channels, queues, bindings and consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from shared.bus.base import BusUnavailable, Envelope, MessageHandler, redelivery_delay

log = logging.getLogger("skyhook.bus.rabbit")

JSON = "application/json"
UNDECODABLE_HEADER = "x-skyhook-undecodable"


@dataclass(frozen=True)
class _Subscription:
    channel: AbstractChannel
    queue: AbstractQueue
    consumer_tag: str


class RabbitBus:
    def __init__(
        self,
        amqp_url: str,
        *,
        prefix: str = "skyhook",
        exchange: str | None = None,
        dead_letter_exchange: str | None = None,
        delivery_limit: int = 5,
        redelivery_delay: float = 0.5,
        max_redelivery_delay: float = 30.0,
        publish_timeout: float = 15.0,
        close_timeout: float = 10.0,
        reconnect_interval: float = 2.0,
        connection_name: str | None = None,
    ) -> None:
        self._url = amqp_url
        self.prefix = prefix
        self.exchange = exchange or f"{prefix}.events"
        self.dead_letter_exchange = dead_letter_exchange or f"{prefix}.dead-letter"
        self.dead_letter_queue = self.dead_letter_exchange
        self.delivery_limit = delivery_limit
        self.redelivery_delay = redelivery_delay
        self.max_redelivery_delay = max_redelivery_delay
        self.publish_timeout = publish_timeout
        self.close_timeout = close_timeout
        self.reconnect_interval = reconnect_interval
        self.connection_name = connection_name or f"{prefix} pid {os.getpid()}"
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._subscriptions: list[_Subscription] = []
        self._in_flight: set[asyncio.Task[Any]] = set()
        self.declared_queues: set[str] = set()

    def queue_name(self, queue: str) -> str:
        """``dispatcher`` → ``skyhook.dispatcher``; a name already under the prefix stays."""
        if queue.startswith(f"{self.prefix}."):
            return queue
        return f"{self.prefix}.{queue}"

    def queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def start(self) -> None:
        if self._connection is not None:
            return
        connection = await aio_pika.connect_robust(
            self._url,
            client_properties={"connection_name": self.connection_name},
            reconnect_interval=self.reconnect_interval,
        )
        try:
            channel = await connection.channel(publisher_confirms=True)
            dead_letters = await channel.declare_exchange(
                self.dead_letter_exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(self.dead_letter_queue, durable=True)
            await queue.bind(dead_letters, "#")
            self._exchange = await channel.declare_exchange(
                self.exchange,
                aio_pika.ExchangeType.TOPIC,
                durable=True,
                arguments={"alternate-exchange": self.dead_letter_exchange},
            )
        except BaseException:
            await connection.close()
            raise
        self._connection, self._channel = connection, channel
        log.info("connected to RabbitMQ as %r", self.connection_name)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.queue.cancel(subscription.consumer_tag)
        self._subscriptions.clear()
        await self._finish_in_flight()
        self._channel = self._exchange = None
        await connection.close()

    async def _finish_in_flight(self) -> None:
        """Let running handlers finish (briefly); the broker requeues what they leave unacked."""
        running = set(self._in_flight)
        if running:
            _, late = await asyncio.wait(running, timeout=self.close_timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def declare(self, queue: str, routing_keys: Sequence[str]) -> None:
        await self._declare(self._require_channel(), queue, routing_keys)

    async def _declare(
        self, channel: AbstractChannel, queue: str, routing_keys: Sequence[str]
    ) -> AbstractQueue:
        name = self.queue_name(queue)
        declared = await channel.declare_queue(name, durable=True, arguments=self.queue_arguments())
        for routing_key in routing_keys:
            await declared.bind(self.exchange, routing_key)
        self.declared_queues.add(name)
        return declared

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if not envelopes:
            return
        exchange = self._require_exchange()
        results = await asyncio.gather(
            *(self._publish_one(exchange, e) for e in envelopes), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise BusUnavailable(
                f"{len(failures)} of {len(envelopes)} messages not confirmed: {failures[0]!r}"
            ) from failures[0]

    async def _publish_one(self, exchange: AbstractExchange, envelope: Envelope) -> None:
        message = aio_pika.Message(
            json.dumps(envelope.payload, separators=(",", ":")).encode(),
            content_type=JSON,
            content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=envelope.message_id,
            headers=envelope.headers or None,
            timestamp=datetime.now(UTC),
            app_id=self.prefix,
        )
        await self._send(exchange, message, envelope.routing_key)

    async def _send(
        self, exchange: AbstractExchange, message: aio_pika.Message, routing_key: str
    ) -> None:
        async with asyncio.timeout(self.publish_timeout):
            await exchange.publish(message, routing_key, mandatory=False)

    async def subscribe(
        self,
        queue: str,
        routing_keys: Sequence[str],
        handler: MessageHandler,
        *,
        prefetch: int = 32,
    ) -> None:
        connection = self._require_connection()
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=max(1, prefetch))
        declared = await self._declare(channel, queue, routing_keys)
        tag = await declared.consume(partial(self._deliver, handler))
        self._subscriptions.append(_Subscription(channel, declared, tag))

    async def listen(self, routing_keys: Sequence[str], handler: MessageHandler) -> None:
        connection = self._require_connection()
        channel = await connection.channel(publisher_confirms=False)
        # A server-named classic queue, exclusive to this connection: deleted when it closes.
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True, durable=False)
        for routing_key in routing_keys:
            await queue.bind(self.exchange, routing_key)
        tag = await queue.consume(partial(self._notify, handler), no_ack=True)
        self._subscriptions.append(_Subscription(channel, queue, tag))

    async def _notify(self, handler: MessageHandler, message: AbstractIncomingMessage) -> None:
        try:
            await handler(envelope_of(message))
        except Exception:
            log.exception("listener failed for %s", message.routing_key)

    async def _deliver(self, handler: MessageHandler, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._handle(handler, message)
        finally:
            self._in_flight.discard(task)  # type: ignore[arg-type]

    async def _handle(self, handler: MessageHandler, message: AbstractIncomingMessage) -> None:
        try:
            envelope = envelope_of(message)
        except ValueError as exc:
            log.error("rejecting undecodable message %s: %s", message.message_id, exc)
            await _settle(message.reject(requeue=False))
            return
        try:
            await handler(envelope)
        except Exception:
            log.exception("handler failed for %s %s", envelope.routing_key, envelope.message_id)
            await asyncio.sleep(
                redelivery_delay(
                    envelope.delivery_count, self.redelivery_delay, self.max_redelivery_delay
                )
            )
            await _settle(message.nack(requeue=True))
            return
        await _settle(message.ack())

    async def list_dead_letters(self, limit: int = 100) -> list[Envelope]:
        async with self._dead_letter_channel() as queue:
            held = await _take(queue, max(0, limit))
            try:
                return [dead_letter_envelope(m) for m in held]
            finally:
                for message in held:
                    await message.nack(requeue=True)

    async def replay_dead_letters(self, message_ids: Sequence[str] | None = None) -> int:
        wanted = None if message_ids is None else set(message_ids)
        exchange = self._require_exchange()
        async with self._dead_letter_channel() as queue:
            # Only what is there now: a replayed message that dies again is not replayed twice.
            held = await _take(queue, queue.declaration_result.message_count or 0)
            chosen = [m for m in held if wanted is None or m.message_id in wanted]
            chosen_tags = {m.delivery_tag for m in chosen}
            for message in held:
                if message.delivery_tag not in chosen_tags:
                    await message.nack(requeue=True)
            results = await asyncio.gather(
                *(
                    self._send(exchange, _replay_message(m), _original_routing_key(m))
                    for m in chosen
                ),
                return_exceptions=True,
            )
            for message, result in zip(chosen, results, strict=True):
                settle = (
                    message.nack(requeue=True)
                    if isinstance(result, BaseException)
                    else message.ack()
                )
                await _settle(settle)
        failures = [r for r in results if isinstance(r, BaseException)]
        log.info("replayed %d dead letters", len(chosen) - len(failures))
        if failures:
            raise BusUnavailable(f"{len(failures)} dead letters not replayed: {failures[0]!r}")
        return len(chosen)

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and self._connection.connected.is_set()

    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each queue this process declared, and in the dead letters."""
        channel = await self._require_connection().channel(publisher_confirms=False)
        depths: dict[str, int] = {}
        try:
            for name in sorted({*self.declared_queues, self.dead_letter_queue}):
                queue = await channel.declare_queue(name, passive=True, robust=False)
                depths[name] = int(queue.declaration_result.message_count or 0)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return depths

    @contextlib.asynccontextmanager
    async def _dead_letter_channel(self) -> AsyncIterator[AbstractQueue]:
        """A short-lived channel: whatever it still holds goes back to the queue on close."""
        channel = await self._require_connection().channel(publisher_confirms=False)
        try:
            yield await channel.declare_queue(self.dead_letter_queue, passive=True, robust=False)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    def _require_connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BusUnavailable("the bus is not started")
        if not self._connection.connected.is_set():
            raise BusUnavailable("not connected to RabbitMQ (reconnecting)")
        return self._connection

    def _require_channel(self) -> AbstractChannel:
        self._require_connection()
        assert self._channel is not None
        return self._channel

    def _require_exchange(self) -> AbstractExchange:
        self._require_connection()
        assert self._exchange is not None
        return self._exchange


async def _settle(settling: Any) -> None:
    """Ack/nack/reject; if the channel is gone the broker redelivers, so only log it."""
    try:
        await settling
    except Exception as exc:
        log.warning("could not settle a message (it will be redelivered): %r", exc)


async def _take(queue: AbstractQueue, limit: int) -> list[AbstractIncomingMessage]:
    """Get up to ``limit`` messages without acknowledging them (oldest first)."""
    held: list[AbstractIncomingMessage] = []
    while len(held) < limit:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        held.append(message)
    return held


def envelope_of(message: AbstractIncomingMessage) -> Envelope:
    try:
        payload = json.loads(message.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError("body is not a JSON object")
    headers = {str(k): _plain(v) for k, v in (message.headers or {}).items()}
    count = headers.get("x-delivery-count")
    return Envelope(
        message_id=message.message_id or "",
        routing_key=message.routing_key or "",
        payload=payload,
        headers=headers,
        delivery_count=count if isinstance(count, int) else 0,
    )


def dead_letter_envelope(message: AbstractIncomingMessage) -> Envelope:
    """As ``envelope_of``, with the routing key the message had before it died."""
    headers = {str(k): _plain(v) for k, v in (message.headers or {}).items()}
    try:
        payload = envelope_of(message).payload
    except ValueError as exc:
        payload, headers = {}, {**headers, UNDECODABLE_HEADER: str(exc)}
    return Envelope(message.message_id or "", _original_routing_key(message), payload, headers)


def _original_routing_key(message: AbstractIncomingMessage) -> str:
    # x-death lists the most recent death first; a message the alternate exchange caught
    # (no queue was bound) has no x-death and keeps its routing key.
    deaths = (message.headers or {}).get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[0], dict):
        keys = deaths[0].get("routing-keys")
        if isinstance(keys, list | tuple) and keys:
            return str(_plain(keys[0]))
    return message.routing_key or ""


def _replay_message(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The original message, as first published: same body and id, no death headers."""
    headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-")}
    return aio_pika.Message(
        message.body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        headers=headers or None,
        timestamp=message.timestamp,
        app_id=message.app_id,
    )


def _plain(value: Any) -> Any:
    """AMQP header values as JSON-friendly Python (x-death holds timestamps and byte strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return value
