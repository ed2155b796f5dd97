"""Authentication and authorization, driven by the route table: each route's access level
(gateway/routes.py) says whether a caller must be authenticated (``Authorization: token …`` or
the web app's session cookie) and which ACL, or system admin, the whole route requires."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.web_session import principal_from_cookie
from http_edge.access import Access
from http_edge.web import ApiError, Handler, Route
from shared.db.session import read_session
from shared.domain.access import Principal, versioned_principals
from shared.domain.access_versions import Versioned, VersionedCache
from shared.domain.enums import ACL
from shared.runtime.group_commit import GroupCommit
from shared.security.secrets import hash_token

PRINCIPAL = web.RequestKey("principal", Principal)
# The ``principals`` counter the request's principal was read at (see access_versions).
PRINCIPAL_VERSION = web.RequestKey("principal_version", int)
# Requests that arrive together are authenticated together (one query per batch).
PRINCIPALS = web.AppKey("principals", GroupCommit[str, Versioned[Principal] | None])
# Principals by token hash, for the routes whose access allows a cached caller.
CACHED_PRINCIPALS = web.AppKey("cached_principals", VersionedCache[str, Principal])
CACHED_PRINCIPALS_LIMIT = 10_000


class AccessTable:
    """The access level of every registered route, and of requests no route matches."""

    def __init__(self, registered: dict[web.AbstractRoute, Route]) -> None:
        self._by_route = {route: entry.access for route, entry in registered.items()}
        # A request no route matches (404, or 405 with Allow) needs what the routes it came
        # close to need: no token under the fixed beginning of a public /api route (a webhook
        # post to a mistyped path is told 404), a token anywhere else under /api/ (unknown
        # paths reveal nothing before authentication), nothing outside /api/.
        self._public_api_prefixes = tuple(
            {
                entry.path.partition("{")[0]
                for entry in registered.values()
                if entry.access.public and entry.path.startswith("/api/")
            }
        )

    def of(self, request: web.Request) -> Access:
        found = self._by_route.get(request.match_info.route)
        if found is not None:
            return found
        path = request.path
        if not path.startswith("/api/") or path.startswith(self._public_api_prefixes):
            return Access.PUBLIC
        return Access.USER


ACCESS_TABLE = web.AppKey("access_table", AccessTable)


def setup_auth(
    app: web.Application, engine: AsyncEngine, registered: dict[web.AbstractRoute, Route]
) -> None:
    """Give the application the access levels of its ``registered`` routes and its batcher of
    token lookups (drained on shutdown)."""
    app[ACCESS_TABLE] = AccessTable(registered)

    async def look_up(token_hashes: list[str]) -> list[Versioned[Principal] | None]:
        async with read_session(engine) as session:
            return await versioned_principals(session, token_hashes)

    app[PRINCIPALS] = GroupCommit(look_up)
    app[CACHED_PRINCIPALS] = VersionedCache(CACHED_PRINCIPALS_LIMIT)
    app.cleanup_ctx.append(_drain_principals)


async def _drain_principals(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[PRINCIPALS].drain()


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def _token_from(header: str) -> str:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "token" or not token.strip():
        raise ApiError(401, "Credentials malformed; expected form `Authorization: token abcd1234`")
    return token.strip()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = request.app[ACCESS_TABLE].of(request)
    if access.public:
        return await handler(request)
    found = await _authenticate(request, cached=access.cached_caller)
    _authorize(found, access)
    request[PRINCIPAL] = found
    return await handler(request)


async def reauthenticate(request: web.Request) -> Principal:
    """For a handler whose write found its cached caller stale: forget every cached caller,
    then authenticate and authorize this request afresh (401/403 as the middleware would)."""
    request.app[CACHED_PRINCIPALS].clear()
    found = await _authenticate(request, cached=False)
    _authorize(found, request.app[ACCESS_TABLE].of(request))
    request[PRINCIPAL] = found
    return found


async def _authenticate(request: web.Request, *, cached: bool) -> Principal:
    header = request.headers.get("Authorization")
    if not header:
        found = await principal_from_cookie(request)  # the web app's session
        if found is None:
            raise ApiError(401, "Unauthorized: send `Authorization: token <token>`")
        return found
    copy = await request.app[CACHED_PRINCIPALS].read_through(
        hash_token(_token_from(header)), request.app[PRINCIPALS].submit, cached=cached
    )
    if copy is None:
        raise ApiError(401, "Invalid token")
    request[PRINCIPAL_VERSION] = copy.version
    return copy.value


def _authorize(me: Principal, access: Access) -> None:
    if access.level == "admin":
        me.require_admin()
    elif access.level == "acl" and access.acl is not None:
        me.require(ACL(access.acl))
