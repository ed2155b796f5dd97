"""Bus throughput: publish (confirmed) and publish+consume, RabbitBus against raw aio-pika.

    .venv/bin/python bench/bus.py [--url amqp://...] [--count 5000] [--batch 500]

Both sides use the same topology (durable topic exchange, quorum queue, persistent messages,
publisher confirms, manual acks, the same prefetch) under a unique prefix that is deleted at
the end, so the ratio shows what RabbitBus itself costs. MemoryBus is printed for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from shared.bus.base import Envelope
from shared.bus.memory import MemoryBus
from shared.bus.rabbit import RabbitBus

PREFETCH = 256
KEY = "bench.message"


class Counter:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = 0
        self.done = asyncio.Event()

    def hit(self) -> None:
        self.seen += 1
        if self.seen >= self.expected:
            self.done.set()


async def timed(publish_batches: Callable[[], Awaitable[None]], counter: Counter) -> float:
    started = time.perf_counter()
    await publish_batches()
    async with asyncio.timeout(300):
        await counter.done.wait()
    return time.perf_counter() - started


def payloads(count: int) -> list[dict[str, int]]:
    return [{"analysis_id": n} for n in range(count)]


async def bench_bus(bus: RabbitBus | MemoryBus, count: int, batch: int) -> tuple[float, float]:
    """(seconds to publish ``count`` confirmed, seconds to publish and consume ``count``)."""
    await bus.start()
    await bus.declare("bench-publish", [f"{KEY}.publish"])
    counter = Counter(count)

    async def handle(_: Envelope) -> None:
        counter.hit()

    await bus.subscribe("bench", [KEY], handle, prefetch=PREFETCH)

    async def publish(key: str) -> None:
        items = [Envelope(str(uuid.uuid4()), key, p) for p in payloads(count)]
        for start in range(0, count, batch):
            await bus.publish(items[start : start + batch])

    started = time.perf_counter()
    await publish(f"{KEY}.publish")
    publish_only = time.perf_counter() - started
    round_trip = await timed(lambda: publish(KEY), counter)
    await bus.close()
    return publish_only, round_trip


async def bench_raw(url: str, prefix: str, count: int, batch: int) -> tuple[float, float]:
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            f"{prefix}.raw", aio_pika.ExchangeType.TOPIC, durable=True
        )
        arguments = RabbitBus(url, prefix=prefix).queue_arguments()  # same queues as RabbitBus
        sink = await channel.declare_queue(
            f"{prefix}.raw-publish", durable=True, arguments=arguments
        )
        await sink.bind(exchange, f"{KEY}.publish")
        consume_channel = await connection.channel(publisher_confirms=False)
        await consume_channel.set_qos(prefetch_count=PREFETCH)
        queue = await consume_channel.declare_queue(
            f"{prefix}.raw", durable=True, arguments=arguments
        )
        await queue.bind(exchange, KEY)
        counter = Counter(count)

        async def handle(message: AbstractIncomingMessage) -> None:
            json.loads(message.body)
            counter.hit()
            await message.ack()

        consumer_tag = await queue.consume(handle)

        async def publish(key: str) -> None:
            bodies = [json.dumps(p).encode() for p in payloads(count)]
            for start in range(0, count, batch):
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                body,
                                content_type="application/json",
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                message_id=str(uuid.uuid4()),
                            ),
                            key,
                        )
                        for body in bodies[start : start + batch]
                    )
                )

        started = time.perf_counter()
        await publish(f"{KEY}.publish")
        publish_only = time.perf_counter() - started
        round_trip = await timed(lambda: publish(KEY), counter)
        await queue.cancel(consumer_tag)
        for name in (f"{prefix}.raw", f"{prefix}.raw-publish"):
            await channel.queue_delete(name)
        await channel.exchange_delete(f"{prefix}.raw")
        return publish_only, round_trip


async def delete_topology(url: str, bus: RabbitBus) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in sorted(bus.declared_queues | {bus.dead_letter_queue}):
            await channel.queue_delete(name)
        for name in (bus.exchange, bus.dead_letter_exchange):
            await channel.exchange_delete(name)


def rates(count: int, timings: tuple[float, float]) -> tuple[float, float]:
    return count / timings[0], count / timings[1]


def report(label: str, best: tuple[float, float]) -> None:
    print(f"{label:<12} publish {best[0]:>9.0f} msg/s   publish+consume {best[1]:>9.0f} msg/s")


def best_of(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return max(r[0] for r in runs), max(r[1] for r in runs)


async def one_round(url: str, count: int, batch: int) -> tuple[tuple[float, float], ...]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    raw = rates(count, await bench_raw(url, prefix, count, batch))
    bus = RabbitBus(url, prefix=prefix, connection_name=f"{prefix} bench")
    try:
        ours = rates(count, await bench_bus(bus, count, batch))
    finally:
        await bus.close()
        await delete_topology(url, bus)
    memory = rates(count, await bench_bus(MemoryBus(), count, batch))
    return raw, ours, memory


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; best kept")
    args = parser.parse_args()
    print(f"{args.count} messages, batches of {args.batch}, prefetch {PREFETCH}")
    rounds = [await one_round(args.url, args.count, args.batch) for _ in range(args.rounds)]
    raw, ours, memory = (best_of([r[i] for r in rounds]) for i in range(3))
    report("raw aio-pika", raw)
    report("RabbitBus", ours)
    report("MemoryBus", memory)
    print(
        f"RabbitBus / raw: publish {ours[0] / raw[0]:.2f}x, publish+consume {ours[1] / raw[1]:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
