"""The periodogram page: a sinusoidal light curve posted through the API, its period found by
the server's periodogram and shown with its multiples, the folded light curve, and the period
saved as an annotation (checked through the API); read-only users cannot save."""

from __future__ import annotations

import math

import numpy as np
import pytest
from playwright.async_api import Browser, Page, ViewportSize, expect

from tests.support.api import TestUser, unique
from tests.support.pipeline import make_instrument, make_obj
from tests.webapp.conftest import LAPTOP, PHONE, Scene, WebApp, call, js_errors, sign_in

PERIOD = 2.3456


async def variable_source(webapp: WebApp, scene: Scene) -> str:
    """A source with 160 points of a 0.3 mag sinusoid in two bands over 200 nights."""
    obj_id = await make_obj(webapp.resources, [scene.group])
    instrument_id = await make_instrument(webapp.resources, unique("ZTF"))
    rng = np.random.default_rng(7)
    mjd = 60000.0 + np.sort(rng.choice(200, size=160)) + rng.uniform(0.15, 0.45, size=160)
    bands = ["ztfg" if n % 2 else "ztfr" for n in range(mjd.size)]
    mag = 18.0 + 0.3 * np.sin(2 * math.pi * mjd / PERIOD) + rng.normal(0, 0.03, size=mjd.size)
    await call(
        webapp,
        scene.runner,
        "POST",
        "/api/photometry",
        {
            "obj_id": obj_id,
            "instrument_id": instrument_id,
            "mjd": mjd.tolist(),
            "mag": mag.tolist(),
            "magerr": [0.03] * mjd.size,
            "limiting_mag": [21.0] * mjd.size,
            "filter": bands,
            "magsys": "ab",
            "group_ids": [scene.group.id],
        },
    )
    return obj_id


async def open_periodogram(
    browser: Browser,
    webapp: WebApp,
    user: TestUser,
    obj_id: str,
    viewport: ViewportSize = LAPTOP,
) -> Page:
    page = await sign_in(browser, webapp, user, viewport)
    await page.goto(f"{webapp.url}/source/{obj_id}")
    await page.click("#periodogram-link")
    await page.wait_for_selector("main[data-ready=true]")
    return page


async def click_peak(page: Page, index: int) -> float:
    """Clicks the index-th peak's marker on the power plot; returns its period."""
    period, x, y = await page.evaluate(
        """n => {
            const plot = document.getElementById('power-plot');
            const trace = plot.data[1], xa = plot._fullLayout.xaxis, ya = plot._fullLayout.yaxis;
            const x = xa._offset + xa.l2p(Math.log10(trace.x[n]));
            return [trace.x[n], x, ya._offset + ya.l2p(trace.y[n])];
        }""",
        index,
    )
    box = await page.locator("#power-plot").bounding_box()
    assert box is not None
    await page.mouse.click(box["x"] + x, box["y"] + y)
    return float(period)


async def test_the_page_finds_the_period_and_saves_it_as_an_annotation(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    obj_id = await variable_source(webapp, scene)
    page = await open_periodogram(browser, webapp, scene.runner, obj_id)

    best = float(await page.locator("#power-plot").get_attribute("data-best-period") or 0)
    assert best == pytest.approx(PERIOD, rel=0.005)
    chosen = page.locator("#chosen-period")
    assert float(await chosen.get_attribute("data-period") or 0) == best
    await expect(page.locator("#chosen-fap")).to_contain_text("(naive)")  # multiband
    fap_text = await page.locator("#chosen-fap").inner_text()
    assert float(fap_text.split(" ")[0]) < 1e-3
    # The best period and its ½, 2 and 3 multiples are marked on the log period axis.
    axis_type, marks = await page.evaluate(
        "[document.getElementById('power-plot')._fullLayout.xaxis.type,"
        " document.getElementById('power-plot').layout.shapes.map(s => s.x0)]"
    )
    assert axis_type == "log"
    assert sorted(marks) == pytest.approx(sorted(best * m for m in (0.5, 1, 2, 3)))
    # Two cycles of each band on the folded plot.
    folded = page.locator("#folded-plot")
    await expect(folded).to_have_attribute("data-period", str(best))
    names, phases = await page.evaluate(
        "[document.getElementById('folded-plot').data.map(t => t.name),"
        " document.getElementById('folded-plot').data.flatMap(t => t.x)]"
    )
    assert sorted(names) == ["ztfg", "ztfr"]
    assert min(phases) >= 0 and max(phases) < 2 and max(phases) > 1.5

    # The multiplier doubles the period; another peak can be chosen, then the best again.
    await page.select_option("#multiplier", "2")
    assert float(await chosen.get_attribute("data-period") or 0) == pytest.approx(2 * best)
    await expect(page.locator("#chosen-fap")).to_have_text("not a reported peak")
    # A click on the second peak's marker in the plot chooses it.
    second = await click_peak(page, 1)
    await expect(chosen).to_have_attribute("data-period", str(second))
    assert second != pytest.approx(best)
    await page.click("#peaks button[data-peak='0']")
    await expect(chosen).to_have_attribute("data-period", str(best))
    await webapp.shot(page, "periodogram-laptop")

    await page.click("#save-period")
    await expect(page.locator("#save-status")).to_contain_text("Saved period")
    annotations = await call(webapp, scene.runner, "GET", f"/api/sources/{obj_id}/annotations")
    saved = [a for a in annotations if a["origin"] == "periodogram"]
    assert len(saved) == 1
    assert saved[0]["data"]["period"] == pytest.approx(best)
    assert saved[0]["data"]["false_alarm_probability"] < 1e-3
    # The saved period is what phase folding now uses.
    folded_points = await call(
        webapp, scene.runner, "GET", f"/api/sources/{obj_id}/photometry?phaseFoldData=true"
    )
    assert len(folded_points["photometry"]) == 160
    assert all(0 <= p["phase"] < 1 for p in folded_points["photometry"])
    assert js_errors(page) == []


async def test_grid_controls_and_bands_reach_the_server_and_read_only_users_cannot_save(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    obj_id = await variable_source(webapp, scene)
    page = await open_periodogram(browser, webapp, scene.reader, obj_id, viewport=PHONE)
    await expect(page.locator("#chosen-period")).to_be_visible()
    await expect(page.locator("#save-period")).to_have_count(0)
    await webapp.shot(page, "periodogram-phone")

    # One band, one term, a narrow range around the period: still found, on that band only.
    await page.uncheck("#band-choices input[value=ztfg]")
    await page.fill("#min_period", "1.5")
    await page.fill("#max_period", "4")
    await page.fill("#samples_per_peak", "20")
    await page.select_option("#method", "ls")
    await page.click("#compute")
    await expect(page.locator("#periodogram-status")).to_contain_text("ztfr: ")
    await expect(page.locator("#periodogram-status")).not_to_contain_text("ztfg")
    best = float(await page.locator("#power-plot").get_attribute("data-best-period") or 0)
    assert best == pytest.approx(PERIOD, rel=0.005)
    low, high = await page.evaluate(
        "document.getElementById('power-plot').data[0].x.reduce("
        "([a, b], x) => [Math.min(a, x), Math.max(b, x)], [Infinity, 0])"
    )
    assert low >= 1.5 - 1e-9 and high <= 4 + 1e-9
    names = await page.evaluate("document.getElementById('folded-plot').data.map(t => t.name)")
    assert names == ["ztfr"]

    # A bad range is refused with the server's message.
    await page.fill("#min_period", "5")
    await page.fill("#max_period", "4")
    await page.click("#compute")
    await expect(page.locator("#periodogram-status .error")).to_be_visible()
    assert js_errors(page) == []
