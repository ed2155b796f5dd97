"""Default analyses on the services page: a manager creates one, a classification starts it (the
real trigger consumer on the bus), the analysis page says what started it, the manager edits its
daily limit and deletes it; a read-only user sees the defaults without write actions."""

from __future__ import annotations

from playwright.async_api import Browser, Page, ViewportSize, expect
from sqlalchemy import select

from dispatcher.triggers import running_triggers
from shared.db.models import ObjAnalysis
from tests.support.api import TestUser
from tests.webapp.conftest import LAPTOP, PHONE, Scene, WebApp, call, js_errors, sign_in

FILTER = '{"classifications": [{"name": "Ia", "probability": 0.5}]}'


async def services_page(
    browser: Browser, webapp: WebApp, user: TestUser, viewport: ViewportSize = LAPTOP
) -> Page:
    page = await sign_in(browser, webapp, user, viewport)
    await page.goto(f"{webapp.url}/services")
    await page.wait_for_selector("main[data-ready=true]")
    return page


async def started_by_default(webapp: WebApp, scene: Scene) -> ObjAnalysis | None:
    async with webapp.resources.sessions() as session:
        query = select(ObjAnalysis).where(
            ObjAnalysis.obj_id == scene.obj_id, ObjAnalysis.default_analysis_id.is_not(None)
        )
        return (await session.scalars(query)).one_or_none()


async def test_a_manager_creates_edits_and_deletes_a_default_analysis(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    manager = await webapp.accounts.user(
        groups=(scene.group,), acls=("Manage Analysis Services", "Run Analyses")
    )
    page = await services_page(browser, webapp, manager)
    panel = page.locator(f"[data-defaults-of='{scene.service_id}']")
    await expect(panel).to_have_attribute("data-loaded", "0")

    await panel.locator("button.new-default").click()
    form = page.locator("#default-form")
    await form.locator("textarea[name=source_filter]").fill(FILTER)
    await form.locator("textarea[name=default_analysis_parameters]").fill('{"label": "auto"}')
    await form.locator("input[name=daily_limit]").fill("3")
    await form.locator(f"input[name=group_ids][value='{scene.group.id}']").check()
    await form.locator("button[type=submit]").click()
    await expect(panel).to_have_attribute("data-loaded", "1")
    item = panel.locator("li[data-default]")
    await expect(item.locator(".source-filter")).to_have_text("classification Ia (p ≥ 0.5)")
    await expect(item.locator(".daily")).to_have_text("today 0 of 3")
    default_id = int(await item.get_attribute("data-default") or 0)
    base = f"/api/analysis_service/{scene.service_id}/default_analysis"
    stored = await call(webapp, manager, "GET", f"{base}/{default_id}")
    assert stored["daily_limit"] == 3
    assert stored["source_filter"] == {"classifications": [{"name": "Ia", "probability": 0.5}]}
    assert stored["default_analysis_parameters"] == {"label": "auto"}
    assert [g["id"] for g in stored["groups"]] == [scene.group.id]

    # A matching classification starts it; the analysis page says so.
    async with running_triggers(webapp.resources):
        body = {"obj_id": scene.obj_id, "classification": "Ia", "probability": 0.9}
        await call(webapp, scene.runner, "POST", "/api/classification", body)
        await scene.service.wait_received(1)
    analysis = await started_by_default(webapp, scene)
    assert analysis is not None and analysis.default_analysis_id == default_id
    await page.goto(f"{webapp.url}/analysis/{analysis.id}")
    started_by = page.locator("#started-by")
    await expect(started_by).to_contain_text(f"default analysis #{default_id}")
    await expect(started_by).to_contain_text("classification Ia")

    await page.goto(f"{webapp.url}/services")
    await expect(item.locator(".daily")).to_have_text("today 1 of 3")
    await expect(item).not_to_contain_text("last run never")
    await webapp.shot(page, "services-defaults-laptop")

    await item.locator("button.edit-default").click()
    await expect(form.locator("input[name=daily_limit]")).to_have_value("3")
    await form.locator("input[name=daily_limit]").fill("5")
    await form.locator("button[type=submit]").click()
    await expect(item.locator(".daily")).to_have_text("today 1 of 5")
    assert (await call(webapp, manager, "GET", f"{base}/{default_id}"))["daily_limit"] == 5

    # A bad limit is refused with the API's message and changes nothing.
    await item.locator("button.edit-default").click()
    await form.locator("input[name=daily_limit]").evaluate("input => input.removeAttribute('max')")
    await form.locator("input[name=daily_limit]").fill("5000")
    await form.locator("button[type=submit]").click()
    await expect(form.locator(".error")).to_contain_text("daily_limit")
    await form.locator("button", has_text="Cancel").click()
    assert (await call(webapp, manager, "GET", f"{base}/{default_id}"))["daily_limit"] == 5

    await item.locator("button.delete-default").click()
    await page.locator("dialog.confirm button", has_text="Cancel").click()
    await expect(item).to_have_count(1)
    await item.locator("button.delete-default").click()
    await page.locator("dialog.confirm button.danger").click()
    await expect(panel).to_have_attribute("data-loaded", "0")
    assert await call(webapp, manager, "GET", base) == []
    assert js_errors(page) == []


async def test_a_read_only_user_sees_defaults_without_write_actions(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    manager = await webapp.accounts.user(groups=(scene.group,), acls=("Manage Analysis Services",))
    base = f"/api/analysis_service/{scene.service_id}/default_analysis"
    body = {
        "source_filter": {"group_id": scene.group.id},
        "default_analysis_parameters": {"label": "saved"},
        "daily_limit": 7,
    }
    await call(webapp, manager, "POST", base, body)

    page = await services_page(browser, webapp, scene.reader, viewport=PHONE)
    item = page.locator(f"[data-defaults-of='{scene.service_id}'] li[data-default]")
    await expect(item.locator(".source-filter")).to_have_text(f"saved to {scene.group.name}")
    await expect(item.locator(".daily")).to_have_text("today 0 of 7")
    await expect(item).to_contain_text("last run never")
    writes = "button.new-default, button.edit-default, button.delete-default"
    assert await page.locator(writes).count() == 0
    await webapp.shot(page, "services-defaults-phone-readonly")
    assert js_errors(page) == []
