"""The web app under a real browser: Debian's Chromium driven by Playwright, against a real
gateway server (with the dispatcher, outbox relay and webhook routes running in this process on
the in-process bus and PostgreSQL), and a real local analysis service the test scripts."""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect
from sqlalchemy import insert

from dispatcher import running_dispatcher
from shared.db.models import Group, Photometry, photometry_groups
from shared.runtime.resources import Resources, open_resources
from shared.runtime.settings import Settings
from skyhook.composition import outbox_relay, platform_gateway_app
from tests.support.api import Accounts, ApiClient, TestUser, unique
from tests.support.fake_service import FakeService
from tests.support.pipeline import (
    add_annotation,
    add_classification,
    add_comment,
    make_instrument,
    make_obj,
    make_service,
)
from tests.support.ports import free_port

CHROMIUM = "/usr/bin/chromium"
# How long an expectation waits for the page to get there (the machine is shared and busy).
expect.set_options(timeout=20_000)
LAPTOP: ViewportSize = {"width": 1366, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


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
            app = platform_gateway_app(resources)
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


_JS_ERRORS: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()


def js_errors(page: Page) -> list[str]:
    """The JavaScript errors the page (made by ``new_page``) has thrown so far."""
    return _JS_ERRORS[page]


async def new_page(browser: Browser, viewport: ViewportSize = LAPTOP) -> Page:
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    errors = _JS_ERRORS[page] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


async def sign_in(
    browser: Browser, app: WebApp, user: TestUser, viewport: ViewportSize = LAPTOP
) -> Page:
    """A page signed in through the login form, showing the sources list."""
    page = await new_page(browser, viewport)
    await page.goto(f"{app.url}/login")
    await page.fill("#token", user.token)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#username")
    return page


@dataclass
class Scene:
    """A group, a source in it with photometry and notes, a service on a real local HTTP
    server, a user who may run analyses and a read-only one."""

    obj_id: str
    service_id: int
    service: FakeService
    runner: TestUser
    reader: TestUser
    group: Group


SERVICE_PARAMETERS = {
    "source": ["salt3", "salt2"],
    "fix_z": ["False", "True"],
    "num_samples": {"type": "integer", "default": 1000, "description": "posterior draws"},
    "label": {"type": "string", "required": True, "description": "a name for the run"},
}


async def add_light_curve(resources: Resources, obj_id: str, group: Group, count: int) -> None:
    instrument = await make_instrument(resources, unique("ZTF"))
    rows = []
    for n in range(count):
        band = ("ztfg", "ztfr")[n % 2]
        mjd = 60000.0 + n * 40.0 / count
        flux = 300.0 * math.exp(-(((mjd - 60015.0) / 8.0) ** 2)) + 5.0
        detected = mjd > 60002.0
        rows.append(
            Photometry(
                obj_id=obj_id,
                instrument_id=instrument,
                mjd=mjd,
                filter=band,
                flux=flux if detected else None,
                fluxerr=4.0 + flux * 0.03,
            )
        )
    async with resources.sessions.begin() as session:
        session.add_all(rows)
        await session.flush()
        links = [{"photometry_id": r.id, "group_id": group.id} for r in rows]
        await session.execute(insert(photometry_groups), links)


@pytest.fixture
async def scene(webapp: WebApp) -> AsyncIterator[Scene]:
    resources = webapp.resources
    group = await webapp.accounts.group()
    runner = await webapp.accounts.user(groups=(group,), acls=("Run Analyses", "Upload Data"))
    reader = await webapp.accounts.user(groups=(group,), acls=("View Only",))
    obj_id = await make_obj(resources, [group], redshift=0.042)
    await add_light_curve(resources, obj_id, group, 40)
    await add_comment(resources, obj_id, [group], text="Rising fast, <b>bright</b>")
    await add_classification(resources, obj_id, [group], classification="Ia", probability=0.8)
    await add_annotation(resources, obj_id, [group], origin="peak-finder", data={"peak": 60015})
    service = await FakeService().start()
    service_id = await make_service(
        resources,
        service.url,
        [group],
        display_name="Light-curve fitter",
        optional_analysis_parameters=SERVICE_PARAMETERS,
    )
    try:
        yield Scene(obj_id, service_id, service, runner, reader, group)
    finally:
        await service.stop()


async def post_callback(service: FakeService, index: int, body: dict[str, Any]) -> None:
    """Answer the index-th request the service received, as a real service would."""
    received = await service.wait_received(index + 1)
    callback = await service.post_callback(received[index].callback_url, body)
    assert callback.status == 200, callback.reply


async def call(webapp: WebApp, user: TestUser, method: str, path: str, body: Any = None) -> Any:
    """The API's `data` for a request made with the user's token (which must succeed)."""
    async with ApiClient.at(webapp.url, user) as api:
        return await api.ok(method, path, json=body)
