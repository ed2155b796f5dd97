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
from sqlalchemy import exc as sa_exc

from http_edge.access import Access
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


DATABASE_RETRY_AFTER_SECONDS = 10
DATABASE_UNAVAILABLE = "Database unavailable; try again later"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        check_request_text(request)
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, f"Request body too large: {exc.text}")
    except web.HTTPException as exc:
        if exc.status >= 400:
            response = error_response(exc.status, exc.reason)
            if "Allow" in exc.headers:  # 405: the methods the resource has (RFC 9110)
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        raise
    except Exception as exc:
        return unexpected_error(request, exc)


def unexpected_error(request: web.Request, exc: Exception) -> web.Response:
    """503 with ``Retry-After`` when the database cannot be reached, else 500; logged either
    way under the route template, never the path (paths can hold secrets: webhook tokens)."""
    resource = request.match_info.route.resource
    where = resource.canonical if resource is not None else "unmatched route"
    if database_unavailable(exc):
        log.error("database unavailable in %s %s: %s", request.method, where, type(exc).__name__)
        response = error_response(503, DATABASE_UNAVAILABLE)
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response
    log.exception("unhandled error in %s %s", request.method, where)
    return error_response(500, "Internal server error")


# SQLSTATE classes and codes that mean "cannot reach or use the database now": connection
# exceptions (08), insufficient resources (53), operator intervention (57P: shutdown, dropped
# database), no such database (3D000), refused role or password (28), no CONNECT privilege.
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P", "3D000", "28")
_NO_CONNECT_PRIVILEGE = "permission denied for database"


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (rather than a bug or bad data)."""
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # pool exhausted, or a connection lost
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        sqlstate = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
        if sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES):
            return True
        if _NO_CONNECT_PRIVILEGE in str(orig):
            return True
        # SQLite: the file cannot be opened, or stays locked past busy_timeout.
        text = str(orig).lower()
        return isinstance(exc, sa_exc.OperationalError) and (
            "unable to open database" in text or "database is locked" in text
        )
    # asyncpg raises socket errors (refused, reset, unknown host) as they are.
    return isinstance(exc, OSError) and _raised_in_database_driver(exc)


def _raised_in_database_driver(exc: BaseException) -> bool:
    trace = exc.__traceback__
    while trace is not None:
        module = trace.tb_frame.f_globals.get("__name__", "")
        if module.startswith(("asyncpg.", "sqlalchemy.pool", "sqlalchemy.engine")):
            return True
        trace = trace.tb_next
    return False


def check_request_text(request: web.Request) -> None:
    """Query parameters the databases could not store (NUL, lone surrogates) are refused up
    front, as in JSON bodies. (Path captures are each checked by their handler: an id that
    holds NUL is simply not found.)"""
    for text in [*request.query.keys(), *request.query.values()]:
        problem = _bad_text(text)
        if problem is not None:
            raise bad_request(f"Invalid query parameters: {problem}")


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
    problem = _json_problem(value)
    if problem is not None:
        raise ValueError(problem)
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


def _too_deep() -> str:
    return f"Error parsing JSON: nested more than {MAX_JSON_DEPTH} levels deep"


def _bad_text(text: str) -> str | None:
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
            problem = _bad_text(value)
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
                problem = _bad_text(key)
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


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """SkyPortal's rule: true, yes, t and 1 (any case) are true."""
    value = request.query.get(name)
    if value is None:
        return default
    return value.lower() in {"true", "yes", "t", "1"}


def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    """An integer query parameter; absent = ``default``. Given more than once, or given empty,
    it is refused like any other value that is not one integer."""
    values = request.query.getall(name, [])
    if not values:
        return default
    if len(values) > 1:
        raise bad_request(f"Invalid {name}: give it once")
    if values[0] == "":
        raise bad_request(f"Invalid {name}: empty value")
    try:
        return int(values[0])
    except ValueError:
        raise bad_request(f"Invalid {name}: {values[0]}") from None


MAX_ID = 2**31 - 1  # ids are 32-bit integer columns on PostgreSQL


def is_id(value: Any) -> bool:
    """A JSON value usable as a row id (not a bool, within the column's range)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def query_id(request: web.Request, name: str) -> int | None:
    """An id in the query string (None when absent), within the id columns' range."""
    value = query_int(request, name)
    if value is not None and not is_id(value):
        raise bad_request(f"Invalid {name}: {request.query[name]}")
    return value


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
    if number > MAX_ID:
        raise bad_request(f"Invalid pageNumber: must be at most {MAX_ID}")
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
    """One HTTP route: who may call it, and the facts the OpenAPI document needs."""

    method: str
    path: str
    handler: Handler
    access: Access
    summary: str
    tag: str
    body: dict[str, Any] | None = None
    query: tuple[str, ...] = ()
    responses: dict[int, str] = field(default_factory=dict)


def add_routes(app: web.Application, routes: Iterable[Route]) -> dict[web.AbstractRoute, Route]:
    """Register ``routes``; answers which table entry each registered aiohttp route is."""
    return {app.router.add_route(r.method, r.path, r.handler): r for r in routes}
