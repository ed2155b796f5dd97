"""HTTP conventions shared by every skyhook HTTP service.

SkyPortal's envelopes: ``{"status": "success", "data": …, "version": …}`` and
``{"status": "error", "message": …, "data": {}, "version": …}``. Handlers raise
:class:`ApiError`, the domain raises a :class:`~shared.domain.errors.DomainError`; the
middleware turns either (and aiohttp's own HTTP errors) into an envelope.
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

from http_edge.access import Access
from shared import __version__
from shared.db.availability import database_unavailable
from shared.domain.errors import (
    DomainError,
    InvalidInput,
    NotFound,
    NotPermitted,
    PermissionMissing,
)
from shared.domain.ids import MAX_ID, is_id
from shared.security.strict_json import parse_json_object, unstorable_text

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


# SkyPortal answers a missing ACL with 401, not 403.
DOMAIN_ERROR_STATUS: dict[type[DomainError], int] = {
    InvalidInput: 400,
    PermissionMissing: 401,
    NotPermitted: 403,
    NotFound: 404,
}


def status_of(error: DomainError) -> int:
    for kind in type(error).__mro__:
        if kind in DOMAIN_ERROR_STATUS:
            return DOMAIN_ERROR_STATUS[kind]
    return 400


DATABASE_RETRY_AFTER_SECONDS = 10
DATABASE_UNAVAILABLE = "Database unavailable; try again later"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        check_request_text(request)
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message)
    except DomainError as exc:
        return error_response(status_of(exc), exc.message)
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


def check_request_text(request: web.Request) -> None:
    """Query parameters the databases could not store (NUL, lone surrogates) are refused up
    front, as in JSON bodies. (Path captures are each checked by their handler: an id that
    holds NUL is simply not found.)"""
    if not request.query_string:
        return
    for text in [*request.query.keys(), *request.query.values()]:
        problem = unstorable_text(text)
        if problem is not None:
            raise bad_request(f"Invalid query parameters: {problem}")


async def json_body(request: web.Request, *, optional: bool = True) -> dict[str, Any]:
    """The request body as a JSON object; an empty body counts as ``{}`` when optional."""
    raw = await request.read()
    if optional and not raw.strip():
        return {}
    try:
        return parse_json_object(raw)
    except ValueError as exc:
        raise bad_request(str(exc)) from None


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
    query: tuple[str, ...] = ()
    responses: dict[int, str] = field(default_factory=dict)


def add_routes(app: web.Application, routes: Iterable[Route]) -> dict[web.AbstractRoute, Route]:
    """Register ``routes``; answers which table entry each registered aiohttp route is."""
    return {app.router.add_route(r.method, r.path, r.handler): r for r in routes}
