"""One contract for both buses: the in-process MemoryBus and RabbitBus on the local broker.

Each RabbitMQ test uses its own name prefix (exchanges, queues, dead-letter queue) and deletes
everything it declared. Both buses run with a delivery limit of 2: a message is delivered at
most three times, then dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from shared.bus import Bus, BusUnavailable, create_bus
from shared.bus.base import DEATH_QUEUE_HEADER, DEATH_REASON_HEADER, Envelope
from shared.bus.memory import MemoryBus, topic_matches
from shared.bus.rabbit import RabbitBus
from shared.bus.wire import BATCH_CONTENT_TYPE
from tests.conftest import AMQP_URL
from tests.support.amqp_tap import AmqpTap, publish_single_event
from tests.support.buses import (
    Inbox,
    envelopes,
    force_close_connection,
    isolated_rabbit,
    rabbitmqctl,
)
from tests.support.polling import eventually

LIMIT = 2


@dataclass
class Buses:
    """Opens buses of one kind; for RabbitMQ each ``open`` is a new connection (a new process)."""

    kind: str
    _make: Callable[[], Bus]

    async def open(self) -> Bus:
        bus = self._make()
        await bus.start()
        return bus


@pytest.fixture(params=["memory", "rabbit"])
async def buses(request: pytest.FixtureRequest) -> AsyncIterator[Buses]:
    if request.param == "memory":
        memory = MemoryBus(delivery_limit=LIMIT, redelivery_delay=0.01, max_redelivery_delay=0.05)
        yield Buses("memory", lambda: memory)
        await memory.close()
        return
    async with isolated_rabbit(AMQP_URL) as make:
        yield Buses("rabbit", make)


@pytest.fixture
async def bus(buses: Buses) -> Bus:
    return await buses.open()


async def test_published_message_reaches_subscriber(bus: Bus) -> None:
    inbox = Inbox()
    await bus.subscribe("dispatcher", ["analysis.requested"], inbox)
    sent = Envelope("m-1", "analysis.requested", {"analysis_id": 7, "note": "ünïcode"})

    await bus.publish([sent])

    await inbox.wait_handled(1)
    [got] = inbox.handled
    assert (got.message_id, got.routing_key, got.payload) == (
        "m-1",
        "analysis.requested",
        {"analysis_id": 7, "note": "ünïcode"},
    )
    assert got.delivery_count == 0


async def test_every_listener_gets_a_copy_while_the_work_queue_gets_one(buses: Buses) -> None:
    """``listen`` is fan-out (each gateway process wakes its live pages), beside the competing
    consumers of a work queue, which still get each message once."""
    first, second = await buses.open(), await buses.open()
    workers, heard_first, heard_second = Inbox(), Inbox(), Inbox()
    await first.subscribe("dispatcher", ["analysis.requested"], workers)
    await first.listen(["analysis.*"], heard_first)
    await second.listen(["analysis.*"], heard_second)

    await first.publish(envelopes("analysis.requested", 3))

    await heard_first.wait_handled(3)
    await heard_second.wait_handled(3)
    await workers.wait_handled(3)
    assert sorted(e.payload["n"] for e in heard_second.handled) == [0, 1, 2]
    assert len(workers.handled) == 3
    if second is not first:
        await second.close()


async def test_a_stopped_listener_hears_nothing_more(bus: Bus) -> None:
    """A gateway listens only while a live page is open: once stopped, its queue is gone."""
    stopped, still = Inbox(), Inbox()
    listening = await bus.listen(["analysis.*"], stopped)
    await bus.listen(["analysis.*"], still)
    await bus.publish(envelopes("analysis.accepted", 1))
    await stopped.wait_handled(1)

    await listening.stop()
    await listening.stop()  # twice is harmless
    await bus.publish(envelopes("analysis.completed", 2))

    await still.wait_handled(3)
    assert [e.routing_key for e in stopped.handled] == ["analysis.accepted"]


async def test_topic_patterns_route_each_message_to_matching_queues(bus: Bus) -> None:
    patterns = {
        "exact": ["analysis.requested"],
        "one-word": ["analysis.*"],
        "any-depth": ["obj.#.done"],
        "two-keys": ["analysis.completed", "obj.done"],
    }
    inboxes = {name: Inbox() for name in patterns}
    for name, keys in patterns.items():
        await bus.subscribe(name, keys, inboxes[name], prefetch=1)
    keys = ["analysis.requested", "analysis.completed", "analysis.x.y", "obj.done", "obj.a.b.done"]

    await bus.publish([Envelope(f"id-{key}", key, {}) for key in keys])
    # Then one last message for each queue. A queue delivers in order to its one consumer, so a
    # wrongly routed message would have been handled before the queue's last one.
    last = {"analysis.requested": "last-analysis", "obj.done": "last-obj"}
    await bus.publish([Envelope(message_id, key, {}) for key, message_id in last.items()])

    expected = {
        "exact": {"analysis.requested"},
        "one-word": {"analysis.requested", "analysis.completed"},
        "any-depth": {"obj.done", "obj.a.b.done"},
        "two-keys": {"analysis.completed", "obj.done"},
    }
    last_of = {"exact": "last-analysis", "one-word": "last-analysis"}
    last_of |= {"any-depth": "last-obj", "two-keys": "last-obj"}
    for name, inbox in inboxes.items():

        def arrived(inbox: Inbox = inbox, name: str = name) -> bool:
            return last_of[name] in inbox.handled_ids()

        await inbox.wait_until(arrived)
    for name, routing_keys in expected.items():
        handled = inboxes[name].handled
        assert handled[-1].message_id == last_of[name], name
        assert sorted(e.message_id for e in handled if e.message_id.startswith("last-")) == [
            last_of[name]
        ], name
        routed = [e for e in handled if not e.message_id.startswith("last-")]
        assert {e.routing_key for e in routed} == routing_keys, name
        assert len(routed) == len(routing_keys), name
    # "analysis.x.y" matched no queue: kept among the dead letters, not dropped.
    assert [e.routing_key for e in await bus.list_dead_letters()] == ["analysis.x.y"]


async def test_failing_handler_gets_the_message_again_until_it_succeeds(bus: Bus) -> None:
    inbox = Inbox(fail_first=LIMIT)
    await bus.subscribe("flaky", ["analysis.requested"], inbox)

    await bus.publish(envelopes("analysis.requested", 1))

    await inbox.wait_handled(1)
    assert [d.delivery_count for d in inbox.deliveries] == [0, 1, 2]
    assert await bus.list_dead_letters() == []


async def test_always_failing_message_is_dead_lettered_listed_and_replayed(bus: Bus) -> None:
    inbox = Inbox()
    await bus.subscribe("broken", ["analysis.completed"], inbox, prefetch=4)
    poison, healthy = envelopes("analysis.completed", 2)
    inbox.always_fail.add(poison.message_id)

    await bus.publish([poison, healthy])

    await inbox.wait_handled(1)
    await inbox.wait_until(lambda: len(inbox.deliveries) >= 2 + LIMIT)
    dead = await _wait_for_dead_letters(bus, 1)
    assert len([d for d in inbox.deliveries if d.message_id == poison.message_id]) == LIMIT + 1
    assert (dead[0].message_id, dead[0].routing_key, dead[0].payload) == (
        poison.message_id,
        "analysis.completed",
        poison.payload,
    )
    assert dead[0].headers[DEATH_REASON_HEADER] == "delivery_limit"
    assert str(dead[0].headers[DEATH_QUEUE_HEADER]).endswith("broken")
    # Listing does not consume them.
    assert [d.message_id for d in await bus.list_dead_letters()] == [poison.message_id]

    inbox.always_fail.clear()
    assert await bus.replay_dead_letters(["no-such-id"]) == 0
    assert await bus.replay_dead_letters([poison.message_id]) == 1

    await inbox.wait_handled(2)
    replayed = inbox.handled[-1]
    assert (replayed.message_id, replayed.payload) == (poison.message_id, poison.payload)
    assert replayed.delivery_count == 0
    assert await bus.list_dead_letters() == []


async def test_replay_all_keeps_order_and_skips_nothing(bus: Bus) -> None:
    unrouted = envelopes("summary.updated", 5)
    await bus.publish(unrouted)
    listed = await _wait_for_dead_letters(bus, 5)
    assert [e.message_id for e in listed] == [e.message_id for e in unrouted]
    assert [e.message_id for e in await bus.list_dead_letters(limit=2)] == [
        e.message_id for e in unrouted[:2]
    ]

    inbox = Inbox()
    await bus.subscribe("summaries", ["summary.*"], inbox, prefetch=1)
    assert await bus.replay_dead_letters() == 5

    await inbox.wait_handled(5)
    assert inbox.handled_ids() == [e.message_id for e in unrouted]
    assert await bus.list_dead_letters() == []


async def test_publish_returns_after_the_whole_batch_is_confirmed(buses: Buses) -> None:
    publisher = await buses.open()
    await publisher.declare("batch", ["analysis.requested"])
    batch = envelopes("analysis.requested", 300, filler="x" * 200)

    await publisher.publish(batch)
    await publisher.close()

    # Confirmed means stored: a fresh connection (another process) sees all of them, in order.
    consumer = await buses.open()
    inbox = Inbox()
    await consumer.subscribe("batch", ["analysis.requested"], inbox, prefetch=1)
    await inbox.wait_handled(300)
    assert inbox.handled_ids() == [e.message_id for e in batch]


async def test_five_hundred_events_in_one_publish_arrive_once_each(bus: Bus) -> None:
    """The outbox relay publishes up to 500 events per call: each reaches the work queue once,
    with its id, and each listener hears it; on RabbitMQ they travel as a few batch messages."""
    workers, heard = Inbox(), Inbox()
    await bus.subscribe("bulk", ["analysis.requested"], workers, prefetch=32)
    await bus.listen(["analysis.*"], heard)
    sent = envelopes("analysis.requested", 500)

    async with _tap(bus, "analysis.requested") as tap:
        await bus.publish(sent)
        await workers.wait_handled(500)
        await heard.wait_handled(500)
        if tap is not None:
            await tap.wait_events(500)
            assert len(tap.messages) == 5  # 100 events per message
            assert {m.content_type for m in tap.messages} == {BATCH_CONTENT_TYPE}

    assert sorted(workers.handled_ids()) == sorted(e.message_id for e in sent)
    assert {(e.routing_key, e.delivery_count) for e in workers.handled} == {
        ("analysis.requested", 0)
    }
    assert {e.message_id: e.payload for e in workers.handled} == {
        e.message_id: e.payload for e in sent
    }
    assert sorted(heard.handled_ids()) == sorted(e.message_id for e in sent)
    await bus.close()
    assert len(workers.deliveries) == 500
    # Every batch was acknowledged: nothing is left to come again.
    assert await _depth(await _reopened(bus), "bulk") == 0


async def test_poison_event_of_a_batch_is_dead_lettered_alone(buses: Buses) -> None:
    """One event whose handler always fails: the others are handled once, it alone is retried,
    dead-lettered with the usual headers after the delivery limit, and replayed."""
    worker = await buses.open()
    inbox = Inbox()
    await worker.subscribe("mixed", ["analysis.completed"], inbox, prefetch=8)
    batch = envelopes("analysis.completed", 50)
    poison = batch[17]
    inbox.always_fail.add(poison.message_id)

    await worker.publish(batch)

    await inbox.wait_handled(49)
    [dead] = await _wait_for_dead_letters(worker, 1)
    await worker.close()  # lets the last batch be acknowledged; nothing more can arrive
    healthy = [e.message_id for e in batch if e is not poison]
    assert sorted(inbox.handled_ids()) == sorted(healthy)
    tries = [d.delivery_count for d in inbox.deliveries if d.message_id == poison.message_id]
    assert tries == list(range(LIMIT + 1))
    assert len(inbox.deliveries) == 49 + LIMIT + 1
    assert (dead.message_id, dead.routing_key, dead.payload) == (
        poison.message_id,
        "analysis.completed",
        poison.payload,
    )
    assert dead.headers[DEATH_REASON_HEADER] == "delivery_limit"
    assert str(dead.headers[DEATH_QUEUE_HEADER]).endswith("mixed")

    again = await buses.open()
    assert await _depth(again, "mixed") == 0
    inbox.always_fail.clear()
    await again.subscribe("mixed", ["analysis.completed"], inbox, prefetch=8)
    assert await again.replay_dead_letters([poison.message_id]) == 1
    await inbox.wait_handled(50)
    assert (inbox.handled[-1].message_id, inbox.handled[-1].delivery_count) == (
        poison.message_id,
        0,
    )
    assert await again.list_dead_letters() == []


async def test_messages_published_before_subscribe_are_not_lost(buses: Buses) -> None:
    gateway = await buses.open()
    await gateway.declare("late", ["analysis.requested"])
    early = envelopes("analysis.requested", 3)
    await gateway.publish(early)

    worker = await buses.open()
    inbox = Inbox()
    await worker.subscribe("late", ["analysis.requested"], inbox)

    await inbox.wait_handled(3)
    assert sorted(inbox.handled_ids()) == sorted(e.message_id for e in early)
    assert await worker.list_dead_letters() == []


async def test_message_in_flight_at_close_is_delivered_after_restart(buses: Buses) -> None:
    first = await buses.open()
    stuck = Inbox(hold=asyncio.Event())
    await first.subscribe("restart", ["analysis.requested"], stuck)
    [sent] = envelopes("analysis.requested", 1)
    await first.publish([sent])
    await stuck.wait_until(lambda: len(stuck.deliveries) == 1)

    await first.close()

    second = await buses.open()
    inbox = Inbox()
    await second.subscribe("restart", ["analysis.requested"], inbox)
    await inbox.wait_handled(1)
    assert inbox.handled_ids() == [sent.message_id]
    assert stuck.handled == []


async def test_closed_bus_refuses_to_publish(bus: Bus) -> None:
    await bus.close()
    with pytest.raises(ConnectionError):
        await bus.publish(envelopes("analysis.requested", 1))
    with pytest.raises(BusUnavailable):
        await bus.replay_dead_letters()


async def test_rabbit_consumers_resume_after_the_broker_drops_the_connection() -> None:
    async with isolated_rabbit(AMQP_URL) as make:
        bus = make()
        await bus.start()
        inbox = Inbox()
        await bus.subscribe("survivor", ["analysis.requested"], inbox)
        before, after = envelopes("analysis.requested", 2)
        await bus.publish([before])
        await inbox.wait_handled(1)

        await force_close_connection(bus.connection_name)

        await _publish_when_reconnected(bus, after)
        await inbox.wait_handled(2)
        assert inbox.handled_ids() == [before.message_id, after.message_id]


async def test_rabbit_single_event_messages_are_still_consumed() -> None:
    """Messages in the one-event format (older publishers, operators) are handled as before:
    a good one once, a failing one retried and dead-lettered by the broker, then replayed."""
    async with isolated_rabbit(AMQP_URL) as make:
        bus = make()
        await bus.start()
        inbox = Inbox()
        await bus.subscribe("legacy", ["analysis.requested"], inbox)
        inbox.always_fail.add("old-poison")

        for message_id in ("old-1", "old-poison"):
            await publish_single_event(
                AMQP_URL, bus.exchange, "analysis.requested", message_id, {"analysis_id": 3}
            )

        await inbox.wait_handled(1)
        [dead] = await _wait_for_dead_letters(bus, 1)
        assert (inbox.handled[0].message_id, inbox.handled[0].payload) == (
            "old-1",
            {"analysis_id": 3},
        )
        assert inbox.handled[0].routing_key == "analysis.requested"
        tries = [d.delivery_count for d in inbox.deliveries if d.message_id == "old-poison"]
        assert tries == list(range(LIMIT + 1))
        assert (dead.message_id, dead.routing_key) == ("old-poison", "analysis.requested")
        assert dead.headers[DEATH_REASON_HEADER] == "delivery_limit"
        assert str(dead.headers[DEATH_QUEUE_HEADER]).endswith("legacy")

        inbox.always_fail.clear()
        assert await bus.replay_dead_letters() == 1
        await inbox.wait_handled(2)
        assert inbox.handled[-1].message_id == "old-poison"


async def test_rabbit_topology_reads_well_in_the_console() -> None:
    async with isolated_rabbit(AMQP_URL) as make:
        bus = make(delivery_limit=4)
        await bus.start()
        await bus.declare("dispatcher", ["analysis.requested"])

        queues = await asyncio.to_thread(
            rabbitmqctl, "list_queues", "name", "type", "durable", "arguments"
        )
        exchanges = await asyncio.to_thread(
            rabbitmqctl, "list_exchanges", "name", "type", "durable", "arguments"
        )

    rows = {line.split("\t")[0]: line for line in queues.splitlines()}
    work = rows[f"{bus.prefix}.dispatcher"]
    assert "\tquorum\ttrue\t" in work
    for fragment in (
        '{"x-delivery-limit",4}',
        f'{{"x-dead-letter-exchange","{bus.prefix}.dead-letter"}}',
        '{"x-dead-letter-strategy","at-least-once"}',
    ):
        assert fragment in work
    assert "\tclassic\ttrue\t" in rows[f"{bus.prefix}.dead-letter"]
    exchange_rows = {line.split("\t")[0]: line for line in exchanges.splitlines()}
    assert exchange_rows[f"{bus.prefix}.events"].startswith(f"{bus.prefix}.events\ttopic\ttrue")
    assert (
        f'{{"alternate-exchange","{bus.prefix}.dead-letter"}}'
        in exchange_rows[f"{bus.prefix}.events"]
    )


def test_create_bus_picks_the_implementation_from_the_url() -> None:
    assert isinstance(create_bus("memory://"), MemoryBus)
    rabbit = create_bus(AMQP_URL, prefix="elsewhere", delivery_limit=9)
    assert isinstance(rabbit, RabbitBus)
    assert (rabbit.exchange, rabbit.dead_letter_exchange) == (
        "elsewhere.events",
        "elsewhere.dead-letter",
    )
    assert rabbit.queue_arguments()["x-delivery-limit"] == 9
    assert rabbit.queue_name("dispatcher") == "elsewhere.dispatcher"
    assert rabbit.queue_name("elsewhere.dispatcher") == "elsewhere.dispatcher"


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("analysis.*", "analysis.requested", True),
        ("analysis.*", "analysis.a.b", False),
        ("analysis.*", "analysis", False),
        ("#", "anything.at.all", True),
        ("obj.#", "obj", True),
        ("obj.#.done", "obj.done", True),
        ("obj.#.done", "obj.x.y.done", True),
        ("obj.#.done", "obj.x.y.started", False),
        ("*.completed", "analysis.completed", True),
    ],
)
def test_memory_topic_matching_follows_amqp(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


def _tap(bus: Bus, routing_key: str) -> contextlib.AbstractAsyncContextManager[AmqpTap | None]:
    """A raw consumer of what RabbitBus puts on the wire; nothing for the memory bus."""
    if isinstance(bus, RabbitBus):
        return AmqpTap.bound(AMQP_URL, bus.exchange, routing_key)
    return contextlib.nullcontext()


async def _reopened(bus: Bus) -> Bus:
    await bus.start()
    return bus


async def _depth(bus: Bus, queue: str) -> int:
    """Messages ready in ``queue`` (declared first: a new RabbitBus reports only its own)."""
    await bus.declare(queue, [])
    depths = await bus.queue_depths()
    [depth] = [n for name, n in depths.items() if name == queue or name.endswith(f".{queue}")]
    return depth


async def _wait_for_dead_letters(bus: Bus, count: int) -> list[Envelope]:
    async def dead_letters() -> list[Envelope] | None:
        dead = await bus.list_dead_letters()
        return dead if len(dead) >= count else None

    return await eventually(dead_letters, f"{count} dead letters", within=15, every=0.05)


async def _publish_when_reconnected(bus: Bus, envelope: Envelope) -> None:
    async def published() -> bool:
        try:
            await bus.publish([envelope])
        except ConnectionError:
            return False
        return True

    await eventually(published, "a publish once the bus reconnected", within=30, every=0.1)
