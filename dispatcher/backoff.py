"""When to try again: the configured delays with ±20% jitter, or the service's Retry-After."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

JITTER = 0.2


def retry_delay(
    attempt_number: int,
    delays: Sequence[float],
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait after failed attempt ``attempt_number`` (1-based); None when exhausted.

    A ``Retry-After`` longer than our own delay wins: the service knows when it will be back.
    """
    if attempt_number < 1 or attempt_number > len(delays):
        return None
    base = delays[attempt_number - 1]
    jittered = base * (1 + (rng or random).uniform(-JITTER, JITTER))
    if retry_after is not None and retry_after > jittered:
        return retry_after
    return max(0.0, jittered)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds)
