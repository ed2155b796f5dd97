"""service_kit.protocol against real local HTTP servers: the callback's retry and stop rules,
redirects, a token that never reaches the log, and the job runner's request-to-callback cycle."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service_kit.protocol import JobRunner, RequestError, post_callback
from tests.support.ports import free_port

TOKEN = "one-time-token-5f0c2a9e"
BODY = b'{"status": "success", "message": "done", "analysis": {}}'
DELAYS = (0.01, 0.01)


class Platform:
    """A webhook endpoint answering the given statuses in turn, then 200."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.bodies: list[bytes] = []

    async def webhook(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        status = self.statuses.pop(0) if self.statuses else 200
        return web.json_response({"status": "x"}, status=status)

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"/api/webhook/obj_analysis/{TOKEN}")


@pytest.fixture
async def platform() -> AsyncIterator[tuple[Platform, str]]:
    platform = Platform()
    app = web.Application()
    app.router.add_post("/api/webhook/obj_analysis/{token}", platform.webhook)
    app.router.add_post("/old/{token}", platform.moved)
    # Stands in for skyhook's webhook endpoint, which writes no access log with the token.
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(access_log=None)  # the runner's options go here, not to TestServer
    try:
        yield platform, str(server.make_url(""))
    finally:
        await server.close()


async def test_retryable_answers_are_retried_until_accepted(platform: tuple[Platform, str]) -> None:
    receiver, base = platform
    receiver.statuses = [503, 429]
    async with aiohttp.ClientSession() as session:
        url = f"{base}/api/webhook/obj_analysis/{TOKEN}"
        assert await post_callback(session, url, BODY, DELAYS, 5.0)
    assert receiver.bodies == [BODY, BODY, BODY]


async def test_other_4xx_is_final(
    platform: tuple[Platform, str], caplog: pytest.LogCaptureFixture
) -> None:
    receiver, base = platform
    receiver.statuses = [403]
    logger = logging.getLogger("tests.service_protocol")
    async with aiohttp.ClientSession() as session:
        url = f"{base}/api/webhook/obj_analysis/{TOKEN}"
        assert not await post_callback(session, url, BODY, DELAYS, 5.0, logger=logger)
    assert len(receiver.bodies) == 1
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.name == "tests.service_protocol"
    assert "refused the results (HTTP 403" in error.getMessage()
    assert "/api/webhook/obj_analysis/***" in error.getMessage()
    assert TOKEN not in caplog.text


async def test_redirects_are_followed_only_when_asked(platform: tuple[Platform, str]) -> None:
    receiver, base = platform
    async with aiohttp.ClientSession() as session:
        url = f"{base}/old/{TOKEN}"
        assert not await post_callback(session, url, BODY, DELAYS, 5.0)
        assert receiver.bodies == []
        assert await post_callback(session, url, BODY, DELAYS, 5.0, follow_redirects=True)
    assert receiver.bodies == [BODY]


async def test_unreachable_platform_fails_after_every_delay_without_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/webhook/obj_analysis/{TOKEN}"
    async with aiohttp.ClientSession() as session:
        assert not await post_callback(session, url, BODY, DELAYS, 5.0)
    assert "failed after 3 attempts; results lost: ClientConnectorError" in caplog.text
    assert TOKEN not in caplog.text


# --- the job runner ---------------------------------------------------------------------------


class Echo:
    """A service whose jobs wait for ``go`` and then echo ``inputs.text``."""

    def __init__(self) -> None:
        self.go = asyncio.Event()

    @staticmethod
    def build_job(payload: dict[str, Any]) -> str:
        text = payload["inputs"].get("text")
        if text == "too long":
            raise ValueError("text too long")
        if not isinstance(text, str):
            raise RequestError("inputs.text must be a string")
        return text

    async def run(self, text: str) -> bytes:
        await self.go.wait()
        if text == "crash":
            raise ZeroDivisionError("boom")
        return json.dumps({"status": "success", "message": text, "analysis": {}}).encode()


def echo_app(echo: Echo, **options: Any) -> tuple[web.Application, JobRunner[str]]:
    app = web.Application()
    runner = JobRunner(
        "echo",
        echo.build_job,
        echo.run,
        refusals=(ValueError,),
        error_message=lambda exc: f"echo broke: {exc}",
        stopped_message="echo was stopped",
        callback_retry_delays_seconds=DELAYS,
        **options,
    )
    runner.attach(app, "/analysis/echo")
    return app, runner


def request(base: str, text: Any) -> dict[str, Any]:
    url = f"{base}/api/webhook/obj_analysis/{TOKEN}"
    return {"callback_url": url, "callback_method": "POST", "inputs": {"text": text}}


async def test_the_runner_answers_at_once_and_calls_back_when_done(platform) -> None:
    receiver, base = platform
    echo = Echo()
    app, runner = echo_app(echo)
    async with TestClient(TestServer(app)) as client:
        reply = await client.post("/analysis/echo", json=request(base, "hello"))
        assert (reply.status, await reply.json()) == (
            200,
            {"status": "pending", "message": "echo: analysis started"},
        )
        assert len(runner.in_flight) == 1 and receiver.bodies == []
        echo.go.set()
        await asyncio.gather(*runner.in_flight)
    assert [json.loads(body)["message"] for body in receiver.bodies] == ["hello"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": {}}, "missing required key callback_url"),
        (request("http://x", 3), "inputs.text must be a string"),
        (request("http://x", "too long"), "text too long"),
    ],
)
async def test_the_runner_refuses_what_build_job_refuses(
    platform, body: dict[str, Any], message: str
) -> None:
    app, runner = echo_app(Echo())
    async with TestClient(TestServer(app)) as client:
        reply = await client.post("/analysis/echo", json=body)
        assert (reply.status, await reply.json()) == (400, {"status": "error", "message": message})
        assert runner.in_flight == {}


async def test_a_job_that_raises_ends_in_failure(platform) -> None:
    receiver, base = platform
    echo = Echo()
    echo.go.set()
    app, runner = echo_app(echo)
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/analysis/echo", json=request(base, "crash"))).status == 200
        await asyncio.gather(*runner.in_flight)
    (body,) = receiver.bodies
    assert json.loads(body) == {"status": "failure", "message": "echo broke: boom", "analysis": {}}


async def test_jobs_unfinished_after_the_grace_period_are_reported_stopped(platform) -> None:
    receiver, base = platform
    app, runner = echo_app(Echo(), stop_grace_seconds=0.0)  # jobs never get to go
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/analysis/echo", json=request(base, "a"))).status == 200
        assert (await client.post("/analysis/echo", json=request(base, "b"))).status == 200
    assert runner.in_flight == {}
    assert [json.loads(body) for body in receiver.bodies] == [
        {"status": "failure", "message": "echo was stopped", "analysis": {}}
    ] * 2
