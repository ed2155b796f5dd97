"""Token authentication: `Authorization: token <token>` on /api routes but the public ones."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.web_session import SESSION_PATH, principal_from_cookie
from http_edge.web import ApiError, Handler
from shared.db.session import read_session
from shared.domain.access import Principal, principals_from_token_hashes
from shared.runtime.group_commit import GroupCommit
from shared.security.secrets import hash_token

PRINCIPAL = web.RequestKey("principal", Principal)
# Requests that arrive together are authenticated together (one query per batch).
PRINCIPALS = web.AppKey("principals", GroupCommit[str, Principal | None])
PUBLIC_PREFIXES = ("/api/webhook/", "/api/openapi.json", SESSION_PATH)


def setup_auth(app: web.Application, engine: AsyncEngine) -> None:
    """Give the application its batcher of token lookups (drained on shutdown)."""

    async def look_up(token_hashes: list[str]) -> list[Principal | None]:
        async with read_session(engine) as session:
            return await principals_from_token_hashes(session, token_hashes)

    app[PRINCIPALS] = GroupCommit(look_up)
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
    if not request.path.startswith("/api/") or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    header = request.headers.get("Authorization")
    if not header:
        found = await principal_from_cookie(request)  # the web app's session
        if found is None:
            raise ApiError(401, "Unauthorized: send `Authorization: token <token>`")
        request[PRINCIPAL] = found
        return await handler(request)
    found = await request.app[PRINCIPALS].submit(hash_token(_token_from(header)))
    if found is None:
        raise ApiError(401, "Invalid token")
    request[PRINCIPAL] = found
    return await handler(request)
