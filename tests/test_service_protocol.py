"""service_kit.protocol against real local HTTP servers: the callback's retry and stop rules,
redirects, and a token that never reaches the log."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from service_kit.protocol import post_callback
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
