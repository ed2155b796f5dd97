"""Standard Webhooks signatures (https://www.standardwebhooks.com), both directions.

A signed request carries three headers:

- ``webhook-id``: the message id, the same on every retry of one message (an idempotency key);
- ``webhook-timestamp``: Unix seconds when it was sent;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>``;
  several space-separated signatures may be present (key rotation), one matching is enough.

The key is the base64-decoded part of a ``whsec_<base64>`` secret, or the UTF-8 bytes of any
other secret. ``verify`` is what a receiving service (or skyhook's webhook receiver) calls.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The request is not correctly signed; the message says what is wrong."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: base64 after ``whsec_``, else the secret's own bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a whsec_ secret must be followed by valid base64") from exc
    return secret.encode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one body."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_headers(
    secret: str, message_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three headers to add to a request whose body is exactly ``body``."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: sign(secret, message_id, stamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> str:
    """Check a signed request; returns its ``webhook-id`` or raises :class:`SignatureError`.

    ``headers`` may be any mapping (header names are matched case-insensitively); ``body`` must
    be the raw bytes received, before any JSON parsing.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id = lowered.get(ID_HEADER)
    stamp_text = lowered.get(TIMESTAMP_HEADER)
    signatures = lowered.get(SIGNATURE_HEADER)
    if not message_id or not stamp_text or not signatures:
        raise SignatureError(
            f"missing {ID_HEADER}, {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
        )
    try:
        stamp = int(stamp_text)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance_seconds:
        raise SignatureError(f"{TIMESTAMP_HEADER} is outside the {tolerance_seconds} s tolerance")
    expected = sign(secret, message_id, stamp, body).encode()
    for candidate in signatures.split():
        version, _, _value = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(candidate.encode(), expected):
            return message_id
    raise SignatureError("no matching signature")
