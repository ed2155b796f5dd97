"""Query-string values for the analysis endpoints: every bad value is a 400 naming it."""

from __future__ import annotations

import math

from aiohttp import web

from http_edge.web import MAX_ID, bad_request


def text_list(request: web.Request, name: str) -> list[str] | None:
    """A comma list of names (None when absent); empty items are dropped."""
    raw = request.query.get(name)
    if raw is None or not raw.strip():
        return None
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if "\x00" in raw or any(len(item) > 255 for item in items):
        raise bad_request(f"Invalid {name}: {raw[:100]!r}")
    return items


def id_list(request: web.Request, name: str) -> list[int] | None:
    items = text_list(request, name)
    if items is None:
        return None
    try:
        ids = [int(item) for item in items]
    except ValueError:
        raise bad_request(f"Invalid {name}: must be a comma list of integer IDs") from None
    if any(not 0 < i <= MAX_ID for i in ids):
        raise bad_request(f"Invalid {name}: must be a comma list of integer IDs")
    return ids


def number(request: web.Request, name: str) -> float | None:
    """A number in the query string (None when absent); NaN and infinities included."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise bad_request(f"Invalid {name}: {raw[:100]!r} is not a number") from None


def finite_number(request: web.Request, name: str) -> float | None:
    value = number(request, name)
    if value is not None and not math.isfinite(value):
        raise bad_request(f"Invalid {name}: must be finite")
    return value


def positive_number(request: web.Request, name: str) -> float | None:
    value = number(request, name)
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise bad_request(f"Invalid {name}: must be a finite number > 0")
    return value


def bounded_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"Invalid {name}: {raw[:100]!r} is not an integer") from None
    if not low <= value <= high:
        raise bad_request(f"Invalid {name}: must be between {low} and {high}")
    return value


def bounded_number(
    request: web.Request, name: str, default: float, low: float, high: float
) -> float:
    value = positive_number(request, name)
    if value is None:
        return default
    if not low <= value <= high:
        raise bad_request(f"Invalid {name}: must be between {low:g} and {high:g}")
    return value


def choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise bad_request(f"Invalid {name}: {raw[:100]!r} (choose one of {', '.join(choices)})")
    return raw
