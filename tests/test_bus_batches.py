"""RabbitBus batch messages on the wire: size limits, dead-lettered batches, garbled batches and
the operators' dead-letter commands on batched traffic. The per-event contract (both buses) is
in ``test_bus_contract.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aio_pika

from shared.bus.base import DEATH_REASON_HEADER, Envelope
from shared.bus.rabbit import RabbitBus
from shared.bus.wire import BATCH_CONTENT_TYPE, UNDECODABLE_HEADER, pack
from tests.conftest import AMQP_URL
from tests.support.amqp_tap import AmqpTap
from tests.support.buses import Inbox, envelopes, isolated_rabbit
from tests.support.polling import eventually

SKYHOOK = Path(sys.executable).with_name("skyhook")


def test_pack_keeps_order_within_the_event_and_byte_limits() -> None:
    items = [json.dumps({"n": n}).encode() for n in range(7)]
    bodies = list(pack(items, max_events=3, max_bytes=1000))
    assert [len(json.loads(b)) for b in bodies] == [3, 3, 1]
    assert [i["n"] for b in bodies for i in json.loads(b)] == list(range(7))

    big = b'{"big":"' + b"x" * 50 + b'"}'
    bodies = list(pack([items[0], big, items[1]], max_events=100, max_bytes=40))
    assert [json.loads(b) for b in bodies] == [[{"n": 0}], [json.loads(big)], [{"n": 1}]]
    assert all(len(b) <= 40 for b in bodies if big not in b)


async def test_byte_budget_splits_a_publish_into_more_messages() -> None:
    async with isolated_rabbit(AMQP_URL) as make:
        bus = make(max_batch_bytes=4096)
        await bus.start()
        inbox = Inbox()
        await bus.subscribe("sized", ["analysis.requested"], inbox, prefetch=1)
        sent = envelopes("analysis.requested", 60, filler="x" * 300)

        async with AmqpTap.bound(AMQP_URL, bus.exchange, "analysis.requested") as tap:
            await bus.publish(sent)
            await tap.wait_events(60)
            await inbox.wait_handled(60)

        assert len(tap.messages) > 1
        assert all(len(m.body) <= 4096 for m in tap.messages)
        # prefetch=1: one event at a time, in publish order.
        assert inbox.handled_ids() == [e.message_id for e in sent]


async def test_a_dead_lettered_batch_is_listed_and_replayed_event_by_event() -> None:
    """Events no queue was bound to reach the dead letters as the batch they travelled in."""
    async with isolated_rabbit(AMQP_URL) as make:
        bus = make()
        await bus.start()
        unrouted = envelopes("nobody.listens", 3)
        await bus.publish(unrouted)
        assert (await bus.queue_depths())[bus.dead_letter_queue] == 1

        listed = await bus.list_dead_letters()
        assert [(e.message_id, e.routing_key) for e in listed] == [
            (e.message_id, "nobody.listens") for e in unrouted
        ]
        assert [e.message_id for e in await bus.list_dead_letters(limit=2)] == [
            e.message_id for e in unrouted[:2]
        ]

        inbox = Inbox()
        await bus.subscribe("late", ["nobody.listens"], inbox)
        assert await bus.replay_dead_letters([unrouted[1].message_id]) == 1
        await inbox.wait_handled(1)
        assert inbox.handled_ids() == [unrouted[1].message_id]
        # The rest stay dead, still listed with the routing key they were published with.
        remaining = await bus.list_dead_letters()
        assert [(e.message_id, e.routing_key) for e in remaining] == [
            (e.message_id, "nobody.listens") for e in (unrouted[0], unrouted[2])
        ]
        assert await bus.replay_dead_letters() == 2
        await inbox.wait_handled(3)
        assert await bus.list_dead_letters() == []


async def test_a_garbled_batch_is_rejected_to_the_dead_letters() -> None:
    async with isolated_rabbit(AMQP_URL) as make:
        bus = make()
        await bus.start()
        inbox = Inbox()
        await bus.subscribe("garbled", ["analysis.requested"], inbox)
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(bus.exchange, ensure=False)
            body = json.dumps([{"message_id": "m", "payload": "not an object"}]).encode()
            message = aio_pika.Message(body, content_type=BATCH_CONTENT_TYPE)
            await exchange.publish(message, "analysis.requested")

        [dead] = await _wait_for_one_dead_letter(bus)
        assert dead.routing_key == "analysis.requested"
        assert dead.headers[DEATH_REASON_HEADER] == "rejected"
        assert UNDECODABLE_HEADER in dead.headers
        assert inbox.deliveries == []


async def test_dead_letter_commands_work_on_an_event_from_a_batch() -> None:
    async with isolated_rabbit(AMQP_URL) as make:
        bus = make()
        await bus.start()
        inbox = Inbox()
        await bus.subscribe("ops", ["analysis.completed"], inbox, prefetch=4)
        batch = envelopes("analysis.completed", 10)
        poison = batch[3]
        inbox.always_fail.add(poison.message_id)
        await bus.publish(batch)
        await inbox.wait_handled(9)
        await _wait_for_one_dead_letter(bus)

        listed = _cli(bus.prefix, "list")
        assert listed.returncode == 0, listed.stderr
        (line,) = listed.stdout.splitlines()
        row = json.loads(line)
        assert (row["message_id"], row["routing_key"], row["payload"]) == (
            poison.message_id,
            "analysis.completed",
            poison.payload,
        )
        assert (row["reason"], row["queue"]) == ("delivery_limit", f"{bus.prefix}.ops")

        inbox.always_fail.clear()
        replayed = _cli(bus.prefix, "replay", "--id", poison.message_id)
        assert replayed.returncode == 0 and "replayed 1" in replayed.stderr, replayed.stderr
        await inbox.wait_handled(10)
        assert inbox.handled[-1].message_id == poison.message_id
        assert _cli(bus.prefix, "list").stdout == ""


async def _wait_for_one_dead_letter(bus: RabbitBus) -> list[Envelope]:
    return await eventually(bus.list_dead_letters, "a dead letter", within=15, every=0.05)


def _cli(prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYHOOK_AMQP_URL": AMQP_URL, "SKYHOOK_BUS_PREFIX": prefix}
    return subprocess.run(
        [str(SKYHOOK), "dead-letters", *args], env=env, capture_output=True, text=True, timeout=60
    )
