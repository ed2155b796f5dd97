"""The web app under a real browser: Debian's Chromium driven by Playwright, against a real
gateway server (with the dispatcher, outbox relay and webhook routes running in this process on
the in-process bus and PostgreSQL), and a real local analysis service the test scripts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from dispatcher import running_dispatcher
from gateway.app import create_gateway_app
from shared.resources import Resources, open_resources
from shared.settings import Settings
from skyhook.composition import outbox_relay
from tests.support.api import Accounts, TestUser
from tests.support.pipeline import free_port

CHROMIUM = "/usr/bin/chromium"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


@dataclass
class WebApp:
    url: str
    app: web.Application
    resources: Resources
    accounts: Accounts
    screenshots: Path

    async def shot(self, page: Page, name: str) -> Path:
        """A full-page screenshot, for people to look at (never compared by the tests)."""
        path = self.screenshots / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: SKYHOOK_WEBAPP_SCREENSHOTS to keep them, else the test's tmp."""
    shots = Path(os.environ.get("SKYHOOK_WEBAPP_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    return shots


@pytest.fixture
async def webapp(settings: Settings, screenshots: Path) -> AsyncIterator[WebApp]:
    port = free_port()
    settings = settings.model_copy(
        update={
            "public_url": f"http://127.0.0.1:{port}",
            "dispatch_poll_interval_seconds": 0.05,
            "dispatch_retry_delays_seconds": [0.2, 0.2],
        }
    )
    async with open_resources(settings) as resources, running_dispatcher(resources):
        async with outbox_relay(resources):
            app = create_gateway_app(resources)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                yield WebApp(
                    f"http://127.0.0.1:{port}", app, resources, Accounts(resources), screenshots
                )
            finally:
                await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def new_page(browser: Browser, viewport: dict[str, int] = LAPTOP) -> Page:
    context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.js_errors = errors  # type: ignore[attr-defined]
    return page


async def sign_in(browser: Browser, app: WebApp, user: TestUser, **kw: dict[str, int]) -> Page:
    """A page signed in through the login form, showing the sources list."""
    page = await new_page(browser, **kw)
    await page.goto(f"{app.url}/login")
    await page.fill("#token", user.token)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#username")
    return page
