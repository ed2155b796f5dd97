"""``skyhook run`` (SQLite, in-process bus) under load: every analysis started is dispatched at
once, without the lost-message poller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.embedded import EmbeddedRun, create_token, eventually, free_port

CONCURRENT_STARTS = 300


class CallingBackService:
    """A real analysis service on 127.0.0.1 that accepts and calls back at once."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0
        self.callbacks: list[int] = []
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/analysis"

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/analysis", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received += 1
        task = asyncio.create_task(self._call_back(body["callback_url"]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"status": "pending", "message": "started"})

    async def _call_back(self, url: str) -> None:
        assert self._http is not None
        result = {"status": "success", "message": "done", "analysis": {"results": {"x": 1}}}
        async with self._http.post(url, json=result) as response:
            self.callbacks.append(response.status)


@pytest.fixture
async def service() -> AsyncIterator[CallingBackService]:
    running = CallingBackService()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[EmbeddedRun]:
    settings = {
        # The lost-message poller never fires during the test: whatever is dispatched was
        # dispatched by the message the start wrote.
        "SKYHOOK_DISPATCH_REQUEUE_AFTER_SECONDS": "1000000",
        "SKYHOOK_MAX_ANALYSES_PER_OBJ_PER_USER": "10000",
    }
    run = EmbeddedRun(tmp_path / "run", settings=settings).start()
    try:
        await run.wait_ready()
        yield run
    finally:
        run.kill()


async def _api(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with http.request(method, url, json=body) as response:
        reply = await response.json()
        assert response.status == 200, reply
        return reply["data"]


async def test_concurrent_starts_are_all_dispatched_without_the_poller(
    embedded: EmbeddedRun, service: CallingBackService
) -> None:
    token = await create_token(embedded)
    api = f"{embedded.url}/api"
    headers = {"Authorization": f"token {token}"}
    connector = aiohttp.TCPConnector(limit=CONCURRENT_STARTS)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
        await _api(http, "POST", f"{api}/sources", {"id": "ZTFload1", "ra": 10.0, "dec": 5.0})
        registration = {
            "name": "calls_back",
            "display_name": "Calls back at once",
            "url": service.url,
            "analysis_type": "lightcurve_fitting",
            "input_data_types": [],
            "authentication_type": "none",
        }
        service_id = (await _api(http, "POST", f"{api}/analysis_service", registration))["id"]
        start = f"{api}/obj/ZTFload1/analysis/{service_id}"
        started = await asyncio.gather(
            *(_api(http, "POST", start, {}) for _ in range(CONCURRENT_STARTS))
        )
        ids = {item["id"] for item in started}
        assert len(ids) == CONCURRENT_STARTS

        async def all_dispatched() -> list[dict[str, Any]] | None:
            listed = [a for a in await _api(http, "GET", f"{api}/obj/analysis") if a["id"] in ids]
            waiting = [a for a in listed if a["status"] in ("queued", "dispatching")]
            return None if waiting or len(listed) < len(ids) else listed

        listed = await eventually(all_dispatched, "every analysis to be dispatched", within=300)
        assert {a["status"] for a in listed} <= {"pending", "completed"}
        attempts = await asyncio.gather(
            *(_api(http, "GET", f"{api}/obj/analysis/{i}/attempts") for i in sorted(ids))
        )
    assert all(len(found) >= 1 for found in attempts)
    assert service.received == CONCURRENT_STARTS
