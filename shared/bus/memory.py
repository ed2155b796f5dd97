"""The in-process bus (``memory://``): same contract as RabbitMQ, for ``skyhook run`` and tests.

Queues live as long as the bus object: closing stops the consumers (in-flight messages go back
to their queue) and a later ``start`` + ``subscribe`` picks them up again. Nothing survives the
process, which is why the outbox keeps every message in the database until it is published.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

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

log = logging.getLogger("skyhook.bus.memory")


@functools.lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` is zero or more words."""
    return _words_match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


def _words_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return head in ("*", words[0]) and _words_match(rest, words[1:])


@dataclass
class _Queue:
    name: str
    routing_keys: set[str]
    items: asyncio.Queue[Envelope] = field(default_factory=asyncio.Queue)
    consumers: list[asyncio.Task[None]] = field(default_factory=list)

    def accepts(self, routing_key: str) -> bool:
        return any(topic_matches(p, routing_key) for p in self.routing_keys)


class MemoryBus:
    def __init__(
        self,
        *,
        delivery_limit: int = 5,
        redelivery_delay: float = 0.05,
        max_redelivery_delay: float = 1.0,
    ) -> None:
        self.delivery_limit = delivery_limit
        self.redelivery_delay = redelivery_delay
        self.max_redelivery_delay = max_redelivery_delay
        self._queues: dict[str, _Queue] = {}
        self._dead_letters: list[Envelope] = []
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        tasks = [t for q in self._queues.values() for t in q.consumers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for queue in self._queues.values():
            queue.consumers.clear()

    async def declare(self, queue: str, routing_keys: Sequence[str]) -> None:
        self._declare(queue, routing_keys)

    def _declare(self, queue: str, routing_keys: Sequence[str]) -> _Queue:
        declared = self._queues.get(queue)
        if declared is None:
            declared = self._queues[queue] = _Queue(queue, set())
        declared.routing_keys.update(routing_keys)
        return declared

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        self._ensure_open()
        for envelope in envelopes:
            # A JSON round trip, as on the wire: a payload RabbitMQ could not carry fails here too.
            payload = json.loads(json.dumps(envelope.payload))
            self._route(replace(envelope, payload=payload, delivery_count=0))

    def _route(self, envelope: Envelope) -> None:
        targets = [q for q in self._queues.values() if q.accepts(envelope.routing_key)]
        if not targets:
            self._dead_letters.append(envelope)
        for queue in targets:
            queue.items.put_nowait(envelope)

    async def subscribe(
        self,
        queue: str,
        routing_keys: Sequence[str],
        handler: MessageHandler,
        *,
        prefetch: int = 32,
    ) -> None:
        self._ensure_open()
        declared = self._declare(queue, routing_keys)
        for _ in range(max(1, prefetch)):
            declared.consumers.append(asyncio.create_task(self._consume(declared, handler)))

    async def listen(self, routing_keys: Sequence[str], handler: MessageHandler) -> Listening:
        self._ensure_open()
        declared = self._declare(f"listen.{uuid.uuid4().hex}", routing_keys)
        declared.consumers.append(asyncio.create_task(self._notify(declared, handler)))
        return Listening(functools.partial(self._stop_listening, declared))

    async def _stop_listening(self, queue: _Queue) -> None:
        self._queues.pop(queue.name, None)
        for task in queue.consumers:
            task.cancel()
        await asyncio.gather(*queue.consumers, return_exceptions=True)
        queue.consumers.clear()

    @property
    def is_connected(self) -> bool:
        return not self._closed

    async def queue_depths(self) -> dict[str, int]:
        depths = {name: queue.items.qsize() for name, queue in self._queues.items()}
        depths["dead-letter"] = len(self._dead_letters)
        return depths

    async def list_dead_letters(self, limit: int = 100) -> list[Envelope]:
        return list(self._dead_letters[: max(0, limit)])

    async def replay_dead_letters(self, message_ids: Sequence[str] | None = None) -> int:
        self._ensure_open()
        wanted = None if message_ids is None else set(message_ids)
        chosen = [e for e in self._dead_letters if wanted is None or e.message_id in wanted]
        for envelope in chosen:
            self._dead_letters.remove(envelope)
            headers = {k: v for k, v in envelope.headers.items() if not k.startswith("x-")}
            self._route(replace(envelope, headers=headers, delivery_count=0))
        return len(chosen)

    def _ensure_open(self) -> None:
        if self._closed:
            raise BusUnavailable("bus is closed")

    async def _consume(self, queue: _Queue, handler: MessageHandler) -> None:
        while True:
            envelope = await queue.items.get()
            try:
                await handler(envelope)
            except asyncio.CancelledError:
                queue.items.put_nowait(envelope)
                raise
            except Exception:
                log.exception("handler failed for %s %s", envelope.routing_key, envelope.message_id)
                await self._redeliver(queue, envelope)

    async def _notify(self, queue: _Queue, handler: MessageHandler) -> None:
        while True:
            envelope = await queue.items.get()
            try:
                await handler(envelope)
            except Exception:
                log.exception(
                    "listener failed for %s %s", envelope.routing_key, envelope.message_id
                )

    async def _redeliver(self, queue: _Queue, envelope: Envelope) -> None:
        count = envelope.delivery_count + 1
        if count > self.delivery_limit:
            log.error("dead-lettering %s after %d deliveries", envelope.message_id, count)
            headers = {
                **envelope.headers,
                DEATH_QUEUE_HEADER: queue.name,
                DEATH_REASON_HEADER: DELIVERY_LIMIT_REASON,
            }
            self._dead_letters.append(replace(envelope, headers=headers, delivery_count=0))
            return
        try:
            await asyncio.sleep(
                redelivery_delay(
                    envelope.delivery_count, self.redelivery_delay, self.max_redelivery_delay
                )
            )
        finally:
            # Handed back even when the consumer is cancelled while waiting.
            queue.items.put_nowait(replace(envelope, delivery_count=count))
