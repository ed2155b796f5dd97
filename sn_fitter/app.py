"""The sn_fitter HTTP service (SkyPortal's analysis-service protocol).

``POST /analysis/sn_fit`` (and SkyPortal's demo name ``/analysis/demo_analysis``) accepts the
platform's request, answers ``{"status": "pending"}`` at once, fits in a worker process and
POSTs the webhook body to ``callback_url``. ``GET /`` is the health check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from sn_fitter.callback import deliver, redact
from sn_fitter.inputs import InputError
from sn_fitter.job import FitJob, build_job, encode, run_job, warm_up
from sn_fitter.products import failure_body

log = logging.getLogger("sn_fitter")
SERVICE_NAME = "sn_fitter"
DEFAULT_PORT = 6802
REQUIRED_KEYS = ("inputs", "callback_url", "callback_method")


@dataclass(frozen=True)
class FitterSettings:
    workers: int = 1
    callback_timeout_seconds: float = 60.0
    callback_retry_delays_seconds: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    max_body_bytes: int = 32 * 1024 * 1024
    warm_up: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> FitterSettings:
        """``SKYHOOK_SN_FITTER_WORKERS``, ``..._CALLBACK_TIMEOUT_SECONDS``,
        ``..._CALLBACK_RETRY_DELAYS_SECONDS`` (JSON list), ``..._WARM_UP`` (true/false)."""
        env = os.environ if environ is None else environ
        prefix = "SKYHOOK_SN_FITTER_"
        values: dict[str, Any] = {}
        if f"{prefix}WORKERS" in env:
            values["workers"] = max(1, int(env[f"{prefix}WORKERS"]))
        if f"{prefix}CALLBACK_TIMEOUT_SECONDS" in env:
            values["callback_timeout_seconds"] = float(env[f"{prefix}CALLBACK_TIMEOUT_SECONDS"])
        if f"{prefix}CALLBACK_RETRY_DELAYS_SECONDS" in env:
            delays = json.loads(env[f"{prefix}CALLBACK_RETRY_DELAYS_SECONDS"])
            values["callback_retry_delays_seconds"] = tuple(float(d) for d in delays)
        if f"{prefix}WARM_UP" in env:
            values["warm_up"] = env[f"{prefix}WARM_UP"].strip().lower() in {"1", "true", "yes"}
        return cls(**values)


@dataclass
class Fitter:
    """Runtime state: the worker pool, the HTTP client for callbacks, running analyses."""

    settings: FitterSettings
    executor: ProcessPoolExecutor
    session: aiohttp.ClientSession
    tasks: set[asyncio.Task] = field(default_factory=set)

    def start(self, job: FitJob, callback_url: str) -> None:
        task = asyncio.create_task(self._run(job, callback_url))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, job: FitJob, callback_url: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(self.executor, run_job, job)
        except BrokenProcessPool:
            log.error("a fitting worker died; restarting the pool")
            self.executor = _new_executor(self.settings)
            body = encode(failure_body("the fitting worker crashed (out of memory?)"))
        except Exception as exc:
            log.exception("fit for %s failed", redact(callback_url))
            body = encode(failure_body(f"problem running the model: {exc}"))
        await deliver(
            self.session,
            callback_url,
            body,
            self.settings.callback_retry_delays_seconds,
            self.settings.callback_timeout_seconds,
        )


FITTER = web.AppKey("fitter", Fitter)


def _new_executor(settings: FitterSettings) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=settings.workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=warm_up if settings.warm_up else None,
    )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"status": "error", "message": message}, status=status)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "active"})


async def start_analysis(request: web.Request) -> web.Response:
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "Invalid JSON")
    if not isinstance(payload, dict):
        return _error(400, "Invalid JSON: the body must be an object")
    for key in REQUIRED_KEYS:
        if key not in payload:
            return _error(400, f"missing required key {key}")
    problem = _callback_problem(payload)
    if problem:
        return _error(400, problem)
    try:
        job = await asyncio.to_thread(build_job, payload)
    except InputError as exc:
        return _error(400, str(exc))
    request.app[FITTER].start(job, payload["callback_url"])
    return web.json_response({"status": "pending", "message": f"{SERVICE_NAME}: analysis started"})


def _callback_problem(payload: dict[str, Any]) -> str | None:
    method = payload["callback_method"]
    if not isinstance(method, str) or method.upper() != "POST":
        return f"callback_method must be POST, got {method!r}"
    url = payload["callback_url"]
    if not isinstance(url, str) or urlsplit(url).scheme not in {"http", "https"}:
        return "callback_url must be an http(s) URL"
    if not urlsplit(url).netloc:
        return "callback_url must be an absolute URL"
    return None


ROUTES = [
    web.get("/", health),
    web.post("/analysis/sn_fit", start_analysis),
    web.post("/analysis/demo_analysis", start_analysis),
]


def create_app(settings: FitterSettings | None = None) -> web.Application:
    settings = settings or FitterSettings()
    app = web.Application(client_max_size=settings.max_body_bytes)
    app.add_routes(ROUTES)

    async def resources(app: web.Application):
        executor = _new_executor(settings)
        session = aiohttp.ClientSession()
        app[FITTER] = Fitter(settings, executor, session)
        yield
        fitter = app[FITTER]
        for task in list(fitter.tasks):
            log.warning("shutting down: an analysis in progress is abandoned")
            task.cancel()
        await asyncio.gather(*fitter.tasks, return_exceptions=True)
        await session.close()
        fitter.executor.shutdown(wait=False, cancel_futures=True)

    app.cleanup_ctx.append(resources)
    return app


def main() -> None:
    """``python -m sn_fitter``: serve on SKYHOOK_HOST:SKYHOOK_PORT (default 127.0.0.1:6802)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host = os.environ.get("SKYHOOK_HOST", "127.0.0.1")
    port = int(os.environ.get("SKYHOOK_PORT", DEFAULT_PORT))
    web.run_app(create_app(FitterSettings.from_env()), host=host, port=port, access_log=None)
