"""The analysis page: every dispatch attempt, parameters and inputs, the results table with its
JSON download, every plot with its download, the corner plot, and the way back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from playwright.async_api import Browser, expect

from tests.e2e.services import make_products, success_body
from tests.support.api import ApiClient
from tests.support.fake_service import Reply
from tests.webapp.conftest import PHONE, Scene, WebApp, post_callback, sign_in


async def start_by_api(webapp: WebApp, scene: Scene) -> int:
    body = {
        "analysis_parameters": {"label": "api run", "source": "salt3", "fix_z": "False"},
        "input_filters": {"photometry": {"filters": ["ztfr"]}},
        "show_plots": True,
        "show_corner": True,
    }
    path = f"/api/obj/{scene.obj_id}/analysis/{scene.service_id}"
    async with ApiClient.at(webapp.url, scene.runner) as api:
        return int((await api.ok("POST", path, json=body))["id"])


async def test_the_analysis_page_shows_attempts_results_plots_and_corner(
    webapp: WebApp, browser: Browser, scene: Scene, tmp_path: Path
) -> None:
    scene.service.replies = [Reply(status=503, text="busy")]  # the first attempt fails
    products = await asyncio.to_thread(make_products)
    analysis_id = await start_by_api(webapp, scene)
    await post_callback(scene.service, 1, success_body(products))

    page = await sign_in(browser, webapp, scene.reader)
    await page.goto(f"{webapp.url}/analysis/{analysis_id}")
    await page.wait_for_selector("main[data-ready=true]")

    attempts = page.locator("#timeline li[data-attempt]")
    await expect(attempts).to_have_count(2)
    await expect(attempts.nth(0)).to_contain_text("HTTP 503")
    await expect(attempts.nth(1)).to_contain_text("accepted")
    await expect(page.locator("#timeline")).to_contain_text("fit converged")
    await expect(page.locator("#input-filters")).to_contain_text("ztfr")
    await expect(page.locator("#parameters")).to_contain_text("api run")
    assert len(await page.text_content("#input-hash") or "") >= 32
    # Nested results open on demand.
    best_fit = page.locator("#results details", has_text="2 fields").first
    await best_fit.locator("summary").click()
    await expect(best_fit).to_contain_text("59015")
    # Every image drew (the plot and the corner plot from the posterior).
    await expect(page.locator("figure[data-plot]")).to_have_count(2)
    for figure in await page.locator("figure[data-plot] img").all():
        await expect(figure).to_have_js_property("complete", True)
        assert await figure.evaluate("img => img.naturalWidth") > 0
    await webapp.shot(page, "analysis-laptop")

    async with page.expect_download() as results_download:
        await page.click("#results-download")
    saved = tmp_path / "results.json"
    await (await results_download.value).save_as(saved)
    assert json.loads(saved.read_text()) == products.results
    async with page.expect_download() as plot_download:
        await page.click("figure[data-plot='0'] a[download]")
    assert (await plot_download.value).suggested_filename == f"analysis-{analysis_id}-plot-1.png"

    await page.click("#back")
    await page.wait_for_url(f"**/source/{scene.obj_id}")


async def test_the_analysis_page_at_phone_width(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    analysis_id = await start_by_api(webapp, scene)
    await post_callback(
        scene.service, 0, {"status": "failure", "message": "model did not converge", "analysis": {}}
    )
    page = await sign_in(browser, webapp, scene.runner, viewport=PHONE)
    await page.goto(f"{webapp.url}/analysis/{analysis_id}")
    await page.wait_for_selector("main[data-ready=true]")
    await expect(page.locator("#timeline")).to_contain_text("model did not converge")
    await expect(page.locator("#results")).to_contain_text("No data found for this Analysis")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]  # nothing sticks out sideways
    await webapp.shot(page, "analysis-phone")
