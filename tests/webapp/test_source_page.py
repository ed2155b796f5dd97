"""The source page: details and notes, the photometry plot (views, limits, model overlay), and
analyses started from the generated form whose status changes arrive live."""

from __future__ import annotations

from playwright.async_api import Browser, Page, ViewportSize, expect

from tests.support.api import TestUser
from tests.support.pipeline import load_analysis
from tests.webapp.conftest import LAPTOP, PHONE, Scene, WebApp, js_errors, post_callback, sign_in

MODEL = {
    "ztfg": [[60000.0 + d, 19.5 - 0.05 * d, 19.4 - 0.05 * d, 19.6 - 0.05 * d] for d in range(30)],
    "ztfr": [[60000.0 + d, 19.3 - 0.05 * d, 19.2 - 0.05 * d, 19.4 - 0.05 * d] for d in range(30)],
}


async def open_source(
    browser: Browser, webapp: WebApp, scene: Scene, user: TestUser, viewport: ViewportSize = LAPTOP
) -> Page:
    page = await sign_in(browser, webapp, user, viewport)
    await page.goto(f"{webapp.url}/source/{scene.obj_id}")
    await page.wait_for_selector("main[data-ready=true]")
    await page.wait_for_selector("#analyses[data-live=on]")
    return page


async def start_from_form(page: Page, label: str) -> int:
    await page.select_option("#start-service", label="Light-curve fitter")
    await page.select_option("#start-form select[name=source]", "salt2")
    await page.check("#start-form input[name=fix_z]")
    await page.fill("#start-form input[name=label]", label)
    await page.check("#start-form input[name=filter][value=ztfg]")
    await page.click("#start-form button[type=submit]")
    await page.wait_for_selector("#start-form", state="detached")
    first = page.locator("#analyses tbody tr[data-analysis]").first
    return int(await first.get_attribute("data-analysis") or 0)


async def test_source_page_shows_the_source_its_notes_and_the_light_curve(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    page = await open_source(browser, webapp, scene, scene.runner)

    await expect(page.locator("h1")).to_have_text(scene.obj_id)
    await expect(page.locator("#groups")).to_have_text(scene.group.name)
    await expect(page.locator("#classifications")).to_contain_text("Ia")
    # A comment's markup is shown as text, never interpreted.
    await expect(page.locator("#comments")).to_contain_text("Rising fast, <b>bright</b>")
    await expect(page.locator("#annotations")).to_contain_text("peak: 60015")
    plot = page.locator("#photometry-plot")
    await expect(plot).to_have_attribute("data-drawn", "mag:")
    names = await page.evaluate(
        "Array.from(document.getElementById('photometry-plot').data, t => t.name)"
    )
    assert {"ztfg", "ztfr", "ztfg upper limit", "ztfr upper limit"} <= set(names)
    low, high = await page.evaluate(
        "document.getElementById('photometry-plot')._fullLayout.yaxis.range"
    )
    assert low > high  # magnitudes: brighter is up
    await webapp.shot(page, "source-laptop")

    await page.click("button[data-view=flux]")
    await expect(plot).to_have_attribute("data-drawn", "flux:")
    title = await page.evaluate(
        "document.getElementById('photometry-plot').layout.yaxis.title.text"
    )
    assert title.startswith("flux")
    assert js_errors(page) == []


async def test_an_analysis_started_from_the_form_completes_live_and_overlays_its_model(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    page = await open_source(browser, webapp, scene, scene.runner)

    analysis_id = await start_from_form(page, "first run")

    await scene.service.wait_received(1)
    stored = await load_analysis(webapp.resources, analysis_id)
    assert stored.analysis_parameters == {
        "source": "salt2",
        "fix_z": "True",
        "num_samples": 1000,
        "label": "first run",
    }
    assert stored.input_filters == {"photometry": {"filters": ["ztfg"]}}
    row = page.locator(f"tr[data-analysis='{analysis_id}'] .status .badge")
    await expect(row).to_have_attribute("data-status", "pending")

    await post_callback(
        scene.service,
        0,
        {"status": "success", "message": "fit converged", "analysis": {"model_lightcurve": MODEL}},
    )

    await expect(row).to_have_attribute("data-status", "completed")  # no reload
    await expect(page.locator(f"tr[data-analysis='{analysis_id}'] .message")).to_have_text(
        "fit converged"
    )
    await page.check(f"input[data-overlay='{analysis_id}']")
    await expect(page.locator("#photometry-plot")).to_have_attribute(
        "data-drawn", f"mag:{analysis_id}"
    )
    names = await page.evaluate(
        "Array.from(document.getElementById('photometry-plot').data, t => t.name)"
    )
    assert f"model #{analysis_id} ztfg" in names and f"#{analysis_id} ztfg 68 %" in names
    await webapp.shot(page, "source-overlay-laptop")
    await page.uncheck(f"input[data-overlay='{analysis_id}']")
    await expect(page.locator("#photometry-plot")).to_have_attribute("data-drawn", "mag:")


async def test_a_failure_shows_up_by_itself(webapp: WebApp, browser: Browser, scene: Scene) -> None:
    page = await open_source(browser, webapp, scene, scene.runner)
    analysis_id = await start_from_form(page, "doomed")
    badge = page.locator(f"tr[data-analysis='{analysis_id}'] .status .badge")
    await expect(badge).to_have_attribute("data-status", "pending")

    await post_callback(
        scene.service, 0, {"status": "failure", "message": "no detections", "analysis": {}}
    )

    await expect(badge).to_have_attribute("data-status", "failure")
    await expect(page.locator(f"tr[data-analysis='{analysis_id}'] .message")).to_have_text(
        "no detections"
    )


async def test_a_required_parameter_is_asked_for_and_a_delete_needs_confirmation(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    page = await open_source(browser, webapp, scene, scene.runner)
    await page.select_option("#start-service", label="Light-curve fitter")
    await page.click("#start-form button[type=submit]")
    assert await page.evaluate(
        "document.querySelector('#start-form input[name=label]').validity.valueMissing"
    )
    assert await page.locator("#analyses tbody tr[data-analysis]").count() == 0

    analysis_id = await start_from_form(page, "to delete")
    row = page.locator(f"tr[data-analysis='{analysis_id}']")
    await row.locator("button.delete").click()
    await page.click("dialog.confirm button:has-text('Cancel')")
    await expect(row).to_be_visible()
    await row.locator("button.delete").click()
    await webapp.shot(page, "source-delete-confirm")
    await page.click("dialog.confirm button.danger")
    await expect(row).to_have_count(0)
    assert await load_analysis_or_none(webapp, analysis_id) is None


async def load_analysis_or_none(webapp: WebApp, analysis_id: int) -> object:
    from shared.db.models import ObjAnalysis

    async with webapp.resources.sessions() as session:
        return await session.get(ObjAnalysis, analysis_id)


async def test_cancel_while_in_flight(webapp: WebApp, browser: Browser, scene: Scene) -> None:
    page = await open_source(browser, webapp, scene, scene.runner)
    analysis_id = await start_from_form(page, "cancel me")
    row = page.locator(f"tr[data-analysis='{analysis_id}']")
    await expect(row.locator(".badge")).to_have_attribute("data-status", "pending")
    await row.locator("button.cancel").click()
    await expect(row.locator(".badge")).to_have_attribute("data-status", "cancelled")
    await expect(row.locator("button.cancel")).to_have_count(0)


async def test_a_read_only_user_sees_no_write_actions(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    writer = await open_source(browser, webapp, scene, scene.runner)
    await start_from_form(writer, "visible to readers")

    page = await open_source(browser, webapp, scene, scene.reader, viewport=PHONE)

    await expect(page.locator("#analyses tbody tr[data-analysis]")).to_have_count(1)
    assert await page.locator("#start-service").count() == 0
    assert await page.locator("button.cancel, button.delete").count() == 0
    assert await page.locator("#summary-edit, .run-summary").count() == 0
    await webapp.shot(page, "source-phone-readonly")
