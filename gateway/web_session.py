"""Browser sessions for the web app: an API token exchanged for a cookie.

The session cookie holds the API token and a CSRF token, encrypted and authenticated with the
settings' secret key (AES-GCM, so key rotation works as for stored secrets). Nothing is stored
server-side: revoking the token ends every session made from it, and there is no session table
to migrate or sweep. The cookie is HttpOnly and SameSite=Strict.

CSRF: a request authenticated by the cookie that may change state (anything but GET, HEAD and
OPTIONS) must carry ``X-CSRF-Token`` equal to the token inside the session (the page reads it
from the readable ``skyhook_csrf`` cookie: double submit), and its Origin, when sent, must be
this server's. Requests with ``Authorization: token …`` never look at cookies.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from gateway.schemas.validation import validated
from gateway.schemas.webapp import SignIn
from http_edge.app_keys import ENGINE, SECRET_BOX
from http_edge.web import ApiError, bad_request, json_body, success
from shared.db.session import read_session
from shared.domain.access import Principal, principal_from_token
from shared.security.secrets import SecretBox

SESSION_COOKIE = "skyhook_session"
CSRF_COOKIE = "skyhook_csrf"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 7 * 24 * 3600
ONE_TIME_LINK_SECONDS = 24 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_AAD = b"skyhook-web-session"


@dataclass(frozen=True)
class WebSession:
    token: str
    csrf: str
    expires: float


def seal(box: SecretBox, session: WebSession) -> str:
    payload = json.dumps({"t": session.token, "c": session.csrf, "e": session.expires})
    sealed = box.encrypt(payload.encode(), _AAD)
    return base64.urlsafe_b64encode(sealed.encode()).decode().rstrip("=")


def unseal(box: SecretBox, value: str) -> WebSession | None:
    """The session in a cookie value, or None when it is forged, garbled or expired."""
    try:
        sealed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        payload = json.loads(box.decrypt(sealed, _AAD))
        session = WebSession(str(payload["t"]), str(payload["c"]), float(payload["e"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return session if session.expires > time.time() else None


class OneTimeLinks:
    """Sign-in codes printed by ``skyhook run --demo``: each works once, in this process."""

    def __init__(self) -> None:
        self._codes: dict[str, tuple[str, float]] = {}

    def issue(self, token: str) -> str:
        code = secrets.token_urlsafe(24)
        self._codes[code] = (token, time.time() + ONE_TIME_LINK_SECONDS)
        return code

    def redeem(self, code: str) -> str | None:
        found = self._codes.pop(code, None)
        if found is None or found[1] < time.time():
            return None
        return found[0]


ONE_TIME_LINKS = web.AppKey("one_time_links", OneTimeLinks)


def _same_origin(request: web.Request) -> bool:
    """No Origin header (older browsers, same-origin GETs) passes; one naming another host
    does not. Only the host is compared: a TLS-terminating proxy changes the scheme."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.host


async def principal_from_cookie(request: web.Request) -> Principal | None:
    """The caller of a cookie-authenticated request, after the CSRF checks; None without a
    valid session."""
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        return None
    session = unseal(request.app[SECRET_BOX], value)
    if session is None:
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise ApiError(403, "CSRF check failed: send the X-CSRF-Token header")
        if not _same_origin(request):
            raise ApiError(403, "CSRF check failed: cross-origin request")
    async with read_session(request.app[ENGINE]) as db:
        return await principal_from_token(db, session.token)


def _set_cookies(request: web.Request, response: web.Response, session: WebSession) -> None:
    secure = request.secure
    max_age = int(session.expires - time.time())
    sealed = seal(request.app[SECRET_BOX], session)
    response.set_cookie(
        SESSION_COOKIE,
        sealed,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
    response.set_cookie(
        CSRF_COOKIE, session.csrf, max_age=max_age, path="/", samesite="Strict", secure=secure
    )


async def create_session(request: web.Request) -> web.Response:
    sign_in = validated(SignIn, await json_body(request, optional=False))
    token, code = sign_in.token, sign_in.code
    if code:
        token = request.app[ONE_TIME_LINKS].redeem(code)
        if token is None:
            raise ApiError(401, "This sign-in link was already used or has expired")
    if not isinstance(token, str) or not token.strip():
        raise bad_request('Invalid token: send {"token": "<API token>"}')
    token = token.strip()
    async with read_session(request.app[ENGINE]) as db:
        found = await principal_from_token(db, token)
    if found is None:
        raise ApiError(401, "Invalid token")
    session = WebSession(token, secrets.token_urlsafe(24), time.time() + SESSION_SECONDS)
    response = success({"username": found.username})
    _set_cookies(request, response, session)
    return response


async def delete_session(request: web.Request) -> web.Response:
    response = success()
    response.del_cookie(SESSION_COOKIE, path="/")
    response.del_cookie(CSRF_COOKIE, path="/")
    return response
