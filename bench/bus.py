"""Bus throughput and CPU per event: RabbitBus (batch messages) against raw aio-pika (one event
per message).

    .venv/bin/python bench/bus.py [--url amqp://...] [--count 5000] [--batch 500]

Events are published ``--batch`` per ``publish`` call, as the outbox relay does. Both sides use
the same topology (durable topic exchange, quorum queue, persistent messages, publisher
confirms, manual acks, the same prefetch) under a unique prefix that is deleted at the end.
Client CPU is this process's CPU time; broker CPU is the ``beam.smp`` process's, when this
machine runs the broker (it also counts whatever else uses the broker meanwhile). MemoryBus is
printed for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from shared.bus.base import Envelope
from shared.bus.memory import MemoryBus
from shared.bus.rabbit import RabbitBus

PREFETCH = 256
KEY = "bench.message"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Figures:
    publish_rate: float  # events/s, confirmed publish alone
    rate: float  # events/s, publish and consume
    client_ms: float  # this process's CPU per event, publish and consume
    broker_ms: float | None  # the broker's CPU per event, publish and consume


class Counter:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = 0
        self.done = asyncio.Event()

    def hit(self) -> None:
        self.seen += 1
        if self.seen >= self.expected:
            self.done.set()


def broker_pid() -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
            except OSError:
                continue
    return None


def broker_cpu(pid: int | None) -> float | None:
    """Seconds of CPU the broker used so far (user + system)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


async def measure(
    count: int,
    publish: Callable[[str], Awaitable[None]],
    counter: Counter,
    *,
    broker: bool = True,
) -> Figures:
    started = time.perf_counter()
    await publish(f"{KEY}.publish")
    publish_only = time.perf_counter() - started

    pid = broker_pid() if broker else None
    broker_before, cpu_before = broker_cpu(pid), time.process_time()
    started = time.perf_counter()
    await publish(KEY)
    async with asyncio.timeout(300):
        await counter.done.wait()
    elapsed = time.perf_counter() - started
    client = time.process_time() - cpu_before
    broker_after = broker_cpu(pid)
    broker_cpu_seconds = (
        None if broker_before is None or broker_after is None else broker_after - broker_before
    )
    return Figures(
        count / publish_only,
        count / elapsed,
        1000 * client / count,
        None if broker_cpu_seconds is None else 1000 * broker_cpu_seconds / count,
    )


def payloads(count: int) -> list[dict[str, int]]:
    return [{"analysis_id": n} for n in range(count)]


async def bench_bus(bus: RabbitBus | MemoryBus, count: int, batch: int) -> Figures:
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

    figures = await measure(count, publish, counter, broker=isinstance(bus, RabbitBus))
    await bus.close()
    return figures


async def raw_publish(exchange: AbstractExchange, key: str, count: int, batch: int) -> None:
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


async def bench_raw(url: str, prefix: str, count: int, batch: int) -> Figures:
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
        figures = await measure(
            count, lambda key: raw_publish(exchange, key, count, batch), counter
        )
        await queue.cancel(consumer_tag)
        for name in (f"{prefix}.raw", f"{prefix}.raw-publish"):
            await channel.queue_delete(name)
        await channel.exchange_delete(f"{prefix}.raw")
        return figures


async def delete_topology(url: str, bus: RabbitBus) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in sorted(bus.declared_queues | {bus.dead_letter_queue}):
            await channel.queue_delete(name)
        for name in (bus.exchange, bus.dead_letter_exchange):
            await channel.exchange_delete(name)


def best_of(runs: list[Figures]) -> Figures:
    brokers = [r.broker_ms for r in runs if r.broker_ms is not None]
    return Figures(
        max(r.publish_rate for r in runs),
        max(r.rate for r in runs),
        min(r.client_ms for r in runs),
        min(brokers) if brokers else None,
    )


def report(label: str, best: Figures) -> None:
    broker = "n/a" if best.broker_ms is None else f"{best.broker_ms:.3f} ms/ev"
    print(
        f"{label:<28} publish {best.publish_rate:>8.0f} ev/s   publish+consume "
        f"{best.rate:>8.0f} ev/s   client CPU {best.client_ms:.3f} ms/ev   broker CPU {broker}"
    )


async def one_round(url: str, count: int, batch: int) -> tuple[Figures, ...]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    raw = await bench_raw(url, prefix, count, batch)
    bus = RabbitBus(url, prefix=prefix, connection_name=f"{prefix} bench")
    try:
        ours = await bench_bus(bus, count, batch)
    finally:
        await bus.close()
        await delete_topology(url, bus)
    memory = await bench_bus(MemoryBus(), count, batch)
    return raw, ours, memory


def load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500, help="events per publish call")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; best kept")
    args = parser.parse_args()
    events_per_message = RabbitBus(args.url).max_batch_events
    print(
        f"{args.count} events, {args.batch} per publish call, prefetch {PREFETCH}; "
        f"load average {load()} (1/5/15 min) at start"
    )
    rounds = [await one_round(args.url, args.count, args.batch) for _ in range(args.rounds)]
    raw, ours, memory = (best_of([r[i] for r in rounds]) for i in range(3))
    report("raw aio-pika, 1 ev/message", raw)
    report(f"RabbitBus, {events_per_message} ev/message", ours)
    report("MemoryBus", memory)
    print(
        f"RabbitBus / raw: publish {ours.publish_rate / raw.publish_rate:.2f}x, "
        f"publish+consume {ours.rate / raw.rate:.2f}x, "
        f"client CPU per event {ours.client_ms / raw.client_ms:.3f}x"
    )
    print(f"load average {load()} at the end")


if __name__ == "__main__":
    asyncio.run(main())
