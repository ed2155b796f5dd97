"""Photometry statistics in the web app: the card on the source page, the sources list's
photometry filters, and the source statistics page plotting one statistic against another."""

from __future__ import annotations

import re

from playwright.async_api import Browser, Page, expect

from tests.support.api import unique
from tests.support.pipeline import add_classification, make_instrument, make_obj
from tests.webapp.conftest import PHONE, Scene, WebApp, call, js_errors, sign_in

# (mjd, AB magnitude, filter): a transient peaking at 17.0 in r on MJD 60002 (2023-02-27).
BRIGHT = [
    (60000.0, 18.0, "ztfr"),
    (60001.0, 18.5, "ztfg"),
    (60002.0, 17.0, "ztfr"),
    (60004.0, 18.1, "ztfg"),
    (60006.0, 17.8, "ztfr"),
]
# A fainter one, first seen on MJD 60100 (2023-06-05).
FAINT = [(60100.0, 19.8, "ztfr"), (60101.0, 19.5, "ztfr"), (60103.0, 19.9, "ztfr")]


async def source_with(
    webapp: WebApp, scene: Scene, points: list[tuple[float, float, str]], classification: str
) -> str:
    obj_id = await make_obj(webapp.resources, [scene.group])
    instrument_id = await make_instrument(webapp.resources, unique("ZTF"))
    await add_classification(
        webapp.resources, obj_id, [scene.group], classification=classification, probability=0.9
    )
    await call(
        webapp,
        scene.runner,
        "POST",
        "/api/photometry",
        {
            "obj_id": obj_id,
            "instrument_id": instrument_id,
            "mjd": [p[0] for p in points],
            "mag": [p[1] for p in points],
            "magerr": [0.05 for _ in points],
            "limiting_mag": [21.0 for _ in points],
            "filter": [p[2] for p in points],
            "magsys": "ab",
            "group_ids": [scene.group.id],
        },
    )
    return obj_id


async def listed(page: Page) -> set[str]:
    rows = page.locator("#sources tbody tr[data-source]")
    return set(await rows.evaluate_all("rows => rows.map(r => r.dataset.source)"))


async def apply_filters(page: Page, **values: str) -> None:
    for name, value in values.items():
        await page.fill(f"#filter-{name}", value)
    await page.click("#apply-filters")
    for name, value in values.items():
        pattern = re.compile(f"(^|&){name}={re.escape(value)}(&|$)")
        await expect(page.locator("#sources tbody")).to_have_attribute("data-loaded", pattern)


async def clear_filters(page: Page) -> None:
    await page.click("#clear-filters")
    pattern = re.compile("Detection|PeakMagnitude")
    await expect(page.locator("#sources tbody")).not_to_have_attribute("data-loaded", pattern)
    await expect(page.locator("#sources tbody")).to_have_attribute("data-loaded", re.compile("."))


async def test_the_source_page_shows_statistics_and_the_list_filters_by_them(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    bright = await source_with(webapp, scene, BRIGHT, "Ia")
    faint = await source_with(webapp, scene, FAINT, "II")
    page = await sign_in(browser, webapp, scene.runner)

    await page.goto(f"{webapp.url}/source/{bright}")
    card = page.locator("#phot-stats[data-loaded=true]")
    await expect(card.locator("#stat-detections")).to_have_text("5 of 5 points")
    await expect(card.locator("#stat-first")).to_contain_text("2023-02-25 00:00")
    await expect(card.locator("#stat-first")).to_contain_text("18 mag in ztfr")
    await expect(card.locator("#stat-last")).to_contain_text("2023-03-03 00:00")
    await expect(card.locator("#stat-peak")).to_have_text("17 mag at 2023-02-27 00:00")
    await expect(card.locator("#stat-peaks [data-filter=ztfg]")).to_have_text("ztfg 18.1")
    await expect(card.locator("#stat-peaks [data-filter=ztfr]")).to_have_text("ztfr 17")
    stats = await call(webapp, scene.runner, "GET", f"/api/sources/{bright}/phot_stat")
    await expect(card.locator("#stat-rise")).to_have_text(
        f"{round(stats['rise_rate'], 3):g} mag/day"
    )
    await expect(card.locator("#stat-decay")).to_have_text(
        f"{round(stats['decay_rate'], 3):g} mag/day"
    )
    await page.wait_for_selector("main[data-ready=true]")
    await webapp.shot(page, "source-phot-stats-laptop")

    await page.goto(f"{webapp.url}/")
    await page.click("#filters-box summary")
    await apply_filters(page, numberDetections="4")
    await expect(page.locator(f"tr[data-source='{bright}']")).to_be_visible()
    assert faint not in await listed(page)
    await clear_filters(page)
    await expect(page.locator(f"tr[data-source='{faint}']")).to_be_visible()

    await apply_filters(page, firstDetectionAfter="2023-03-01")
    await expect(page.locator(f"tr[data-source='{faint}']")).to_be_visible()
    assert bright not in await listed(page)
    await clear_filters(page)
    await apply_filters(page, lastDetectionBefore="2023-04-01", maxPeakMagnitude="17.5")
    await expect(page.locator("#page-info")).to_contain_text("1 sources")
    assert await listed(page) == {bright}
    await clear_filters(page)
    await apply_filters(page, minPeakMagnitude="19")
    await expect(page.locator(f"tr[data-source='{faint}']")).to_be_visible()
    assert bright not in await listed(page)
    # The filters are kept in the address, so a reload shows the same list.
    await page.reload()
    await expect(page.locator("#filter-minPeakMagnitude")).to_have_value("19")
    await expect(page.locator(f"tr[data-source='{faint}']")).to_be_visible()
    assert bright not in await listed(page)
    assert js_errors(page) == []


async def test_the_statistics_page_plots_one_statistic_against_another_by_classification(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    bright = await source_with(webapp, scene, BRIGHT, "Ia")
    faint = await source_with(webapp, scene, FAINT, "II")
    page = await sign_in(browser, webapp, scene.reader, viewport=PHONE)
    await page.click("nav a[href='/source_stats']")
    await page.wait_for_selector("main[data-ready=true]")

    await page.select_option("#xField", "num_det_global")
    plot = page.locator("#stats-plot")
    await expect(plot).to_have_attribute(
        "data-drawn", "xField=num_det_global&yField=peak_mag_global"
    )
    traces = await page.evaluate(
        "Object.fromEntries(document.getElementById('stats-plot').data.map("
        "t => [t.name, t.customdata.map((id, i) => [id, t.x[i], t.y[i]])]))"
    )
    assert [bright, 5, 17.0] in traces["Ia"]
    assert [faint, 3, 19.5] in traces["II"]
    title, y_range = await page.evaluate(
        "[document.getElementById('stats-plot').layout.yaxis.title.text,"
        " document.getElementById('stats-plot')._fullLayout.yaxis.range]"
    )
    assert title == "Peak magnitude"
    assert y_range[0] > y_range[1]  # magnitudes: brighter is up
    await webapp.shot(page, "source-stats-phone")

    await page.fill("#classifications", "II")
    await page.click("#plot-stats")
    await expect(plot).to_have_attribute(
        "data-drawn", "xField=num_det_global&yField=peak_mag_global&classifications=II"
    )
    names = await page.evaluate("document.getElementById('stats-plot').data.map(t => t.name)")
    assert names == ["II"]
    await expect(page.locator("#stats-count")).to_contain_text("1 sources")
    assert js_errors(page) == []
