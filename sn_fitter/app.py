"""The sn_fitter HTTP service (SkyPortal's analysis-service protocol).

``POST /analysis/sn_fit`` (and SkyPortal's demo name ``/analysis/demo_analysis``) accepts the
platform's request, answers ``{"status": "pending"}`` at once, fits in a worker process and
POSTs the webhook body to ``callback_url``. ``GET /`` is the health check.

This is the example of how to write an analysis service: the protocol's parts every service
shares (checking the request, answering at once, running the job in the background, calling
back with retries, letting jobs finish on shutdown) are ``service_kit.protocol.JobRunner``;
the work is in ``job.py`` and the callback body in ``products.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from service_kit.operations import STANDALONE_OPERATIONS_ROUTES
from service_kit.protocol import (
    CALLBACK_RETRY_DELAYS_SECONDS,
    CALLBACK_TIMEOUT_SECONDS,
    JobRunner,
    health,
)
from sn_fitter.inputs import InputError
from sn_fitter.job import FitJob, build_job, encode, run_job, warm_up
from sn_fitter.products import failure_body

log = logging.getLogger("sn_fitter")
SERVICE_NAME = "sn_fitter"
DEFAULT_PORT = 6802


@dataclass(frozen=True)
class FitterSettings:
    workers: int = 1
    callback_timeout_seconds: float = CALLBACK_TIMEOUT_SECONDS
    callback_retry_delays_seconds: tuple[float, ...] = CALLBACK_RETRY_DELAYS_SECONDS
    max_body_bytes: int = 32 * 1024 * 1024
    warm_up: bool = True
    # On shutdown, fits under way get this long to finish and call back before they are
    # abandoned and the worker processes are terminated.
    stop_grace_seconds: float = 30.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> FitterSettings:
        """``SKYHOOK_SN_FITTER_WORKERS``, ``..._CALLBACK_TIMEOUT_SECONDS``,
        ``..._CALLBACK_RETRY_DELAYS_SECONDS`` (JSON list), ``..._WARM_UP`` (true/false)."""
        env = os.environ if environ is None else environ
        prefix = "SKYHOOK_SN_FITTER_"
        values: dict[str, Any] = dict(overrides)
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
    """The worker processes that fit, replaced when one of them dies."""

    settings: FitterSettings
    executor: ProcessPoolExecutor

    async def run(self, job: FitJob) -> bytes:
        """The webhook body of a fit, computed in a worker process."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, run_job, job)
        except BrokenProcessPool:
            log.error("a fitting worker died; restarting the pool")
            self.executor = _new_executor(self.settings)
            return encode(failure_body("the fitting worker crashed (out of memory?)"))


FITTER = web.AppKey("fitter", Fitter)
WARMED = web.AppKey("warmed", asyncio.Event)


def _new_executor(settings: FitterSettings) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=settings.workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=warm_up if settings.warm_up else None,
    )


def _worker_pid() -> int:
    return os.getpid()


async def start_workers(executor: ProcessPoolExecutor, workers: int) -> set[int]:
    """Start every worker process now (each runs the warm-up initializer first) instead of on
    the first request; returns their pids once all have answered."""
    loop = asyncio.get_running_loop()
    # Submitted together, so the pool starts one process per call instead of reusing one.
    pids = await asyncio.gather(
        *(loop.run_in_executor(executor, _worker_pid) for _ in range(workers))
    )
    return set(pids)


async def stop_workers(executor: ProcessPoolExecutor) -> None:
    """Shut the pool down and make sure no worker process outlives it."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    await asyncio.to_thread(executor.shutdown, wait=True)
    for process in processes:
        await asyncio.to_thread(process.join, 5.0)
        if process.is_alive():
            process.kill()


async def ready(request: web.Request) -> web.Response:
    """Readiness: the worker processes are started and warmed up."""
    warmed = request.app.get(WARMED)
    if warmed is None or not warmed.is_set():
        return web.json_response(
            {"status": "unavailable", "problems": ["fitting workers are warming up"]}, status=503
        )
    return web.json_response({"status": "ready"})


def describe(job: FitJob) -> str:
    return f"fit of {job.title}" if job.title else "fit"


ROUTES = [
    web.get("/", health),
    web.get("/readyz", ready),
    *(route for route in STANDALONE_OPERATIONS_ROUTES if route.path != "/readyz"),
]
ANALYSIS_PATHS = ("/analysis/sn_fit", "/analysis/demo_analysis")


def create_app(settings: FitterSettings | None = None) -> web.Application:
    settings = settings or FitterSettings()
    app = web.Application(client_max_size=settings.max_body_bytes)
    app.add_routes(ROUTES)
    app[WARMED] = asyncio.Event()

    async def warm(app: web.Application) -> None:
        pids = await start_workers(app[FITTER].executor, settings.workers)
        app[WARMED].set()
        log.info("%d fitting worker(s) started and warmed up (pids %s)", len(pids), sorted(pids))

    async def workers(app: web.Application) -> AsyncIterator[None]:
        app[FITTER] = fitter = Fitter(settings, _new_executor(settings))
        warming = asyncio.create_task(warm(app))
        yield
        warming.cancel()
        await asyncio.gather(warming, return_exceptions=True)
        await stop_workers(fitter.executor)

    # Appended before the runner's, so the workers stop only after the fits under way are done.
    app.cleanup_ctx.append(workers)
    runner = JobRunner(
        SERVICE_NAME,
        build_job,
        lambda job: app[FITTER].run(job),
        refusals=(InputError,),
        describe=describe,
        error_message=lambda exc: f"problem running the model: {exc}",
        stopped_message="the SN fitter was stopped before this fit finished; start it again",
        callback_retry_delays_seconds=settings.callback_retry_delays_seconds,
        callback_timeout_seconds=settings.callback_timeout_seconds,
        stop_grace_seconds=settings.stop_grace_seconds,
        logger=log,
    )
    runner.attach(app, *ANALYSIS_PATHS)
    return app


def main() -> None:
    """``python -m sn_fitter``: serve on SKYHOOK_HOST:SKYHOOK_PORT (default 127.0.0.1:6802)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host = os.environ.get("SKYHOOK_HOST", "127.0.0.1")
    port = int(os.environ.get("SKYHOOK_PORT", DEFAULT_PORT))
    web.run_app(create_app(FitterSettings.from_env()), host=host, port=port, access_log=None)
