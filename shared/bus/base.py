"""The bus interface. Two implementations: RabbitMQ (aio-pika) and in-process memory.

Delivery is at least once: a handler that raises gets the message again, up to the delivery
limit, after which the message goes to the dead-letter queue. Handlers must be idempotent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Envelope:
    message_id: str
    routing_key: str
    payload: dict[str, Any]
    headers: dict[str, Any] = field(default_factory=dict)
    delivery_count: int = 0


MessageHandler = Callable[[Envelope], Awaitable[None]]


class Bus(Protocol):
    async def start(self) -> None:
        """Connect and declare the topology."""

    async def close(self) -> None:
        """Stop consumers and disconnect."""

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish durably; returns once the broker has confirmed every message."""

    async def subscribe(
        self,
        queue: str,
        routing_keys: Sequence[str],
        handler: MessageHandler,
        *,
        prefetch: int = 32,
    ) -> None:
        """Consume ``queue`` (bound to ``routing_keys``) with ``handler`` until closed."""
