"""The in-process bus (``memory://``): same contract as RabbitMQ, for ``skyhook run`` and tests."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from shared.bus.base import Envelope, MessageHandler

log = logging.getLogger("skyhook.bus.memory")


def _matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching for the patterns we use (``*`` one word, ``#`` the rest)."""
    if pattern == "#":
        return True
    glob = pattern.replace("#", "*")
    return fnmatch.fnmatchcase(routing_key, glob) and (
        "#" in pattern or pattern.count(".") == routing_key.count(".")
    )


@dataclass
class _Queue:
    name: str
    routing_keys: tuple[str, ...]
    items: asyncio.Queue[Envelope] = field(default_factory=asyncio.Queue)
    consumers: list[asyncio.Task[None]] = field(default_factory=list)


class MemoryBus:
    def __init__(self, *, delivery_limit: int = 5, redelivery_delay: float = 0.05) -> None:
        self.delivery_limit = delivery_limit
        self.redelivery_delay = redelivery_delay
        self._queues: dict[str, _Queue] = {}
        self.dead_letters: list[Envelope] = []
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

    def declare(self, queue: str, routing_keys: Sequence[str]) -> _Queue:
        existing = self._queues.get(queue)
        if existing is None:
            existing = self._queues[queue] = _Queue(queue, tuple(routing_keys))
        return existing

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self._closed:
            raise ConnectionError("bus is closed")
        for envelope in envelopes:
            for queue in self._queues.values():
                if any(_matches(p, envelope.routing_key) for p in queue.routing_keys):
                    queue.items.put_nowait(envelope)

    async def subscribe(
        self,
        queue: str,
        routing_keys: Sequence[str],
        handler: MessageHandler,
        *,
        prefetch: int = 32,
    ) -> None:
        declared = self.declare(queue, routing_keys)
        for _ in range(max(1, prefetch)):
            declared.consumers.append(asyncio.create_task(self._consume(declared, handler)))

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

    async def _redeliver(self, queue: _Queue, envelope: Envelope) -> None:
        count = envelope.delivery_count + 1
        if count >= self.delivery_limit:
            self.dead_letters.append(replace(envelope, delivery_count=count))
            return
        await asyncio.sleep(self.redelivery_delay)
        queue.items.put_nowait(replace(envelope, delivery_count=count))
