"""HTTP conventions shared by every skyhook HTTP service.

SkyPortal's envelopes: ``{"status": "success", "data": …, "version": …}`` and
``{"status": "error", "message": …, "data": {}, "version": …}``. Handlers raise
:class:`ApiError`; the middleware turns it (and aiohttp's own HTTP errors) into an envelope.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from aiohttp import web

from shared import __version__

log = logging.getLogger("skyhook.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, allow_nan=False, separators=(",", ":"))


def success(data: Any = None, status: int = 200) -> web.Response:
    body = {"status": "success", "data": {} if data is None else data, "version": __version__}
    return web.Response(text=dumps(body), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    body = {"status": "error", "message": message, "data": {}, "version": __version__}
    return web.json_response(body, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, f"Request body too large: {exc.text}")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(exc.status, exc.reason)
        raise
    except Exception:
        # The route template, not the path: paths can hold secrets (webhook tokens).
        resource = request.match_info.route.resource
        where = resource.canonical if resource is not None else "unmatched route"
        log.exception("unhandled error in %s %s", request.method, where)
        return error_response(500, "Internal server error")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object (strict: no NaN or Infinity, no NUL
    characters, which PostgreSQL refuses); otherwise ValueError with the message for a 400."""
    if not raw.strip():
        raise ValueError("Error parsing JSON: request body is empty")
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"Error parsing JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("Error parsing JSON: the body must be a JSON object")
    where = _nul_location(value, "")
    if where is not None:
        raise ValueError(f"Invalid {where or 'body'}: must not contain NUL (\\u0000) characters")
    return value


async def json_body(request: web.Request, *, optional: bool = True) -> dict[str, Any]:
    """The request body as a JSON object; an empty body counts as ``{}`` when optional."""
    raw = await request.read()
    if optional and not raw.strip():
        return {}
    try:
        return parse_json_object(raw)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def _nul_location(value: Any, path: str) -> str | None:
    """Where a NUL character sits (``origin[1]``, ``altdata.key``), or None.

    PostgreSQL refuses NUL in text and JSONB; refuse it at the door instead of failing later.
    """
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_location(item, f"{path}[{index}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return path or "body"
            found = _nul_location(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    return None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """SkyPortal's rule: true, yes, t and 1 (any case) are true."""
    value = request.query.get(name)
    if value is None:
        return default
    return value.lower() in {"true", "yes", "t", "1"}


def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"Invalid {name}: {value}") from None


MAX_ID = 2**31 - 1  # ids are 32-bit integer columns on PostgreSQL


def is_id(value: Any) -> bool:
    """A JSON value usable as a row id (not a bool, within the column's range)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def path_int(request: web.Request, key: str, label: str | None = None) -> int:
    """A path capture coerced to int, with SkyPortal's message on failure."""
    value = request.match_info.get(key, "")
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"Invalid {label or key}: {value}") from None
    if not is_id(number):
        raise bad_request(f"Invalid {label or key}: {value}")
    return number


@dataclass(frozen=True)
class Page:
    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    def answer(self, total: int, **fields: Any) -> dict[str, Any]:
        """SkyPortal's paged answer: ``fields`` (the page's items under their name) and
        ``totalMatches``, ``pageNumber``, ``numPerPage``."""
        return {**fields, "totalMatches": total, "pageNumber": self.number, "numPerPage": self.size}


def success_page(items: list[Any], page: Page, total: int) -> web.Response:
    """A page of a list SkyPortal answers as a bare list: ``data`` stays that list and the
    paging metadata (``totalMatches``, ``pageNumber``, ``numPerPage``) sits beside it."""
    body = {
        "status": "success",
        "data": items,
        **page.answer(total),
        "version": __version__,
    }
    return web.Response(text=dumps(body), content_type="application/json")


def page_from_query(request: web.Request, default_size: int, max_size: int) -> Page:
    number = query_int(request, "pageNumber", 1)
    size = query_int(request, "numPerPage", default_size)
    assert number is not None and size is not None
    if number < 1:
        raise bad_request("Invalid pageNumber: must be >= 1")
    if size < 1 or size > max_size:
        raise bad_request(f"Invalid numPerPage: must be between 1 and {max_size}")
    return Page(number, size)


def finite(value: Any, name: str, *, allow_none: bool = False) -> float | None:
    """A finite float, or a 400 naming the field."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"Invalid {name}: must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise bad_request(f"Invalid {name}: out of range") from None
    if not math.isfinite(number):
        raise bad_request(f"Invalid {name}: must be finite")
    return number


@dataclass(frozen=True)
class Route:
    """One HTTP route with the facts the OpenAPI document needs."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: bool = True
    body: dict[str, Any] | None = None
    query: tuple[str, ...] = ()
    responses: dict[int, str] = field(default_factory=dict)


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
