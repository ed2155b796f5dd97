"""The gateway as a real aiohttp server in a background thread (its own event loop), for clients
that are not asyncio code (schemathesis), with an admin token to call it with."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from shared.runtime.resources import open_resources
from shared.runtime.settings import Settings
from skyhook.composition import platform_gateway_app
from tests.support.api import Accounts
from tests.support.ports import free_port


@dataclass(frozen=True)
class LiveGateway:
    base_url: str
    admin_token: str


async def _serve(
    settings: Settings, port: int, ready: threading.Event, stop: asyncio.Event, box: dict[str, Any]
) -> None:
    async with open_resources(settings) as resources:
        admin = await Accounts(resources).user(admin=True)
        runner = web.AppRunner(platform_gateway_app(resources), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            box["token"] = admin.token
            ready.set()
            await stop.wait()
        finally:
            await runner.cleanup()


@contextmanager
def live_gateway(settings: Settings) -> Iterator[LiveGateway]:
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}  # the admin token, or the error the gateway did not start with
    stop = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(_serve(settings, port, ready, stop, box))
        except BaseException as exc:  # reported to the waiting test below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="live-gateway", daemon=True)
    thread.start()
    ready.wait()
    if "error" in box:
        raise RuntimeError("the gateway did not start") from box["error"]
    try:
        yield LiveGateway(f"http://127.0.0.1:{port}", box["token"])
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        loop.close()
