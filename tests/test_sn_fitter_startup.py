"""The SN fitter's worker processes start and warm up with the service, not on the first
request; /readyz says ready only once they have; stopping leaves no worker behind."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sn_fitter.app import FITTER, FitterSettings, create_app
from tests.support.embedded import eventually, process_alive

WORKERS = 2


def worker_pids(executor: ProcessPoolExecutor) -> set[int]:
    """The pids of the pool's live worker processes."""
    processes = getattr(executor, "_processes", None) or {}
    return {pid for pid, process in processes.items() if process.is_alive()}


def _worker_state() -> tuple[int, bool]:
    """Runs in a worker: its pid, and whether the fitting code and sncosmo are loaded."""
    return os.getpid(), {"sncosmo", "sn_fitter.fit"} <= set(sys.modules)


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    app = create_app(FitterSettings(workers=WORKERS))
    async with TestClient(TestServer(app)) as running:
        yield running


async def test_workers_are_warm_before_the_first_request(client: TestClient) -> None:
    first = await client.get("/readyz")
    assert first.status == 503  # warming up: sncosmo is not imported in a blink
    assert "warming up" in (await first.json())["problems"][0]
    assert (await client.get("/healthz")).status == 200  # alive meanwhile

    async def ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await eventually(ready, "the fitter to be ready", within=300, every=0.2)
    executor = client.app[FITTER].executor
    pids = worker_pids(executor)
    assert len(pids) == WORKERS
    loop = asyncio.get_running_loop()
    states = await asyncio.gather(
        *(loop.run_in_executor(executor, _worker_state) for _ in range(4 * WORKERS))
    )
    assert {pid for pid, _ in states} <= pids  # no new process for the work
    assert all(loaded for _, loaded in states)


async def test_stopping_the_service_stops_its_workers() -> None:
    app = create_app(FitterSettings(workers=WORKERS, stop_grace_seconds=1.0))
    async with TestClient(TestServer(app)) as client:

        async def ready() -> bool:
            return (await client.get("/readyz")).status == 200

        await eventually(ready, "the fitter to be ready", within=300, every=0.2)
        pids = worker_pids(client.app[FITTER].executor)
        assert len(pids) == WORKERS
    assert not [pid for pid in pids if process_alive(pid)]
