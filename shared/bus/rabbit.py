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

Publishing uses a channel in confirm mode: ``publish`` groups the envelopes by routing key into
batch messages of up to ``max_batch_events`` events and ``max_batch_bytes`` (the wire format is
in ``wire.py``), writes them at once and returns when the broker has confirmed every message.
Each subscription has its own channel with ``basic_qos(prefetch)``; ``connect_robust``
reconnects after a broker restart and restores the channels, queues, bindings and consumers.

A consumer splits a batch and hands its events to the handler concurrently, at most
``prefetch`` events of the subscription at once (so with ``prefetch=1`` one by one, in order),
then acknowledges the batch once. The broker only sees the batch, so the events that failed are
counted by the consumer: before the ack they are sent, after the redelivery delay, straight back
to the same queue as a smaller batch with ``delivery_count`` + 1, or, past ``delivery_limit``,
each alone to the dead-letter exchange with the death headers the broker would set. If that
fails the whole batch goes back to the queue (its handled events come again: handlers are
idempotent). Single-event messages (older publishers, operators) are handled as before: the
broker counts their failures and dead-letters them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, replace
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

from shared.bus.base import (
    DEATH_QUEUE_HEADER,
    DEATH_REASON_HEADER,
    DELIVERY_LIMIT_REASON,
    BusUnavailable,
    Envelope,
    Listening,
    MessageHandler,
    redelivery_delay,
)
from shared.bus.wire import (
    BATCH_CONTENT_TYPE,
    JSON,
    UNDECODABLE_HEADER,
    batch_bodies,
    dead_letter_envelopes,
    encode_item,
    envelope_of,
    envelopes_of,
    is_batch,
    original_routing_key,
    pack,
)

log = logging.getLogger("skyhook.bus.rabbit")


@dataclass(frozen=True)
class _Subscription:
    channel: AbstractChannel
    queue: AbstractQueue
    consumer_tag: str


@dataclass(frozen=True)
class _Consumer:
    queue: str
    handler: MessageHandler
    # Events of this subscription being handled at once, across the batches it holds.
    slots: asyncio.Semaphore


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
        max_batch_events: int = 100,
        max_batch_bytes: int = 256 * 1024,
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
        self.max_batch_events = max(1, max_batch_events)
        self.max_batch_bytes = max_batch_bytes
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._dead_letters: AbstractExchange | None = None
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
        self._connection, self._channel, self._dead_letters = connection, channel, dead_letters
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
        self._channel = self._exchange = self._dead_letters = None
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
        bodies = batch_bodies(envelopes, self.max_batch_events, self.max_batch_bytes)
        results = await asyncio.gather(
            *(self._send(exchange, self._batch_message(body), key) for key, body in bodies),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise BusUnavailable(
                f"{len(failures)} of {len(bodies)} messages ({len(envelopes)} events) not "
                f"confirmed: {failures[0]!r}"
            ) from failures[0]

    def _batch_message(self, body: bytes) -> aio_pika.Message:
        return aio_pika.Message(
            body,
            content_type=BATCH_CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=datetime.now(UTC),
            app_id=self.prefix,
        )

    def _single_message(self, envelope: Envelope) -> aio_pika.Message:
        return aio_pika.Message(
            json.dumps(envelope.payload, separators=(",", ":")).encode(),
            content_type=JSON,
            content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=envelope.message_id,
            headers=envelope.headers or None,
            timestamp=datetime.now(UTC),
            app_id=self.prefix,
        )

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
        consumer = _Consumer(declared.name, handler, asyncio.Semaphore(max(1, prefetch)))
        tag = await declared.consume(partial(self._deliver, consumer))
        self._subscriptions.append(_Subscription(channel, declared, tag))

    async def listen(self, routing_keys: Sequence[str], handler: MessageHandler) -> Listening:
        connection = self._require_connection()
        channel = await connection.channel(publisher_confirms=False)
        # A server-named classic queue, exclusive to this connection: deleted when it closes.
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True, durable=False)
        for routing_key in routing_keys:
            await queue.bind(self.exchange, routing_key)
        tag = await queue.consume(partial(self._notify, handler), no_ack=True)
        subscription = _Subscription(channel, queue, tag)
        self._subscriptions.append(subscription)
        return Listening(partial(self._stop_listening, subscription))

    async def _stop_listening(self, subscription: _Subscription) -> None:
        if subscription not in self._subscriptions:
            return  # already stopped, or the bus closed
        self._subscriptions.remove(subscription)
        await subscription.queue.cancel(subscription.consumer_tag)
        await subscription.queue.delete(if_unused=False, if_empty=False)
        await subscription.channel.close()

    async def _notify(self, handler: MessageHandler, message: AbstractIncomingMessage) -> None:
        try:
            events = envelopes_of(message)
        except ValueError as exc:
            log.error("listener got an undecodable message on %s: %s", message.routing_key, exc)
            return
        for envelope in events:
            try:
                await handler(envelope)
            except Exception:
                log.exception("listener failed for %s", envelope.routing_key)

    async def _deliver(self, consumer: _Consumer, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            if is_batch(message):
                await self._handle_batch(consumer, message)
            else:
                await self._handle(consumer, message)
        finally:
            self._in_flight.discard(task)

    async def _handle(self, consumer: _Consumer, message: AbstractIncomingMessage) -> None:
        """A single-event message: the broker counts its failures and dead-letters it."""
        try:
            envelope = envelope_of(message)
        except ValueError as exc:
            log.error("rejecting undecodable message %s: %s", message.message_id, exc)
            await _settle(message.reject(requeue=False))
            return
        if await self._run(consumer, envelope):
            await _settle(message.ack())
            return
        await asyncio.sleep(self._delay(envelope.delivery_count))
        await _settle(message.nack(requeue=True))

    async def _handle_batch(self, consumer: _Consumer, message: AbstractIncomingMessage) -> None:
        try:
            events = envelopes_of(message)
        except ValueError as exc:
            log.error("rejecting undecodable batch on %s: %s", message.routing_key, exc)
            await _settle(message.reject(requeue=False))
            return
        handled = await asyncio.gather(*(self._run(consumer, e) for e in events))
        failed = [e for e, ok in zip(events, handled, strict=True) if not ok]
        if failed:
            try:
                await self._retry_or_bury(consumer.queue, failed)
            except Exception as exc:
                log.warning(
                    "could not hand back %d failed events (%r); the whole batch of %d comes back",
                    len(failed),
                    exc,
                    len(events),
                )
                await _settle(message.nack(requeue=True))
                return
        await _settle(message.ack())

    async def _run(self, consumer: _Consumer, envelope: Envelope) -> bool:
        """Handle one event; False if the handler raised."""
        async with consumer.slots:
            try:
                await consumer.handler(envelope)
            except Exception:
                log.exception("handler failed for %s %s", envelope.routing_key, envelope.message_id)
                return False
        return True

    def _delay(self, delivery_count: int) -> float:
        return redelivery_delay(delivery_count, self.redelivery_delay, self.max_redelivery_delay)

    async def _retry_or_bury(self, queue: str, failed: Sequence[Envelope]) -> None:
        """Failed events of a batch: back to ``queue`` with one more failure counted, or past the
        delivery limit each alone to the dead letters."""
        bury = [e for e in failed if e.delivery_count >= self.delivery_limit]
        retry = [e for e in failed if e.delivery_count < self.delivery_limit]
        counts = sorted({e.delivery_count for e in retry})
        await _all(
            *(self._bury(queue, e) for e in bury),
            *(self._retry(queue, [e for e in retry if e.delivery_count == n], n) for n in counts),
        )

    async def _retry(self, queue: str, events: Sequence[Envelope], count: int) -> None:
        await asyncio.sleep(self._delay(count))
        again = (
            replace(e, headers=_own_headers(e.headers), delivery_count=count + 1) for e in events
        )
        items = (encode_item(e, with_route=True) for e in again)
        # Straight to the queue (default exchange): the other queues bound to the key are done.
        exchange = self._require_channel().default_exchange
        await _all(
            *(
                self._send(exchange, self._batch_message(body), queue)
                for body in pack(items, self.max_batch_events, self.max_batch_bytes)
            )
        )

    async def _bury(self, queue: str, envelope: Envelope) -> None:
        deliveries = envelope.delivery_count + 1
        log.error("dead-lettering %s after %d deliveries", envelope.message_id, deliveries)
        headers = {
            **_own_headers(envelope.headers),
            DEATH_QUEUE_HEADER: queue,
            DEATH_REASON_HEADER: DELIVERY_LIMIT_REASON,
        }
        message = self._single_message(replace(envelope, headers=headers))
        await self._send(self._require_dead_letters(), message, envelope.routing_key)

    async def list_dead_letters(self, limit: int = 100) -> list[Envelope]:
        listed: list[Envelope] = []
        async with self._dead_letter_channel() as queue:
            held: list[AbstractIncomingMessage] = []
            try:
                while len(listed) < limit:
                    taken = await _take(queue, 1)
                    if not taken:
                        break
                    held.extend(taken)
                    listed.extend(dead_letter_envelopes(taken[0]))
            finally:
                for message in held:
                    await message.nack(requeue=True)
        return listed[: max(0, limit)]

    async def replay_dead_letters(self, message_ids: Sequence[str] | None = None) -> int:
        """A dead-lettered batch is replayed event by event: the chosen events go back to their
        routing keys, the others back to the dead letters (at the end of the queue)."""
        wanted = None if message_ids is None else set(message_ids)
        async with self._dead_letter_channel() as queue:
            # Only what is there now: a replayed message that dies again is not replayed twice.
            held = await _take(queue, queue.declaration_result.message_count or 0)
            plans: list[tuple[AbstractIncomingMessage, list[Envelope], list[Envelope]]] = []
            for message in held:
                events = dead_letter_envelopes(message)
                chosen = [e for e in events if wanted is None or e.message_id in wanted]
                kept = [e for e in events if wanted is not None and e.message_id not in wanted]
                if chosen:
                    plans.append((message, chosen, kept))
                else:
                    await message.nack(requeue=True)
            results = await asyncio.gather(
                *(self._replay(*plan) for plan in plans), return_exceptions=True
            )
            for (message, _, _), result in zip(plans, results, strict=True):
                failed = isinstance(result, BaseException)
                await _settle(message.nack(requeue=True) if failed else message.ack())
        failures = [r for r in results if isinstance(r, BaseException)]
        replayed = sum(len(chosen) for _, chosen, _ in plans)
        log.info("replayed %d dead letters", replayed)
        if failures:
            raise BusUnavailable(f"{len(failures)} dead letters not replayed: {failures[0]!r}")
        return replayed

    async def _replay(
        self, message: AbstractIncomingMessage, chosen: list[Envelope], kept: list[Envelope]
    ) -> None:
        exchange = self._require_exchange()
        if not is_batch(message) or UNDECODABLE_HEADER in chosen[0].headers:
            await self._send(exchange, _replay_message(message), original_routing_key(message))
            return
        fresh = [replace(e, headers=_own_headers(e.headers)) for e in chosen]
        sends: list[Awaitable[None]] = [
            self._send(exchange, self._batch_message(body), key)
            for key, body in batch_bodies(fresh, self.max_batch_events, self.max_batch_bytes)
        ]
        dead_letters = self._require_dead_letters()
        sends += [
            self._send(dead_letters, self._batch_message(body), key)
            for key, body in batch_bodies(
                kept, self.max_batch_events, self.max_batch_bytes, with_route=True
            )
        ]
        await _all(*sends)

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

    def _require_dead_letters(self) -> AbstractExchange:
        self._require_connection()
        assert self._dead_letters is not None
        return self._dead_letters


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


async def _all(*awaitables: Awaitable[None]) -> None:
    """Await them all; then raise the first failure, if any (none is left running)."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _own_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """The publisher's headers, without those the broker or this bus added (``x-…``)."""
    return {k: v for k, v in headers.items() if not k.startswith("x-")}


def _replay_message(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The original message, as first published: same body and id, no death headers."""
    headers = _own_headers(dict(message.headers or {}))
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
