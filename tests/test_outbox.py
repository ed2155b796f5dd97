"""The transactional outbox and its relay, on PostgreSQL and SQLite, with real buses.

The failing bus is a real MemoryBus behind a switch that makes ``publish`` raise
ConnectionError, as RabbitBus does when the broker is unreachable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.bus import BusUnavailable
from shared.bus.base import Envelope, Listening, MessageHandler
from shared.bus.memory import MemoryBus
from shared.bus.outbox import OutboxRelay, _taking, enqueue, outbox_values
from shared.db.models import OutboxMessage
from shared.db.session import create_engine, create_session_factory
from shared.domain.events import AnalysisCompleted, AnalysisRequested
from shared.runtime.background import background, run_forever
from shared.runtime.resources import Resources
from skyhook.composition import outbox_relay
from tests.conftest import AMQP_URL
from tests.support.buses import Inbox, isolated_rabbit
from tests.support.explain import explainable, nodes_of, plan_of
from tests.support.polling import eventually
from tests.support.statements import (
    TRANSACTION_CONTROL,
    first_word,
    round_trips_on,
    statements_on,
)


class SwitchableBus:
    """A MemoryBus that records what it published and can be switched off like a dead broker."""

    def __init__(self, *, publish_delay: float = 0.0) -> None:
        self.inner = MemoryBus()
        self.down = False
        self.publish_delay = publish_delay
        self.published: list[Envelope] = []
        self.publishes: list[int] = []  # how many envelopes each publish carried
        self.refused = 0

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def declare(self, queue: str, routing_keys: Sequence[str]) -> None:
        await self.inner.declare(queue, routing_keys)

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        if self.down:
            self.refused += 1
            raise BusUnavailable("broker unreachable (test switch)")
        await asyncio.sleep(self.publish_delay)
        await self.inner.publish(envelopes)
        self.published.extend(envelopes)
        self.publishes.append(len(envelopes))

    async def subscribe(
        self,
        queue: str,
        routing_keys: Sequence[str],
        handler: MessageHandler,
        *,
        prefetch: int = 32,
    ) -> None:
        await self.inner.subscribe(queue, routing_keys, handler, prefetch=prefetch)

    async def listen(self, routing_keys: Sequence[str], handler: MessageHandler) -> Listening:
        return await self.inner.listen(routing_keys, handler)

    @property
    def is_connected(self) -> bool:
        return not self.down and self.inner.is_connected

    async def queue_depths(self) -> dict[str, int]:
        return await self.inner.queue_depths()

    async def list_dead_letters(self, limit: int = 100) -> list[Envelope]:
        return await self.inner.list_dead_letters(limit)

    async def replay_dead_letters(self, message_ids: Sequence[str] | None = None) -> int:
        return await self.inner.replay_dead_letters(message_ids)

    def analysis_ids(self) -> list[int]:
        return [e.payload["analysis_id"] for e in self.published]


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    factory = create_session_factory(engine)
    async with factory.begin() as session:  # rows other tests may have left behind
        await session.execute(delete(OutboxMessage))
    yield factory
    async with factory.begin() as session:
        await session.execute(delete(OutboxMessage))
    await engine.dispose()


async def _enqueue(sessions: async_sessionmaker[AsyncSession], ids: Sequence[int]) -> None:
    async with sessions.begin() as session:
        for analysis_id in ids:
            enqueue(session, AnalysisRequested(analysis_id=analysis_id))


async def _pending(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


async def _nothing_pending(sessions: async_sessionmaker[AsyncSession]) -> bool:
    return await _pending(sessions) == 0


@pytest.mark.usefixtures("backend")
async def test_rolled_back_messages_are_never_published(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    bus = SwitchableBus()
    relay = OutboxRelay(sessions, bus)
    relay.collect(sessions)
    with pytest.raises(RuntimeError, match="state change failed"):
        async with sessions.begin() as session:
            enqueue(session, AnalysisRequested(analysis_id=1))
            await session.flush()  # the row reached the database, inside the transaction
            raise RuntimeError("state change failed")
    await _enqueue(sessions, [2])

    assert await relay.publish_all() == 1

    assert bus.analysis_ids() == [2]
    assert await _pending(sessions) == 0


@pytest.mark.usefixtures("backend")
async def test_committed_messages_are_published_in_order_then_deleted(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    bus = SwitchableBus()
    inbox = Inbox()
    await bus.subscribe("summaries", ["analysis.*"], inbox, prefetch=1)
    relay = OutboxRelay(sessions, bus, batch_size=10)
    await _enqueue(sessions, range(0, 12))
    async with sessions.begin() as session:
        enqueue(
            session,
            AnalysisCompleted(
                analysis_id=12, obj_id="ZTF21abc", analysis_service_id=3, status="completed"
            ),
        )
    await _enqueue(sessions, range(13, 25))

    assert await relay.publish_pending() == 10  # one batch at a time
    assert await _pending(sessions) == 15
    assert await relay.publish_all() == 15

    assert bus.analysis_ids() == list(range(25))
    assert bus.published[12].routing_key == "analysis.completed"
    assert bus.published[12].payload["obj_id"] == "ZTF21abc"
    assert len({e.message_id for e in bus.published}) == 25
    assert await _pending(sessions) == 0
    await inbox.wait_handled(25)
    assert [e.payload["analysis_id"] for e in inbox.handled] == list(range(25))


@pytest.mark.usefixtures("backend")
async def test_messages_wait_while_the_bus_is_down_and_go_out_after_recovery(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    bus = SwitchableBus()
    bus.down = True
    relay = OutboxRelay(sessions, bus, poll_interval=0.02, max_retry_delay=0.1)
    async with background("outbox-relay", relay.run):
        await _enqueue(sessions, range(5))
        relay.nudge()
        await eventually(lambda: bus.refused >= 3, "three refused publishes")
        assert await _pending(sessions) == 5
        assert bus.published == []

        bus.down = False
        await eventually(lambda: bus.published != [], "a publish")
        await eventually(lambda: _nothing_pending(sessions), "an empty outbox")

    assert bus.analysis_ids() == [0, 1, 2, 3, 4]


async def _write(sessions: async_sessionmaker[AsyncSession], ids: Sequence[int]) -> list[Any]:
    """Outbox rows written as a set-based writer writes them (not through ``enqueue``, so
    no session hands them over): their values, for a :meth:`OutboxRelay.hand_off`."""
    values = [outbox_values(AnalysisRequested(analysis_id=i)) for i in ids]
    async with sessions.begin() as session:
        session.add_all(OutboxMessage(**v) for v in values)
    return values


@pytest.mark.usefixtures("backend")
async def test_nudge_sweeps_new_rows_without_waiting_for_the_poll(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    bus = SwitchableBus()
    relay = OutboxRelay(sessions, bus, poll_interval=60, left_behind_after=0)
    await _enqueue(sessions, [40])
    async with background("outbox-relay", relay.run):
        await eventually(lambda: bus.analysis_ids() == [40], "the first sweep", within=5)
        # The relay now sleeps for a minute; these rows are new and nobody hands them over.
        await _enqueue(sessions, [41, 42])
        relay.nudge()
        await eventually(lambda: len(bus.published) == 3, "the nudged sweep", within=3)
    assert bus.analysis_ids() == [40, 41, 42]


@pytest.mark.usefixtures("backend")
async def test_committed_messages_are_handed_over_published_and_their_rows_deleted(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A session of a factory the relay collects hands its messages over as it commits: out
    at once, with no sweep (the relay would sweep rows only after a minute, and only those a
    minute old)."""
    bus = SwitchableBus()
    relay = OutboxRelay(sessions, bus, poll_interval=60, left_behind_after=60)
    relay.collect(sessions)
    async with background("outbox-relay", relay.run):
        await _enqueue(sessions, [1, 2])
        await _enqueue(sessions, [3])
        await eventually(lambda: len(bus.published) == 3, "the handed-over messages", within=5)
        await eventually(lambda: _nothing_pending(sessions), "their rows deleted", within=5)
    assert bus.analysis_ids() == [1, 2, 3]


@pytest.mark.usefixtures("backend")
async def test_reports_linger_to_go_out_together_and_an_urgent_hand_off_takes_them_along(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Events nobody waits on (an attempt's end, a completion) are handed over with
    ``urgent=False``: the relay gathers them for up to its linger, one publish for many; an
    urgent one (a new analysis to dispatch) ends the lingering at once."""
    bus = SwitchableBus()
    relay = OutboxRelay(sessions, bus, poll_interval=60, left_behind_after=60, linger_seconds=60)
    async with background("outbox-relay", relay.run):
        for analysis_id in (51, 52, 53):  # the relay runs while each row is written
            relay.hand_off(await _write(sessions, [analysis_id]), urgent=False)
        relay.hand_off(await _write(sessions, [54]))
        await eventually(lambda: len(bus.published) == 4, "the urgent publish", within=3)
    assert bus.analysis_ids() == [51, 52, 53, 54]
    assert bus.publishes == [4], "one publish for all four"


@pytest.mark.usefixtures("backend")
async def test_rows_nobody_handed_over_are_swept_once_they_are_left_behind(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A row whose writer stopped between its commit and the hand-off goes out with a sweep,
    but only once it is ``left_behind_after`` old: younger, its writer may still be handing
    it over."""
    bus = SwitchableBus()
    relay = OutboxRelay(sessions, bus, poll_interval=0.02, left_behind_after=1.0)
    written = time.monotonic()
    await _enqueue(sessions, [7])  # a factory the relay does not collect: nothing handed over
    async with background("outbox-relay", relay.run):
        await eventually(lambda: bus.analysis_ids() == [7], "the sweep", within=10)
        swept = time.monotonic()
    assert swept - written >= 1.0
    assert await _pending(sessions) == 0


async def test_a_sweep_that_finds_nothing_is_one_round_trip_on_postgresql(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Every relay sweeps every ``poll_interval``, and nearly always finds nothing: such a
    sweep is one autocommit read, no BEGIN, DELETE or COMMIT."""
    bus = SwitchableBus()
    relay = OutboxRelay(sessions, bus, poll_interval=0.01, left_behind_after=60)
    await _enqueue(sessions, [1])  # too young to be left behind: every sweep finds nothing

    def probes(sent: list[str]) -> int:
        return sum("FROM outbox" in s and first_word(s) == "SELECT" for s in sent)

    with round_trips_on(sessions.kw["bind"]) as sent:
        async with background("outbox-relay", relay.run):
            await eventually(lambda: probes(sent) >= 5, "five sweeps", within=10)
        await asyncio.sleep(0)  # asyncpg calls its query loggers soon, not at once

    sweeps = [s for s in sent if "outbox" in s.lower() or first_word(s) in TRANSACTION_CONTROL]
    assert {first_word(s) for s in sweeps} == {"SELECT"}, sweeps
    assert bus.published == [] and await _pending(sessions) == 1


@pytest.mark.usefixtures("backend")
async def test_a_sweeping_relay_never_takes_what_another_was_handed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Two processes' relays: one is handed its writes and deletes their rows half a second
    after publishing; the other sweeps all the while. Every message goes out once."""
    bus = SwitchableBus()
    writer = OutboxRelay(sessions, bus, poll_interval=60, left_behind_after=60, delete_within=0.5)
    writer.collect(sessions)
    sweeper = OutboxRelay(sessions, bus, poll_interval=0.01)
    async with background("writer", writer.run), background("sweeper", sweeper.run):
        for first in range(0, 200, 10):
            await _enqueue(sessions, range(first, first + 10))
        await eventually(lambda: len(bus.published) >= 200, "every message", within=10)
        await eventually(lambda: _nothing_pending(sessions), "an empty outbox", within=5)
    assert sorted(bus.analysis_ids()) == list(range(200))
    assert len(bus.published) == 200


@pytest.mark.usefixtures("backend")
async def test_rows_published_together_are_deleted_in_one_statement(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Ten commits handed over one after another: ten publishes' rows, one DELETE."""
    bus = SwitchableBus()
    relay = OutboxRelay(sessions, bus, poll_interval=60, left_behind_after=60, delete_within=5)
    relay.collect(sessions)
    with statements_on(sessions.kw["bind"]) as seen:
        async with background("outbox-relay", relay.run):
            for analysis_id in range(10):
                await _enqueue(sessions, [analysis_id])
            await eventually(lambda: len(bus.published) == 10, "every message", within=5)
            await eventually(lambda: _nothing_pending(sessions), "their rows deleted", within=10)
    assert bus.analysis_ids() == list(range(10))
    deletes = [
        s for s in seen if "DELETE FROM outbox WHERE outbox.message_id" in " ".join(s.split())
    ]
    assert len(deletes) == 1


@pytest.mark.usefixtures("backend")
async def test_stopping_publishes_what_was_handed_over_and_deletes_its_rows(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    bus = SwitchableBus()
    relay = OutboxRelay(sessions, bus, poll_interval=60, left_behind_after=60)
    relay.collect(sessions)
    await _enqueue(sessions, [8, 9])  # handed over; the relay is not running

    await relay.stop()

    assert bus.analysis_ids() == [8, 9]
    assert await _pending(sessions) == 0
    assert await relay.publish_pending() == 0  # a stopped relay starts no other pass


async def test_two_relays_on_postgresql_never_publish_a_row_twice(
    sessions: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    assert database_url.startswith("postgresql")
    await _enqueue(sessions, range(200))
    # Slow confirms keep each relay's transaction (and its row locks) open while the other runs.
    bus = SwitchableBus(publish_delay=0.02)
    first = OutboxRelay(sessions, bus, batch_size=15)
    second = OutboxRelay(sessions, bus, batch_size=15)

    counts = await asyncio.gather(first.publish_all(), second.publish_all())

    assert sorted(bus.analysis_ids()) == list(range(200))
    assert len(bus.published) == 200
    assert all(count > 0 for count in counts), counts  # both really took part
    assert await _pending(sessions) == 0


async def test_a_relay_pass_over_a_backlog_reads_each_waiting_row_a_few_times_not_once_per_row(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """After an outage the outbox holds a backlog the planner's statistics do not know of (it
    last saw the table empty). The pass must take its rows with one run of the locking
    subquery; run once per row of the outer scan, as a plain ``IN (subquery)`` was, a pass
    over 200 rows read 51,000 buffers and the relay fell further behind the larger the
    backlog."""
    await _enqueue(sessions, range(1000))
    async with sessions.begin() as session:  # published: their pages hold dead rows only
        await session.execute(delete(OutboxMessage))
    async with sessions() as session:
        await session.execute(text("ANALYZE outbox"))
    await _enqueue(sessions, range(1000))

    async with sessions() as session:  # rolled back: EXPLAIN ANALYZE really deletes
        assert isinstance(session.bind, AsyncEngine)
        explainable(session.bind)
        taking = _taking("postgresql", left_behind=False)
        plan = await plan_of(session, taking, {"limit": 500})
        await session.rollback()

    assert plan["Actual Rows"] == 500, "a pass takes its batch size, no more"
    locking = nodes_of(plan, "LockRows")
    assert [node["Actual Loops"] for node in locking] == [1]
    buffers = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    assert buffers < 20 * 500, f"{buffers} buffers to take 500 rows"
    assert await _pending(sessions) == 1000


async def test_relay_publishes_to_rabbitmq_with_confirms(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with isolated_rabbit(AMQP_URL) as make:
        bus = make()
        await bus.start()
        inbox = Inbox()
        await bus.subscribe("dispatcher", ["analysis.requested"], inbox, prefetch=1)
        await _enqueue(sessions, range(60))

        assert await OutboxRelay(sessions, bus, batch_size=25).publish_all() == 60

        assert await _pending(sessions) == 0
        await inbox.wait_handled(60)
        assert [e.payload["analysis_id"] for e in inbox.handled] == list(range(60))


async def test_composition_relays_what_a_service_enqueues(
    sessions: async_sessionmaker[AsyncSession], resources: Resources
) -> None:
    inbox = Inbox()
    await resources.bus.subscribe("dispatcher", ["analysis.requested"], inbox)
    async with outbox_relay(resources):
        async with resources.sessions.begin() as session:
            enqueue(session, AnalysisRequested(analysis_id=77))
        # Handed over as it committed: out well before a sweep would take it.
        await inbox.wait_handled(1, within=5)
        await eventually(lambda: _nothing_pending(sessions), "an empty outbox", within=5)
    assert inbox.handled[0].payload == {"analysis_id": 77}


async def test_run_forever_restarts_a_crashed_task() -> None:
    runs: list[int] = []
    finished = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError("boom")
        finished.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(run_forever("flaky", flaky, restart_delay=0.01))
    async with asyncio.timeout(5):
        await finished.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs == [0, 1, 2]
