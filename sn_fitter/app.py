"""The sn_fitter HTTP service (SkyPortal's analysis-service protocol).

``POST /analysis/sn_fit`` (and SkyPortal's demo name ``/analysis/demo_analysis``) accepts the
platform's request, answers ``{"status": "pending"}`` at once, fits in a worker process and
POSTs the webhook body to ``callback_url``. ``GET /`` is the health check.

This is the example of how to write an analysis service: the protocol's parts every service
shares (checking the request, the health check, calling back with retries) come from
``shared/service_protocol.py``; the work is in ``job.py`` and the callback body in
``products.py``.
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

import aiohttp
from aiohttp import web

from shared.observability import STANDALONE_OPERATIONS_ROUTES
from shared.service_protocol import (
    CALLBACK_RETRY_DELAYS_SECONDS,
    CALLBACK_TIMEOUT_SECONDS,
    RequestError,
    accepted,
    health,
    post_callback,
    read_request,
    redact_callback_url,
    refused,
)
from sn_fitter.inputs import InputError
from sn_fitter.job import FitJob, build_job, encode, run_job, warm_up
from sn_fitter.products import failure_body

log = logging.getLogger("sn_fitter")
callback_log = logging.getLogger("sn_fitter.callback")
SERVICE_NAME = "sn_fitter"
DEFAULT_PORT = 6802


@dataclass(frozen=True)
class FitterSettings:
    workers: int = 1
    callback_timeout_seconds: float = CALLBACK_TIMEOUT_SECONDS
    callback_retry_delays_seconds: tuple[float, ...] = CALLBACK_RETRY_DELAYS_SECONDS
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
            log.exception("fit for %s failed", redact_callback_url(callback_url))
            body = encode(failure_body(f"problem running the model: {exc}"))
        await post_callback(
            self.session,
            callback_url,
            body,
            self.settings.callback_retry_delays_seconds,
            self.settings.callback_timeout_seconds,
            logger=callback_log,
        )


FITTER = web.AppKey("fitter", Fitter)


def _new_executor(settings: FitterSettings) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=settings.workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=warm_up if settings.warm_up else None,
    )


async def start_analysis(request: web.Request) -> web.Response:
    try:
        payload = await read_request(request)
        job = await asyncio.to_thread(build_job, payload)
    except (RequestError, InputError) as exc:
        return refused(str(exc))
    request.app[FITTER].start(job, payload["callback_url"])
    return accepted(SERVICE_NAME)


ROUTES = [
    web.get("/", health),
    *STANDALONE_OPERATIONS_ROUTES,
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
