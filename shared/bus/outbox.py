"""Transactional outbox: messages are written with the state change, then relayed to the bus.

``enqueue`` adds the row inside the caller's transaction, so a rolled-back change never
publishes anything; after the commit the caller calls ``resources.outbox.nudge()`` so the relay
publishes at once instead of at its next poll. Events nobody waits on to move an analysis
forward (an attempt's end, a completion: the analysis already is what they report) are
nudged with ``urgent=False``: the relay then lingers ``linger_seconds`` for more of them, so
at a steady trickle it publishes many per cycle instead of one (each cycle is a transaction
and a broker confirm). An urgent nudge ends the lingering at once.

The relay publishes pending rows in id order, a batch at a time, with publisher confirms, and
deletes them in the same database transaction once the bus confirmed them. If the bus is down
the transaction rolls back and the rows wait, retried with a growing delay. On PostgreSQL
several relays (one per service process) can run at once: ``FOR UPDATE SKIP LOCKED`` gives each
a disjoint batch. A crash between the confirm and the commit publishes those rows again, which
is why consumers are idempotent (every message carries its ``message_id``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.base import Bus, Envelope
from shared.db.dialect import in_taken, name_of
from shared.db.models import OutboxMessage
from shared.domain.events import Message
from shared.runtime.background import wait_event

log = logging.getLogger("skyhook.outbox")


def outbox_values(message: Message) -> dict[str, Any]:
    """The outbox row's columns for ``message`` (for writers that INSERT it themselves)."""
    return {
        "message_id": str(uuid.uuid4()),
        "routing_key": message.ROUTING_KEY,
        "payload": message.model_dump(mode="json"),
    }


def enqueue(session: AsyncSession, message: Message) -> OutboxMessage:
    row = OutboxMessage(**outbox_values(message))
    session.add(row)
    return row


@functools.cache
def _taking(dialect: str) -> Any:
    """DELETE the oldest ``limit`` rows no other transaction holds, RETURNING them (plain
    columns, not ORM objects); built once per dialect."""
    oldest = select(OutboxMessage.id).order_by(OutboxMessage.id).limit(bindparam("limit"))
    return (
        delete(OutboxMessage)
        .where(in_taken(OutboxMessage.id, oldest, dialect))
        .returning(
            OutboxMessage.id,
            OutboxMessage.message_id,
            OutboxMessage.routing_key,
            OutboxMessage.payload,
        )
    )


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: Bus,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        max_retry_delay: float = 5.0,
        linger_seconds: float = 0.05,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._max_retry_delay = max_retry_delay
        self._linger = linger_seconds
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        # One batch at a time per relay: on SQLite there is no row locking to keep two apart.
        self._lock = asyncio.Lock()
        self._stopped = False

    def nudge(self, *, urgent: bool = True) -> None:
        """Publish soon: called after a transaction that enqueued messages has committed; at
        once if ``urgent``, else within ``linger_seconds``."""
        self._wake.set()
        if urgent:
            self._urgent.set()

    async def stop(self) -> None:
        """Wait for the batch under way (a query cut short by cancellation can outlive the
        event loop in the database driver's thread), and start no other. Then the task
        running ``run`` may be cancelled."""
        async with self._lock:
            self._stopped = True

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many messages were published."""
        async with self._lock:
            if self._stopped:
                return 0
            return await self._publish_batch()

    async def _publish_batch(self) -> int:
        """Take the oldest rows (deleted in this transaction, skipping rows another relay
        holds), publish them, commit: one statement besides BEGIN and COMMIT. If publishing
        fails, the rollback puts the rows back."""
        async with self._sessions.begin() as session:
            taken = list(
                await session.execute(_taking(name_of(session)), {"limit": self._batch_size})
            )
            if not taken:
                return 0
            taken.sort(key=lambda row: row.id)  # RETURNING promises no order
            await self._bus.publish(
                [Envelope(r.message_id, r.routing_key, dict(r.payload)) for r in taken]
            )
        return len(taken)

    async def publish_all(self) -> int:
        """Publish until nothing is pending (or only rows another relay holds).

        A batch smaller than the batch size took every row there was, so no further (empty)
        transaction is spent looking: rows committed meanwhile come with their own nudge.
        """
        total = 0
        while True:
            published = await self.publish_pending()
            total += published
            if published < self._batch_size:
                return total

    async def run(self) -> None:
        """Relay forever: after each nudge, at least every ``poll_interval``, and after errors."""
        self._stopped = False
        failures = 0
        while True:
            self._wake.clear()
            self._urgent.clear()
            try:
                await self.publish_all()
            except Exception as exc:
                failures += 1
                delay = min(self._max_retry_delay, self._poll_interval * 2 ** min(failures, 10))
                self._log_failure(exc, failures, delay)
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("outbox relay recovered after %d failed attempts", failures)
                failures = 0
            await wait_event(self._wake, self._poll_interval)
            if self._wake.is_set() and not self._urgent.is_set():
                await wait_event(self._urgent, self._linger)

    @staticmethod
    def _log_failure(exc: Exception, failures: int, delay: float) -> None:
        if isinstance(exc, ConnectionError):
            # An outage (bus or database): say so once, then every tenth attempt.
            if failures == 1 or failures % 10 == 0:
                log.warning(
                    "outbox: cannot publish now (%s); messages stay queued, attempt %d, "
                    "retrying in %.1fs",
                    exc,
                    failures,
                    delay,
                )
            return
        log.exception("outbox relay failed (attempt %d); retrying in %.1fs", failures, delay)
