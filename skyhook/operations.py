"""Operator commands that talk to the bus: inspect and re-drive dead-lettered messages."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from shared.bus.base import DEATH_QUEUE_HEADER, DEATH_REASON_HEADER
from shared.runtime.resources import bus_from
from shared.runtime.settings import Settings


def _check_broker(settings: Settings) -> None:
    if settings.uses_memory_bus:
        raise ValueError(
            "SKYHOOK_AMQP_URL is memory://: the in-process bus keeps no dead letters between "
            "processes; point SKYHOOK_AMQP_URL at the RabbitMQ broker"
        )


async def list_dead_letters(settings: Settings, limit: int) -> int:
    """Print one JSON object per dead letter (oldest first); they stay in the queue."""
    _check_broker(settings)
    bus = bus_from(settings)
    await bus.start()
    try:
        envelopes = await bus.list_dead_letters(limit)
    finally:
        await bus.close()
    for envelope in envelopes:
        print(
            json.dumps(
                {
                    "message_id": envelope.message_id,
                    "routing_key": envelope.routing_key,
                    "reason": envelope.headers.get(DEATH_REASON_HEADER),
                    "queue": envelope.headers.get(DEATH_QUEUE_HEADER),
                    "payload": envelope.payload,
                },
                default=str,
            )
        )
    print(f"{len(envelopes)} dead letter(s)", file=sys.stderr)
    return len(envelopes)


async def replay_dead_letters(settings: Settings, message_ids: Sequence[str] | None) -> int:
    """Re-publish dead letters (all, or those ids) to their original routing keys."""
    _check_broker(settings)
    bus = bus_from(settings)
    await bus.start()
    try:
        replayed = await bus.replay_dead_letters(message_ids or None)
    finally:
        await bus.close()
    print(f"replayed {replayed} dead letter(s)", file=sys.stderr)
    return replayed
