"""The one fake analysis service of the tests: a real aiohttp server on 127.0.0.1 that speaks
skyhook's (SkyPortal's) webhook protocol, as README "Writing an analysis service" describes it.

1. It receives ``POST /analysis`` (after an optional ``gate``, e.g. an authentication check,
   which may refuse the request first) and records it in ``received``.
2. It answers with the next of ``replies``, then ``default`` (a :class:`Reply`: status, text,
   headers, an optional delay, an optional event to hold the answer until set). ``hold()`` /
   ``release()`` hold every new request before it is answered; a request whose caller hung up
   meanwhile is abandoned (recorded in ``abandoned``: no answer, no callback), as a service that
   lost its caller would do.
3. When it accepted the request (2xx) and ``answer(call)`` returns a body (or a list of bodies),
   it POSTs them to the request's ``callback_url`` ``callback_delay`` later, or before answering
   the request (``callback_before_answer``). Like every service must, it tries a callback again
   after connection errors, 5xx and 408/425/429 (``callback_retry_delays``, short) and stops on
   any other answer.

Every change (a request received, answered or abandoned; a callback answered) is counted and
wakes :meth:`wait_until`, so tests wait for the service's state instead of sleeping:
``wait_received(n)``, ``wait_idle()`` (nothing held, nothing being answered, no callback in
flight) and ``wait_until(condition, what)``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from service_kit.protocol import RETRYABLE_STATUSES
from tests.support.ports import free_port

WebhookBody = dict[str, Any]
# What to post back for a request: one body, several (posted in turn), or None (never).
Answer = Callable[["Call"], WebhookBody | list[WebhookBody] | None]
Gate = Callable[[web.Request, bytes], Awaitable[web.Response | None]]
# A fixed number of seconds, a (low, high) range to draw from, or a function returning one.
Seconds = float | tuple[float, float] | Callable[[], float]

ACCEPTED_TEXT = '{"status": "pending", "message": "analysis started"}'
# Short pauses between callback attempts (the real protocol's are 1, 2, 4 … 64 s).
CALLBACK_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)


@dataclass(frozen=True)
class Reply:
    """The service's answer to a start request."""

    status: int = 200
    text: str = ACCEPTED_TEXT
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hold: asyncio.Event | None = None  # answer only once this is set
    content_type: str = "text/plain"

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Call:
    """One request the service received."""

    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # time.monotonic() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.json())

    @property
    def callback_url(self) -> str:
        return str(self.payload["callback_url"])

    @property
    def token(self) -> str:
        """The callback token, or "" for a request without a callback URL."""
        try:
            return callback_token(self.payload)
        except (ValueError, KeyError, TypeError):
            return ""


Received = Call  # the name test_dispatcher.py and others know it by


@dataclass(frozen=True)
class Callback:
    """One callback's outcome: the last answer skyhook gave to it (after retries).

    ``status`` is None when no answer ever came (connection errors until the retries ran out)."""

    url: str
    status: int | None
    reply: Any
    attempts: int = 1

    @property
    def token(self) -> str:
        return self.url.rsplit("/", 1)[1]


def callback_token(payload: dict[str, Any]) -> str:
    """The one-time token: the last segment of the request's callback URL."""
    return str(payload["callback_url"]).rsplit("/", 1)[1]


def _seconds(value: Seconds) -> float:
    if callable(value):
        return value()
    if isinstance(value, tuple):
        return random.uniform(*value)
    return value


def _retryable(status: int | None) -> bool:
    return status is None or status >= 500 or status in RETRYABLE_STATUSES


class FakeService:
    """A protocol-complete analysis service (see the module docstring)."""

    def __init__(
        self,
        answer: Answer | None = None,
        *,
        gate: Gate | None = None,
        port: int | None = None,
        callback_delay: Seconds = 0.05,
        answer_delay: Seconds = 0.0,
        callback_before_answer: bool = False,
        callback_retry_delays: Sequence[float] = CALLBACK_RETRY_DELAYS,
    ) -> None:
        self.answer = answer
        self.gate = gate
        self.port = port or free_port()
        self.callback_delay = callback_delay
        self.answer_delay = answer_delay
        self.callback_before_answer = callback_before_answer
        self.callback_retry_delays = tuple(callback_retry_delays)
        self.replies: list[Reply] = []
        self.default = Reply(content_type="application/json")
        # What happened, in order.
        self.received: list[Call] = []  # requests past the gate
        self.refused: list[Call] = []  # requests the gate refused
        self.abandoned: list[str] = []  # callback tokens of requests whose caller hung up
        self.sent: list[Callback] = []  # every callback's final outcome
        self.retried: list[Callback] = []  # callback attempts answered 5xx/408/425/429/nothing
        self.accepted: Counter[str] = Counter()  # callback token → callbacks answered 2xx
        self.refusals: list[tuple[int | None, str]] = []  # final non-2xx: (status, message)
        self.held = 0  # requests waiting on hold() or a Reply's hold
        self.holding: list[web.Request] = []  # those requests
        self.answering = 0  # requests being handled
        self.callbacks_in_flight = 0
        self.changes = 0  # bumped on every change above
        self._open = asyncio.Event()
        self._open.set()
        self._waiters: set[asyncio.Future[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/analysis"

    # --- lifecycle ---

    async def start(self) -> FakeService:
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/analysis", self._handle)
        app.router.add_get("/", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> FakeService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- holding requests ---

    def hold(self) -> None:
        """Keep new requests waiting, unanswered, until ``release()``."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    # --- the protocol ---

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "active"})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        call = Call(dict(request.headers), body)
        if self.gate is not None:
            refusal = await self.gate(request, body)
            if refusal is not None:
                self.refused.append(call)
                self._changed()
                return refusal
        self.received.append(call)
        self.answering += 1
        self._changed()
        try:
            return await self._answer(request, call)
        finally:
            self.answering -= 1
            self._changed()

    async def _answer(self, request: web.Request, call: Call) -> web.StreamResponse:
        reply = self.replies.pop(0) if self.replies else self.default
        if not self._open.is_set() or reply.hold is not None:
            self.held += 1
            self.holding.append(request)
            self._changed()
            try:
                await self._open.wait()
                if reply.hold is not None:
                    await reply.hold.wait()
            finally:
                self.held -= 1
                self.holding.remove(request)
            if request.transport is None or request.transport.is_closing():
                self.abandoned.append(call.token)
                return web.Response(status=503, text="the caller hung up")
        webhooks = self.answer(call) if self.answer is not None and reply.accepted else None
        if webhooks is not None:
            if self.callback_before_answer:
                await self._call_back(call, webhooks, delay=0.0)
            else:
                self._spawn(self._call_back(call, webhooks, self.callback_delay))
        await asyncio.sleep(reply.delay + _seconds(self.answer_delay))
        return web.Response(
            status=reply.status,
            text=reply.text,
            headers=reply.headers,
            content_type=reply.content_type,
        )

    def _spawn(self, work: Awaitable[None]) -> None:
        self.callbacks_in_flight += 1

        async def tracked() -> None:
            try:
                await work
            finally:
                self.callbacks_in_flight -= 1
                self._changed()

        task = asyncio.create_task(tracked())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call_back(
        self, call: Call, webhooks: WebhookBody | list[WebhookBody], delay: Seconds
    ) -> None:
        await asyncio.sleep(_seconds(delay))
        for body in webhooks if isinstance(webhooks, list) else [webhooks]:
            await self.post_callback(call.callback_url, body)

    async def post_callback(self, url: str, webhook: WebhookBody) -> Callback:
        """POST ``webhook`` to ``url`` as the protocol says: again after connection errors,
        5xx and 408/425/429, at most ``len(callback_retry_delays)`` times; recorded in ``sent``
        (the final answer), ``retried``, ``accepted`` and ``refusals``."""
        assert self._http is not None, "the service is not started"
        data = json.dumps(webhook).encode()
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._post_once(url, data, attempt)
            if not _retryable(outcome.status) or attempt > len(self.callback_retry_delays):
                break
            self.retried.append(outcome)
            self._changed()
            await asyncio.sleep(self.callback_retry_delays[attempt - 1])
        self.sent.append(outcome)
        if outcome.status is not None and 200 <= outcome.status < 300:
            self.accepted[outcome.token] += 1
        else:
            message = outcome.reply.get("message") if isinstance(outcome.reply, dict) else None
            self.refusals.append((outcome.status, str(message or outcome.reply)))
        self._changed()
        return outcome

    async def _post_once(self, url: str, data: bytes, attempt: int) -> Callback:
        assert self._http is not None
        headers = {"Content-Type": "application/json"}
        try:
            async with self._http.post(url, data=data, headers=headers) as response:
                text = await response.text(errors="replace")
                try:
                    reply: Any = json.loads(text)
                except ValueError:
                    reply = text
                return Callback(url, response.status, reply, attempt)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Callback(url, None, f"{type(exc).__name__}: {exc}", attempt)

    # --- what tests wait on ---

    def tokens(self) -> set[str]:
        """The callback tokens of every request received."""
        return {call.token for call in self.received}

    def held_without_caller(self) -> int:
        """Held requests whose caller hung up (the connection is closed or closing)."""
        return sum(1 for r in self.holding if r.transport is None or r.transport.is_closing())

    @property
    def busy(self) -> int:
        """Requests being answered plus callbacks in flight (retries included)."""
        return self.answering + self.callbacks_in_flight

    def state(self) -> str:
        return (
            f"{len(self.received)} requests ({len(self.refused)} refused by the gate, "
            f"{self.held} held, {len(self.abandoned)} abandoned), callbacks "
            f"{[c.status for c in self.sent]} ({len(self.retried)} retried, "
            f"{self.callbacks_in_flight} in flight)"
        )

    def _changed(self) -> None:
        self.changes += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait_until(
        self, condition: Callable[[], bool], what: str = "the service's state", within: float = 20.0
    ) -> None:
        """Until ``condition()`` holds, checked after each change of the service's state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"not within {within} s: {what}; {self.state()}")
            waiter = loop.create_future()
            self._waiters.add(waiter)
            await asyncio.wait({waiter}, timeout=remaining)

    async def wait_received(self, count: int, within: float = 10.0) -> list[Call]:
        await self.wait_until(lambda: len(self.received) >= count, f"{count} requests", within)
        return self.received

    async def wait_idle(self, within: float = 20.0) -> None:
        """Until no request is held or being answered and no callback is in flight: whatever
        the service was going to post has been posted and answered."""
        await self.wait_until(lambda: self.busy == 0, "the service to be idle", within)


# --- authentication a service may require ------------------------------------------------------


def _unauthorized(text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=401, text=text, headers=headers)


def header_token_gate(name: str, value: str) -> Gate:
    async def gate(request: web.Request, body: bytes) -> web.Response | None:
        if request.headers.get(name) != value:
            return _unauthorized(f"missing or wrong {name} header")
        return None

    return gate


def api_key_gate(name: str, value: str) -> Gate:
    """SkyPortal's api_key authentication puts the key into the JSON body."""

    async def gate(request: web.Request, body: bytes) -> web.Response | None:
        if json.loads(body).get(name) != value:
            return _unauthorized(f"missing or wrong {name} in the request body")
        return None

    return gate


def basic_gate(username: str, password: str) -> Gate:
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    async def gate(request: web.Request, body: bytes) -> web.Response | None:
        if request.headers.get("Authorization") != expected:
            return _unauthorized(
                "wrong basic credentials", {"WWW-Authenticate": 'Basic realm="fitter"'}
            )
        return None

    return gate


_DIGEST_FIELD = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


class DigestGate:
    """The server side of RFC 7616 digest authentication (MD5, qop=auth)."""

    realm = "fitter"

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.nonces: set[str] = set()

    def _challenge(self, text: str) -> web.Response:
        nonce = secrets.token_hex(16)
        self.nonces.add(nonce)
        header = f'Digest realm="{self.realm}", qop="auth", nonce="{nonce}", algorithm=MD5'
        return _unauthorized(text, {"WWW-Authenticate": header})

    async def __call__(self, request: web.Request, body: bytes) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return self._challenge("digest authentication required")
        fields = {m[0]: m[1] or m[2] for m in _DIGEST_FIELD.findall(header[len("Digest ") :])}
        if fields.get("nonce") not in self.nonces or fields.get("username") != self.username:
            return self._challenge("wrong digest credentials")

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = md5(f"{self.username}:{self.realm}:{self.password}")
        ha2 = md5(f"{request.method}:{fields.get('uri', '')}")
        parts = (ha1, fields["nonce"], fields.get("nc", ""), fields.get("cnonce", ""), "auth", ha2)
        if fields.get("response") != md5(":".join(parts)):
            return _unauthorized("wrong digest credentials")
        return None
