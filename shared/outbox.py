"""Transactional outbox: messages are written with the state change, then relayed to the bus.

``enqueue`` adds the row inside the caller's transaction. The relay publishes pending rows in
id order with publisher confirms and deletes them once confirmed; on PostgreSQL several relays
can run at once (``FOR UPDATE SKIP LOCKED``). A crash between publish and delete re-publishes,
so consumers are idempotent (every message carries its ``message_id``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.base import Bus, Envelope
from shared.db.models import OutboxMessage
from shared.events import Message

log = logging.getLogger("skyhook.outbox")


def enqueue(session: AsyncSession, message: Message) -> OutboxMessage:
    row = OutboxMessage(
        message_id=str(uuid.uuid4()),
        routing_key=message.ROUTING_KEY,
        payload=message.model_dump(mode="json"),
    )
    session.add(row)
    return row


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: Bus,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()

    def nudge(self) -> None:
        """Publish soon: called after a transaction that enqueued messages has committed."""
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many messages were published."""
        async with self._sessions.begin() as session:
            query = select(OutboxMessage).order_by(OutboxMessage.id).limit(self._batch_size)
            if session.bind.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(await session.scalars(query))
            if not rows:
                return 0
            await self._bus.publish(
                [Envelope(r.message_id, r.routing_key, dict(r.payload)) for r in rows]
            )
            await session.execute(
                delete(OutboxMessage).where(OutboxMessage.id.in_([r.id for r in rows]))
            )
        return len(rows)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                while await self.publish_pending() == self._batch_size:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying in %.1fs", self._poll_interval)
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            except TimeoutError:
                pass
