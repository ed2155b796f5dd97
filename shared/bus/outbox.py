"""Transactional outbox: messages are written with the state change, then relayed to the bus.

How a message gets out:

1. **Written with the change**, in its transaction: :func:`enqueue` (a session) or the
   writer's own INSERT of :func:`outbox_values` rows (set-based writers). A rolled-back
   change publishes nothing.
2. **Handed to the relay once committed.** A session from a factory the relay
   :meth:`~OutboxRelay.collect`\\ s hands its enqueued messages over as its transaction
   commits; a set-based writer calls :meth:`~OutboxRelay.hand_off` after its statement. The
   relay publishes them from memory (no read), then deletes their rows: one statement for all
   it published within ``delete_within`` seconds. Events nobody waits on to move an analysis
   forward (an attempt's end, a completion) are handed off with ``urgent=False``: the relay
   lingers ``linger_seconds`` for more of them, so at a steady trickle one publish (and one
   broker confirm) carries many. An urgent hand-off ends the lingering at once.
3. **Left behind** (the process stopped between its commit and the delete, or the bus was
   down): every ``poll_interval`` the relay sweeps rows older than ``left_behind_after``,
   publishing and deleting them in one transaction. On PostgreSQL several relays (one per
   service process) sweep at once: ``FOR UPDATE SKIP LOCKED`` gives each a disjoint batch.
   The age keeps a sweep off rows whose writer is still handing them over.

Delivery is at least once: a process that dies after publishing and before deleting has
those rows published again by a sweep, which is why consumers are idempotent (every message
carries its ``message_id``). :meth:`~OutboxRelay.nudge` asks for a sweep of every row now,
however new (rows written without a hand-off: tests, tools).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, event, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from shared.bus.base import Bus, Envelope
from shared.db.dialect import in_bound, in_taken, name_of, together, write_together
from shared.db.models import OutboxMessage
from shared.db.session import statement_session
from shared.db.types import utcnow
from shared.domain.events import Message
from shared.runtime.background import wait_event

log = logging.getLogger("skyhook.outbox")

# Session.info keys: the messages enqueued in the session's transaction, and the relay that
# gets them when it commits.
_ENQUEUED = "skyhook_outbox_enqueued"
_RELAY = "skyhook_outbox_relay"
# How long a clean stop waits to publish what was handed over and delete what was published.
STOP_FLUSH_SECONDS = 5.0


def outbox_values(message: Message) -> dict[str, Any]:
    """The outbox row's columns for ``message`` (for writers that INSERT it themselves)."""
    return {
        "message_id": str(uuid.uuid4()),
        "routing_key": message.ROUTING_KEY,
        "payload": message.model_dump(mode="json"),
    }


def enqueue(session: AsyncSession, message: Message) -> OutboxMessage:
    """Write ``message`` in the session's transaction; handed to the relay once it commits."""
    values = outbox_values(message)
    row = OutboxMessage(**values)
    session.add(row)
    session.info.setdefault(_ENQUEUED, []).append(values)
    return row


@event.listens_for(Session, "after_commit")
def _hand_off_committed(session: Session) -> None:
    enqueued = session.info.pop(_ENQUEUED, None)
    relay = session.info.get(_RELAY)
    if enqueued and relay is not None:
        relay.hand_off(enqueued)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_ENQUEUED, None)


def _sweepable(*, left_behind: bool) -> ColumnElement[bool]:
    """The rows a sweep takes: every row, or if ``left_behind`` those created before
    ``cutoff``."""
    return OutboxMessage.created_at < bindparam("cutoff") if left_behind else true()


@functools.cache
def _taking(dialect: str, *, left_behind: bool) -> Any:
    """DELETE the oldest ``limit`` rows no other transaction holds (see :func:`_sweepable`),
    RETURNING them (plain columns, not ORM objects); built once per dialect and kind."""
    oldest = (
        select(OutboxMessage.id)
        .where(_sweepable(left_behind=left_behind))
        .order_by(OutboxMessage.id)
        .limit(bindparam("limit"))
    )
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


@functools.cache
def _any_to_take(*, left_behind: bool) -> Any:
    """One row a sweep would take (see :func:`_sweepable`), or none."""
    return select(OutboxMessage.id).where(_sweepable(left_behind=left_behind)).limit(1)


@functools.cache
def _deleting_published(dialect: str) -> Any:
    """DELETE the rows of the messages bound as ``published`` (by message id)."""
    published = (
        delete(OutboxMessage)
        .where(in_bound(OutboxMessage.message_id, "published", dialect))
        .returning(OutboxMessage.id)
    )
    return together(dialect, published)


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: Bus,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        max_retry_delay: float = 5.0,
        linger_seconds: float = 0.05,
        left_behind_after: float = 10.0,
        delete_within: float = 0.1,
    ) -> None:
        self._sessions = sessions
        self._engine = sessions.kw["bind"]
        self._bus = bus
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._max_retry_delay = max_retry_delay
        self._linger = linger_seconds
        self._left_behind_after = timedelta(seconds=left_behind_after)
        self._delete_within = delete_within
        self._handed: list[Envelope] = []
        self._published: list[str] = []  # message ids published whose rows are not deleted
        self._delete_by: float | None = None  # time.monotonic() by which to delete them
        self._sweep_everything = False
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        # One pass at a time per relay: on SQLite there is no row locking to keep two apart.
        self._lock = asyncio.Lock()
        self._stopped = False

    def collect(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Messages enqueued through ``sessions`` are handed to this relay as their
        transaction commits (sessions have no savepoints here: a savepoint rolled back would
        still hand its messages over)."""
        sessions.configure(info={_RELAY: self})

    def hand_off(self, values: Iterable[Mapping[str, Any]], *, urgent: bool = True) -> None:
        """Publish these committed messages (their :func:`outbox_values`) soon: at once if
        ``urgent``, else within ``linger_seconds``."""
        handed = [Envelope(v["message_id"], v["routing_key"], dict(v["payload"])) for v in values]
        if not handed:
            return
        self._handed.extend(handed)
        self._wake_up(urgent)

    def nudge(self, *, urgent: bool = True) -> None:
        """Sweep every pending row soon, however new: rows committed without a hand-off."""
        self._sweep_everything = True
        self._wake_up(urgent)

    def _wake_up(self, urgent: bool) -> None:
        self._wake.set()
        if urgent:
            self._urgent.set()

    async def stop(self) -> None:
        """Wait for the pass under way (a query cut short by cancellation can outlive the
        event loop in the database driver's thread), publish what was handed over, delete
        what was published (within ``STOP_FLUSH_SECONDS``), and start no other pass. Then
        the task running ``run`` may be cancelled. Whatever is left is swept later."""
        async with self._lock:
            self._stopped = True
            try:
                async with asyncio.timeout(STOP_FLUSH_SECONDS):
                    await self._publish_handed()
                    await self._delete_published()
            except Exception as exc:  # the rows wait in the outbox for a sweep
                log.warning("outbox: left %s for a later sweep on stopping", exc)

    async def publish_pending(self) -> int:
        """Publish what was handed over and one batch of any pending rows, however new;
        returns how many messages were published."""
        async with self._lock:
            if self._stopped:
                return 0
            handed = await self._publish_handed()
            await self._delete_published()
            return handed + await self._sweep(cutoff=None)

    async def publish_all(self) -> int:
        """Publish until nothing is pending (or only rows another relay holds).

        A batch smaller than the batch size took every row there was, so no further (empty)
        transaction is spent looking: rows committed meanwhile come with their own hand-off.
        """
        total = 0
        while True:
            published = await self.publish_pending()
            total += published
            if published < self._batch_size:
                return total

    async def _publish_handed(self) -> int:
        """Publish the messages handed over. If the bus refuses them, their rows wait in the
        outbox for a sweep."""
        handed, self._handed = self._handed, []
        if not handed:
            return 0
        await self._bus.publish(handed)
        if not self._published:
            self._delete_by = time.monotonic() + self._delete_within
        self._published.extend(envelope.message_id for envelope in handed)
        return len(handed)

    async def _delete_published(self) -> None:
        published, self._published = self._published, []
        self._delete_by = None
        if not published:
            return
        try:
            write = _deleting_published(name_of(self._engine))
            await write_together(self._engine, write, {"published": published})
        except BaseException:
            self._published = published + self._published
            self._delete_by = time.monotonic()
            raise

    async def _sweep(self, cutoff: timedelta | None) -> int:
        """Take the oldest rows (only those older than ``cutoff``, if given; deleted in this
        transaction, skipping rows another relay holds), publish them, commit: one statement
        besides BEGIN and COMMIT. If publishing fails, the rollback puts the rows back.
        Nearly every sweep finds nothing: one autocommit read says so first, so such a sweep
        is one round trip instead of three."""
        parameters: dict[str, Any] = {"limit": self._batch_size}
        if cutoff is not None:
            parameters["cutoff"] = utcnow() - cutoff
        async with statement_session(self._engine) as session:
            probe = _any_to_take(left_behind=cutoff is not None)
            if await session.scalar(probe, parameters) is None:
                return 0
        async with self._sessions.begin() as session:
            taking = _taking(name_of(session), left_behind=cutoff is not None)
            taken = list(await session.execute(taking, parameters))
            if not taken:
                return 0
            taken.sort(key=lambda row: row.id)  # RETURNING promises no order
            await self._bus.publish(
                [Envelope(r.message_id, r.routing_key, dict(r.payload)) for r in taken]
            )
        return len(taken)

    async def _sweep_all(self, cutoff: timedelta | None) -> None:
        while await self._sweep(cutoff) >= self._batch_size:
            pass

    async def _pass(self, *, sweep: bool, everything: bool) -> None:
        """Publish what was handed over; delete what was published if it is time; sweep."""
        async with self._lock:
            if self._stopped:
                return
            await self._publish_handed()
            due = self._delete_by is not None and time.monotonic() >= self._delete_by
            if due or sweep or len(self._published) >= self._batch_size:
                await self._delete_published()  # before a sweep, which would take them again
            if sweep:
                await self._sweep_all(None if everything else self._left_behind_after)

    async def run(self) -> None:
        """Relay forever: after each hand-off or nudge, when deletes are due, a sweep of rows
        left behind every ``poll_interval``, and after errors."""
        self._stopped = False
        failures = 0
        next_sweep = 0.0
        while True:
            self._wake.clear()
            self._urgent.clear()
            everything, self._sweep_everything = self._sweep_everything, False
            now = time.monotonic()
            sweep = everything or now >= next_sweep
            try:
                await self._pass(sweep=sweep, everything=everything)
            except Exception as exc:
                self._sweep_everything |= everything
                failures += 1
                delay = min(self._max_retry_delay, self._poll_interval * 2 ** min(failures, 10))
                self._log_failure(exc, failures, delay)
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("outbox relay recovered after %d failed attempts", failures)
                failures = 0
            if sweep:
                next_sweep = now + self._poll_interval
            await wait_event(self._wake, self._seconds_until(next_sweep))
            if self._wake.is_set() and not self._urgent.is_set():
                await wait_event(self._urgent, self._linger)

    def _seconds_until(self, next_sweep: float) -> float:
        due = next_sweep if self._delete_by is None else min(next_sweep, self._delete_by)
        return max(0.0, due - time.monotonic())

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
