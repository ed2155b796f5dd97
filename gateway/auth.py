"""Token authentication: `Authorization: token <token>` on /api routes but the public ones."""

from __future__ import annotations

from aiohttp import web

from gateway.web_session import SESSION_PATH, principal_from_cookie
from shared.access import Principal, principal_from_token
from shared.db.session import read_session
from shared.resources import RESOURCES
from shared.web import ApiError, Handler

PRINCIPAL = web.RequestKey("principal", Principal)
PUBLIC_PREFIXES = ("/api/webhook/", "/api/openapi.json", SESSION_PATH)


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
    token = _token_from(header)
    async with read_session(request.app[RESOURCES].engine) as session:
        found = await principal_from_token(session, token)
    if found is None:
        raise ApiError(401, "Invalid token")
    request[PRINCIPAL] = found
    return await handler(request)
