"""The bus interface. Two implementations: RabbitMQ (aio-pika) and in-process memory.

Delivery is at least once: a handler that raises gets the message again (after a short,
growing delay), and a message that fails more than ``delivery_limit`` times goes to the
dead-letter queue, where operators can list and replay it. Handlers must be idempotent.

Messages are routed by topic: a queue bound to ``analysis.*`` receives ``analysis.requested``;
``#`` matches any number of words. A message that no queue is bound to is not dropped: it goes
to the dead letters as well, so declare every queue (``declare`` or ``subscribe``) before
publishing to it.

``publish`` may carry many envelopes in one broker message (RabbitMQ does, per routing key), but
each envelope is still handled, retried and dead-lettered on its own. No order is promised
between messages, except that a consumer with ``prefetch=1`` that never fails gets those of one
routing key in the order they were published.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Header names shared by both implementations (RabbitMQ sets them itself when dead-lettering).
DEATH_QUEUE_HEADER = "x-first-death-queue"
DEATH_REASON_HEADER = "x-first-death-reason"
DELIVERY_LIMIT_REASON = "delivery_limit"


@dataclass(frozen=True)
class Envelope:
    message_id: str
    routing_key: str
    payload: dict[str, Any]
    headers: dict[str, Any] = field(default_factory=dict)
    # How many times this message was delivered before (0 on the first delivery).
    delivery_count: int = 0


MessageHandler = Callable[[Envelope], Awaitable[None]]


class BusUnavailable(ConnectionError):
    """The broker cannot be reached or did not confirm a publish; try again later."""


def redelivery_delay(delivery_count: int, base: float, cap: float) -> float:
    """Seconds to wait before handing a failed message back: doubles with each failure."""
    if base <= 0:
        return 0.0
    return min(cap, base * 2 ** min(delivery_count, 30))


@dataclass(frozen=True)
class Listening:
    """A ``listen`` under way: ``await listening.stop()`` hears nothing more (the listening
    queue is gone once it returns; stopping twice is harmless)."""

    stop: Callable[[], Awaitable[None]]


class Bus(Protocol):
    async def start(self) -> None:
        """Connect and declare the exchanges and the dead-letter queue."""

    async def close(self) -> None:
        """Stop consumers (in-flight messages go back to their queue) and disconnect."""

    async def declare(self, queue: str, routing_keys: Sequence[str]) -> None:
        """Declare a durable queue bound to ``routing_keys`` without consuming it."""

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish durably; returns once the broker has confirmed every message (on RabbitMQ
        the envelopes travel in batch messages, see ``shared.bus.rabbit``).

        Raises ``BusUnavailable`` (a ``ConnectionError``) when the broker is unreachable or
        refuses a message; then some messages of the batch may have been delivered.
        """

    async def subscribe(
        self,
        queue: str,
        routing_keys: Sequence[str],
        handler: MessageHandler,
        *,
        prefetch: int = 32,
    ) -> None:
        """Consume ``queue`` (declared, bound to ``routing_keys``) until closed.

        At most ``prefetch`` messages are handled at once (counted per envelope, whatever the
        batches they travelled in). Success acknowledges the message; an exception hands it
        back for redelivery, up to the delivery limit.
        """

    async def listen(self, routing_keys: Sequence[str], handler: MessageHandler) -> Listening:
        """Also hand every message matching ``routing_keys`` to ``handler``, at most once, from
        a queue of this process alone that disappears with it (for notifications such as live
        page updates, never for work: nothing is retried or dead-lettered), until the
        returned listening is stopped."""

    @property
    def is_connected(self) -> bool:
        """True while the broker connection is up (readiness)."""

    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting per queue (the queues this process declared, and dead letters)."""

    async def list_dead_letters(self, limit: int = 100) -> list[Envelope]:
        """The oldest ``limit`` dead letters, left in place."""

    async def replay_dead_letters(self, message_ids: Sequence[str] | None = None) -> int:
        """Re-publish dead letters (all, or those with these ids) with their routing key.

        Each replayed message is removed from the dead letters once the broker confirmed it;
        returns how many were replayed.
        """
