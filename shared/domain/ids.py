"""Row ids as the API accepts them."""

from __future__ import annotations

from typing import Any

MAX_ID = 2**31 - 1  # ids are 32-bit integer columns on PostgreSQL


def is_id(value: Any) -> bool:
    """A JSON value usable as a row id (not a bool, within the column's range)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID
