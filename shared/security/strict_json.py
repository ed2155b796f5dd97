"""Strict JSON for bytes from outside: what the databases can store, within a nesting budget."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_JSON_DEPTH = 64  # nesting of objects and arrays in a request body


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object, strictly: no NaN, Infinity or number too large
    for a float (``1e400``), nesting at most :data:`MAX_JSON_DEPTH` deep, and no NUL character
    or lone surrogate (``\\ud800``) in any string or key, which the databases refuse.
    Otherwise ValueError with the message for a 400."""
    if not raw.strip():
        raise ValueError("Error parsing JSON: request body is empty")
    value = parse_json_text(raw)
    if not isinstance(value, dict):
        raise ValueError("Error parsing JSON: the body must be a JSON object")
    return value


def parse_json_text(raw: bytes | str) -> Any:
    """Any strict JSON value (the rules of :func:`parse_json_object`); ValueError otherwise."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(_too_deep()) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"Error parsing JSON: {exc}") from None
    if _plainly_storable(raw):
        return value
    problem = _json_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _plainly_storable(raw: bytes | str) -> bool:
    """Whether the text alone shows that its parsed value has no problem to look for: it is
    strict UTF-8 that :func:`unstorable_text` passes, has no ``\\u`` escape (the only way a
    JSON string can hold NUL or a surrogate) and too few brackets to nest too deep. Most
    bodies are; the rest are walked value by value."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")  # strict: surrogates written as bytes fail here
        except UnicodeDecodeError:
            return False
    return (
        unstorable_text(raw) is None
        and "\\u" not in raw
        and raw.count("[") + raw.count("{") < MAX_JSON_DEPTH
    )


def _too_deep() -> str:
    return f"Error parsing JSON: nested more than {MAX_JSON_DEPTH} levels deep"


def unstorable_text(text: str) -> str | None:
    """What makes a string unstorable, or None."""
    if "\x00" in text:
        return "must not contain NUL (\\u0000) characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain lone surrogates (\\ud800-\\udfff)"
    return None


def _json_problem(root: Any) -> str | None:
    """The first problem of a parsed value (too deep, a bad string and where it is), or None.
    Iterative, so that no depth of nesting can exhaust the stack."""
    pending: list[tuple[Any, str, int]] = [(root, "", 0)]
    while pending:
        value, path, depth = pending.pop()
        if isinstance(value, str):
            problem = unstorable_text(value)
            if problem is not None:
                return f"Invalid {path or 'body'}: {problem}"
            continue
        if not isinstance(value, dict | list):
            continue
        if depth >= MAX_JSON_DEPTH:
            return _too_deep()
        if isinstance(value, list):
            items = [(item, f"{path}[{index}]") for index, item in enumerate(value)]
        else:
            items = []
            for key, item in value.items():
                problem = unstorable_text(key)
                if problem is not None:
                    return f"Invalid {path or 'body'}: a key {problem}"
                items.append((item, f"{path}.{key}" if path else key))
        pending.extend((item, where, depth + 1) for item, where in reversed(items))
    return None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is too large (not a finite float)")
    return number
