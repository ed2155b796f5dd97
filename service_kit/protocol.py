"""The service side of SkyPortal's analysis-service protocol, for services written in Python.

A request comes in as a ``POST`` of JSON with ``inputs``, ``callback_url`` and
``callback_method``. The service answers at once: 400 ``{"status": "error", "message": …}``
when it will not run the request, else 200 ``{"status": "pending", …}``. It then does the
work and POSTs the webhook body (``{"status": "success" | "failure", "message": …,
"analysis": …}``) to ``callback_url``, retrying what is worth retrying.

:class:`JobRunner` does all of that once a service says how to read a request into a job and
how to run a job into a webhook body. A new service needs little more than this::

    @dataclass(frozen=True)
    class EchoJob:
        text: str

    def build_job(payload: dict[str, Any]) -> EchoJob:  # runs in a thread
        text = payload["inputs"].get("text")
        if not isinstance(text, str):
            raise RequestError("inputs.text must be a string")  # answered with a 400
        return EchoJob(text)

    async def run(job: EchoJob) -> bytes:  # in the background, after "pending"
        results = {"format": "json", "data": {"text": job.text}}
        body = {"status": "success", "message": "echoed", "analysis": {"results": results}}
        return json.dumps(body).encode()

    def create_app() -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/", health), *STANDALONE_OPERATIONS_ROUTES])
        JobRunner("echo", build_job, run).attach(app, "/analysis/echo")
        return app

The runner keeps the jobs in progress; when the app stops they get ``stop_grace_seconds`` to
finish and call back, and the rest are cancelled and reported as failures. Resources a job
needs (a process pool, say) are set up by a ``cleanup_ctx`` appended before ``attach``, so
they are closed only after the jobs are done. ``sn_fitter/app.py`` (fits in worker processes)
and ``llm_summarizer/app.py`` (asks an LLM API) are complete examples.

The pieces are public for services that need another shape: ``read_request`` (the request
checked as above; a problem raises :class:`RequestError`), ``refused`` / ``accepted`` (the two
answers), ``health`` (``GET /``) and ``post_callback`` (delivery with retries). The callback
URL's last path segment is a one-time token, a secret: log only ``redact_callback_url(url)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web

REQUIRED_KEYS = ("inputs", "callback_url", "callback_method")
# Platform answers worth another try besides connection errors, timeouts and 5xx. Any other 4xx
# is final (403: the token was used or the analysis cancelled; 400: it expired).
RETRYABLE_STATUSES = frozenset({408, 425, 429})
CALLBACK_RETRY_DELAYS_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
CALLBACK_TIMEOUT_SECONDS = 60.0
RETRY_JITTER = 0.2  # each pause is its delay times a random factor in [0.8, 1.2]
MAX_DETAIL_CHARS = 300
STOP_GRACE_SECONDS = 30.0
# A job abandoned on shutdown is reported with one attempt, so stopping is not held up.
ABANDONED_CALLBACK_TIMEOUT_SECONDS = 5.0

log = logging.getLogger("skyhook.service_protocol")


class RequestError(ValueError):
    """The request cannot be served; the message is for the caller (a 400)."""


async def read_request(request: web.Request, *, url_message: str | None = None) -> dict[str, Any]:
    """The request body, checked as every analysis service checks it.

    ``url_message``, when given, is the one refusal for a callback_url that is not an absolute
    http(s) URL (by default the message says which of the two it is not).
    """
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # too deep: Recursion…
        raise RequestError("Invalid JSON") from None
    if not isinstance(payload, dict):
        raise RequestError("Invalid JSON: the body must be an object")
    for key in REQUIRED_KEYS:
        if key not in payload:
            raise RequestError(f"missing required key {key}")
    method = payload["callback_method"]
    if not isinstance(method, str) or method.upper() != "POST":
        raise RequestError(f"callback_method must be POST, got {method!r}")
    url = payload["callback_url"]
    if not isinstance(url, str) or urlsplit(url).scheme not in {"http", "https"}:
        raise RequestError(url_message or "callback_url must be an http(s) URL")
    if not urlsplit(url).netloc:
        raise RequestError(url_message or "callback_url must be an absolute URL")
    return payload


def refused(message: str) -> web.Response:
    """The 400 answer to a request the service will not run."""
    return web.json_response({"status": "error", "message": message}, status=400)


def failure_body(message: str) -> dict[str, Any]:
    """The webhook body of an analysis that failed, saying why."""
    return {"status": "failure", "message": message, "analysis": {}}


def accepted(service_name: str) -> web.Response:
    """The answer to a request the service has started on (the result comes by callback)."""
    return web.json_response({"status": "pending", "message": f"{service_name}: analysis started"})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "active"})


def redact_callback_url(url: str) -> str:
    """The callback URL with its one-time token (the last path segment) hidden."""
    parts = urlsplit(url)
    head, _, _ = parts.path.rstrip("/").rpartition("/")
    return urlunsplit((parts.scheme, parts.netloc, f"{head}/***", "", ""))


def _without_secret(text: str, url: str) -> str:
    token = urlsplit(url).path.rstrip("/").rpartition("/")[2]
    text = text.replace(url, redact_callback_url(url))
    return text.replace(token, "***") if token else text


async def _post_once(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    timeout_seconds: float,
    follow_redirects: bool,
) -> tuple[int | None, str]:
    """(HTTP status, or None when no answer came; what happened, without the token)."""
    try:
        async with session.post(
            url,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            allow_redirects=follow_redirects,
        ) as response:
            text = (await response.text(errors="replace"))[:MAX_DETAIL_CHARS]
            return response.status, f"HTTP {response.status}: {text}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, _without_secret(f"{type(exc).__name__}: {exc}", url)


async def post_callback(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    delays: Sequence[float],
    timeout_seconds: float,
    *,
    logger: logging.Logger = log,
    follow_redirects: bool = False,
) -> bool:
    """POST the webhook ``body`` to ``url`` until the platform accepts it (any 2xx): True.

    Connection errors, timeouts, 5xx and 408/425/429 are tried again after each of ``delays``
    (with jitter); any other answer is final. A final failure is logged at ERROR level on
    ``logger`` and returns False (the platform's sweeper then times the analysis out).
    """
    shown = redact_callback_url(url)
    outcome = "not attempted"
    for attempt in range(len(delays) + 1):
        status, outcome = await _post_once(session, url, body, timeout_seconds, follow_redirects)
        if status is not None and status < 300:
            logger.info("results delivered to %s (HTTP %d)", shown, status)
            return True
        if status is not None and status < 500 and status not in RETRYABLE_STATUSES:
            logger.error("callback %s refused the results (%s); not retrying", shown, outcome)
            return False
        if attempt < len(delays):
            pause = delays[attempt] * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
            logger.warning(
                "callback %s attempt %d failed (%s); retrying in %.1f s",
                shown,
                attempt + 1,
                outcome,
                pause,
            )
            await asyncio.sleep(pause)
    logger.error(
        "callback %s failed after %d attempts; results lost: %s", shown, len(delays) + 1, outcome
    )
    return False


JobT = TypeVar("JobT")


@dataclass(frozen=True)
class _InFlight:
    description: str
    callback_url: str


class JobRunner(Generic[JobT]):
    """An analysis service's jobs: the protocol's ``POST`` handler, the jobs in progress and
    the callbacks that deliver their results (see the module's documentation).

    ``build_job(payload)`` reads a checked request into a job (in a thread); it raises
    :class:`RequestError`, or one of ``refusals``, with the message of a 400. ``run(job)`` is
    the job's webhook body; should it raise, the analysis fails with ``error_message(exc)``.
    ``describe(job)`` names the job in logs (never put the callback URL in it).
    """

    def __init__(
        self,
        name: str,
        build_job: Callable[[dict[str, Any]], JobT],
        run: Callable[[JobT], Awaitable[bytes]],
        *,
        refusals: tuple[type[Exception], ...] = (),
        callback_url_message: str | None = None,
        describe: Callable[[JobT], str] | None = None,
        error_message: Callable[[Exception], str] | None = None,
        stopped_message: str | None = None,
        callback_retry_delays_seconds: Sequence[float] = CALLBACK_RETRY_DELAYS_SECONDS,
        callback_timeout_seconds: float = CALLBACK_TIMEOUT_SECONDS,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.build_job = build_job
        self.run = run
        self.refusals: tuple[type[Exception], ...] = (RequestError, *refusals)
        self.callback_url_message = callback_url_message
        self.describe = describe or (lambda job: f"{name} job")
        self.error_message = error_message or (
            lambda exc: f"{name} failed unexpectedly; see its log"
        )
        self.stopped_message = stopped_message or (
            f"{name} was stopped before this analysis finished; start it again"
        )
        self.callback_retry_delays_seconds = tuple(callback_retry_delays_seconds)
        self.callback_timeout_seconds = callback_timeout_seconds
        self.stop_grace_seconds = stop_grace_seconds
        self.log = logger or logging.getLogger(name)
        self.callback_log = self.log.getChild("callback")
        self.in_flight: dict[asyncio.Task[None], _InFlight] = {}
        self._http: aiohttp.ClientSession | None = None

    def attach(self, app: web.Application, *paths: str) -> None:
        """Serve ``POST`` on each of ``paths`` and run the jobs while ``app`` runs."""
        app.add_routes([web.post(path, self.handle) for path in paths])
        app.cleanup_ctx.append(self._lifetime)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            payload = await read_request(request, url_message=self.callback_url_message)
            job = await asyncio.to_thread(self.build_job, payload)
        except self.refusals as exc:
            return refused(str(exc))
        self.start(job, payload["callback_url"])
        return accepted(self.name)

    def start(self, job: JobT, callback_url: str) -> None:
        """Run ``job`` in the background and deliver its result to ``callback_url``."""
        running = _InFlight(self.describe(job), callback_url)
        self.log.info(
            "%s requested (callback %s)", running.description, redact_callback_url(callback_url)
        )
        task = asyncio.create_task(self._run(job, running))
        self.in_flight[task] = running
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.in_flight.pop(task, None)

    async def _run(self, job: JobT, running: _InFlight) -> None:
        try:
            body = await self.run(job)
        except Exception as exc:
            self.log.exception("%s failed unexpectedly", running.description)
            body = _encode(failure_body(self.error_message(exc)))
        await post_callback(
            self._session(),
            running.callback_url,
            body,
            self.callback_retry_delays_seconds,
            self.callback_timeout_seconds,
            logger=self.callback_log,
        )

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError(f"the {self.name} job runner is not running")
        return self._http

    async def _lifetime(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(trust_env=False) as http:
            self._http = http
            try:
                yield
                await self.drain()
            finally:
                self._http = None

    async def drain(self) -> None:
        """Jobs under way get ``stop_grace_seconds`` to finish and call back. The rest are
        cancelled and their analyses told so (one attempt), so they end at once with a reason
        instead of when their timeout expires."""
        if not self.in_flight:
            return
        self.log.info(
            "stopping: waiting up to %.0f s for %d job(s) in progress",
            self.stop_grace_seconds,
            len(self.in_flight),
        )
        _, unfinished = await asyncio.wait(set(self.in_flight), timeout=self.stop_grace_seconds)
        abandoned = [self.in_flight[task] for task in unfinished if task in self.in_flight]
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        body = _encode(failure_body(self.stopped_message))
        for running in abandoned:
            self.log.warning(
                "stopping: %s in progress is abandoned (%s)",
                running.description,
                redact_callback_url(running.callback_url),
            )
            await post_callback(
                self._session(),
                running.callback_url,
                body,
                (),
                ABANDONED_CALLBACK_TIMEOUT_SECONDS,
                logger=self.callback_log,
            )


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, allow_nan=False).encode()
