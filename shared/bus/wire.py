"""How events travel on RabbitMQ: batch messages, single-event messages, dead letters.

A **batch message** carries several events of one routing key (the AMQP routing key, so topic
routing is per event as before). Its content type is ``BATCH_CONTENT_TYPE`` and its body a
JSON array, one item per event, in publish order::

    [{"message_id": "…", "payload": {…}}, {"message_id": "…", "payload": {…}, "headers": {…}}]

Optional item keys: ``headers`` (the envelope's own), ``routing_key`` (when the message is not
routed by it: a retry sent straight to one queue) and ``delivery_count`` (failed deliveries so
far, counted by the consumer since the broker sees only the batch).

A **single-event message** (``application/json``; what older code and operators publish) has
the payload as body and the id in the ``message_id`` property. Dead letters are written in
this format, one per event, so the dead-letter tooling sees each on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from shared.bus.base import Envelope

JSON = "application/json"
BATCH_CONTENT_TYPE = "application/vnd.skyhook.batch+json"
UNDECODABLE_HEADER = "x-skyhook-undecodable"
BROKER_DELIVERY_COUNT = "x-delivery-count"
# One encoder for every item: json.dumps with separators would build a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode_item(envelope: Envelope, *, with_route: bool = False) -> bytes:
    item: dict[str, Any] = {"message_id": envelope.message_id, "payload": envelope.payload}
    if envelope.headers:
        item["headers"] = envelope.headers
    if with_route:
        item["routing_key"] = envelope.routing_key
    if envelope.delivery_count:
        item["delivery_count"] = envelope.delivery_count
    return _ENCODER.encode(item).encode()


def pack(items: Iterable[bytes], max_events: int, max_bytes: int) -> Iterator[bytes]:
    """JSON arrays of up to ``max_events`` items and ``max_bytes`` (a bigger item goes alone)."""
    chunk: list[bytes] = []
    size = 2
    for item in items:
        if chunk and (len(chunk) >= max_events or size + len(item) > max_bytes):
            yield b"[" + b",".join(chunk) + b"]"
            chunk, size = [], 2
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        yield b"[" + b",".join(chunk) + b"]"


def by_routing_key(envelopes: Iterable[Envelope]) -> dict[str, list[Envelope]]:
    """Envelopes per routing key, each list in publish order."""
    groups: dict[str, list[Envelope]] = {}
    for envelope in envelopes:
        groups.setdefault(envelope.routing_key, []).append(envelope)
    return groups


def batch_bodies(
    envelopes: Sequence[Envelope], max_events: int, max_bytes: int, *, with_route: bool = False
) -> list[tuple[str, bytes]]:
    """(routing key, batch body) pairs carrying every envelope."""
    return [
        (key, body)
        for key, group in by_routing_key(envelopes).items()
        for body in pack(
            [encode_item(e, with_route=with_route) for e in group], max_events, max_bytes
        )
    ]


def is_batch(message: AbstractIncomingMessage) -> bool:
    return message.content_type == BATCH_CONTENT_TYPE


def envelopes_of(message: AbstractIncomingMessage) -> list[Envelope]:
    """The events a message carries (one for a single-event message); ValueError if garbled."""
    if not is_batch(message):
        return [envelope_of(message)]
    headers = plain_headers(message)
    broker_count = headers.get(BROKER_DELIVERY_COUNT)
    extra = broker_count if isinstance(broker_count, int) else 0
    return [_item_envelope(item, message, headers, extra) for item in _items(message.body)]


def _items(body: bytes) -> list[dict[str, Any]]:
    items = _json(body)
    if not isinstance(items, list) or not all(_valid_item(i) for i in items):
        raise ValueError("batch body is not a JSON array of events")
    return items


def _valid_item(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("message_id"), str)
        and isinstance(item.get("payload"), dict)
        and isinstance(item.get("headers", {}), dict)
        and isinstance(item.get("routing_key", ""), str)
        and isinstance(item.get("delivery_count", 0), int)
    )


def _item_envelope(
    item: dict[str, Any], message: AbstractIncomingMessage, headers: dict[str, Any], extra: int
) -> Envelope:
    return Envelope(
        message_id=item["message_id"],
        routing_key=item.get("routing_key") or original_routing_key(message),
        payload=item["payload"],
        headers={**headers, **item.get("headers", {})},
        delivery_count=item.get("delivery_count", 0) + extra,
    )


def envelope_of(message: AbstractIncomingMessage) -> Envelope:
    """A single-event message as an Envelope; ValueError if its body is not a JSON object."""
    payload = _json(message.body)
    if not isinstance(payload, dict):
        raise ValueError("body is not a JSON object")
    headers = plain_headers(message)
    count = headers.get(BROKER_DELIVERY_COUNT)
    return Envelope(
        message_id=message.message_id or "",
        routing_key=message.routing_key or "",
        payload=payload,
        headers=headers,
        delivery_count=count if isinstance(count, int) else 0,
    )


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from exc


def dead_letter_envelopes(message: AbstractIncomingMessage) -> list[Envelope]:
    """The events of a dead letter, with the routing key each had before it died.

    A batch lands here whole when no queue was bound to its routing key (the alternate
    exchange) or when the broker gave up on it; an undecodable message is one envelope
    flagged with ``UNDECODABLE_HEADER``.
    """
    try:
        envelopes = envelopes_of(message)
    except ValueError as exc:
        headers = {**plain_headers(message), UNDECODABLE_HEADER: str(exc)}
        key = original_routing_key(message)
        return [Envelope(message.message_id or "", key, {}, headers)]
    if is_batch(message):
        return [_as_dead(e) for e in envelopes]
    return [_as_dead(envelopes[0], original_routing_key(message))]


def _as_dead(envelope: Envelope, routing_key: str | None = None) -> Envelope:
    return Envelope(
        envelope.message_id, routing_key or envelope.routing_key, envelope.payload, envelope.headers
    )


def original_routing_key(message: AbstractIncomingMessage) -> str:
    # x-death lists the most recent death first; a message the alternate exchange caught
    # (no queue was bound) has no x-death and keeps its routing key.
    deaths = (message.headers or {}).get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[0], dict):
        keys = deaths[0].get("routing-keys")
        if isinstance(keys, list | tuple) and keys:
            return str(_plain(keys[0]))
    return message.routing_key or ""


def plain_headers(message: AbstractIncomingMessage) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in (message.headers or {}).items()}


def _plain(value: Any) -> Any:
    """AMQP header values as JSON-friendly Python (x-death holds timestamps and byte strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return value
