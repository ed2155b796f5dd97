"""Services (create, edit, delete with confirmation; write-only secrets; upload-only uploads),
the health page, and the summary card (edit and history)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from playwright.async_api import Browser, Page, ViewportSize, expect
from sqlalchemy import select

from shared.db.models import AnalysisService, Obj, ObjAnalysis
from shared.db.types import utcnow
from shared.domain.enums import AnalysisStatus
from tests.support.api import TestUser
from tests.support.pipeline import make_analysis, make_service
from tests.webapp.conftest import LAPTOP, PHONE, Scene, WebApp, sign_in

SECRET = "tok-very-secret-123"


async def services_page(
    browser: Browser, webapp: WebApp, user: TestUser, viewport: ViewportSize = LAPTOP
) -> Page:
    page = await sign_in(browser, webapp, user, viewport)
    await page.goto(f"{webapp.url}/services")
    await page.wait_for_selector("main[data-ready=true]")
    return page


async def service_named(webapp: WebApp, name: str) -> AnalysisService | None:
    async with webapp.resources.sessions() as session:
        query = select(AnalysisService).where(AnalysisService.name == name)
        return (await session.scalars(query)).one_or_none()


async def test_a_manager_creates_edits_and_deletes_a_service(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    manager = await webapp.accounts.user(groups=(scene.group,), acls=("Manage Analysis Services",))
    page = await services_page(browser, webapp, manager)

    await page.click("#new-service")
    form = page.locator("#service-form")
    await form.locator("input[name=name]").fill("spectral_matcher")
    await form.locator("input[name=display_name]").fill("Spectral matcher")
    await form.locator("input[name=url]").fill(scene.service.url)
    await form.locator("input[name=input_data_types][value=spectra]").check()
    await form.locator("select[name=authentication_type]").select_option("header_token")
    await form.locator("input[name=_authinfo]").fill(
        json.dumps({"header_token": {"Authorization": SECRET}})
    )
    await form.locator("textarea[name=optional_analysis_parameters]").fill('{"k": [1, 2]}')
    await webapp.shot(page, "service-form-laptop")
    await form.locator("button[type=submit]").click()
    row = page.locator("tr[data-service]", has_text="Spectral matcher")
    await expect(row).to_have_count(1)
    await expect(row.locator(".secret-state")).to_contain_text("credentials set")
    assert SECRET not in await page.content()
    created = await service_named(webapp, "spectral_matcher")
    assert created is not None and created.input_data_types == ["spectra"]

    await row.locator("button.edit").click()
    assert await form.locator("input[name=_authinfo]").input_value() == ""  # write-only
    await expect(form).to_contain_text("Credentials (_authinfo JSON) · set")
    await form.locator("input[name=display_name]").fill("Spectral matcher v2")
    await form.locator("input[name=upload_only]").check()
    await form.locator("button[type=submit]").click()
    edited = page.locator("tr[data-service]", has_text="Spectral matcher v2")
    await expect(edited).to_contain_text("upload only")
    changed = await service_named(webapp, "spectral_matcher")
    assert changed is not None and changed.upload_only and changed.authinfo_ciphertext

    await edited.locator("button.delete").click()
    await page.click("dialog.confirm button:has-text('Cancel')")
    assert await service_named(webapp, "spectral_matcher") is not None
    await edited.locator("button.delete").click()
    await page.click("dialog.confirm button.danger")
    await expect(edited).to_have_count(0)
    assert await service_named(webapp, "spectral_matcher") is None


async def test_a_bad_service_is_refused_with_the_api_message(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    manager = await webapp.accounts.user(groups=(scene.group,), acls=("Manage Analysis Services",))
    page = await services_page(browser, webapp, manager)
    await page.click("#new-service")
    form = page.locator("#service-form")
    await form.locator("input[name=name]").fill("broken")
    await form.locator("input[name=url]").fill(scene.service.url)
    await form.locator("textarea[name=optional_analysis_parameters]").fill("{not json")
    await form.locator("button[type=submit]").click()
    await expect(form.locator(".error")).to_contain_text("optional_analysis_parameters")
    assert await service_named(webapp, "broken") is None


async def test_results_are_uploaded_to_an_upload_only_service(
    webapp: WebApp, browser: Browser, scene: Scene, tmp_path: Path
) -> None:
    await make_service(
        webapp.resources, "", [scene.group], display_name="Hand fits", upload_only=True
    )
    page = await services_page(browser, webapp, scene.runner)
    assert await page.locator("#new-service, button.edit, button.delete").count() == 0
    results = tmp_path / "fit.json"
    results.write_text(json.dumps({"results": {"format": "json", "data": {"t0": 60015.2}}}))

    await page.locator("tr[data-service]", has_text="Hand fits").locator("button.upload").click()
    await page.fill("#upload-form input[name=obj_id]", scene.obj_id)
    await page.fill("#upload-form input[name=message]", "fitted by hand")
    await page.set_input_files("#upload-form input[name=file]", str(results))
    await page.click("#upload-form button[type=submit]")

    await page.wait_for_url(f"**/source/{scene.obj_id}")
    row = page.locator("#analyses tr[data-analysis]", has_text="Hand fits")
    await expect(row.locator(".badge")).to_have_attribute("data-status", "completed")


async def test_a_read_only_user_sees_services_without_write_actions(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    page = await services_page(browser, webapp, scene.reader, viewport=PHONE)
    await expect(page.locator("tr[data-service]")).to_have_count(1)
    assert (
        await page.locator("#new-service, button.edit, button.delete, button.upload").count() == 0
    )
    await webapp.shot(page, "services-phone-readonly")


async def test_health_counts_by_window_and_lists_the_newest_failures_first(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    now = utcnow()
    resources, author = webapp.resources, scene.runner.id

    async def analysis(status: AnalysisStatus, age: timedelta, message: str = "") -> int:
        row = await make_analysis(
            resources,
            scene.obj_id,
            scene.service_id,
            author,
            [scene.group],
            status=status,
            status_message=message,
            created_at=now - age,
            last_activity=now - age,
        )
        return int(row.id)

    await analysis(AnalysisStatus.COMPLETED, timedelta(minutes=5))
    older = await analysis(AnalysisStatus.FAILURE, timedelta(minutes=30), "older failure")
    newer = await analysis(AnalysisStatus.TIMED_OUT, timedelta(minutes=2), "newer timeout")
    await analysis(AnalysisStatus.FAILURE, timedelta(days=3), "last week")

    page = await sign_in(browser, webapp, scene.reader)
    await page.goto(f"{webapp.url}/health?window=1h")
    await page.wait_for_selector("main[data-ready='1h']")
    await expect(page.locator("[data-count=total]")).to_have_text("3")
    await expect(page.locator("[data-count=failure]")).to_have_text("1")
    rows = page.locator("#failures tr[data-analysis]")
    assert [await r.get_attribute("data-analysis") for r in await rows.all()] == [
        str(newer),
        str(older),
    ]
    await webapp.shot(page, "health-laptop")

    await page.click("button[data-window='7d']")
    await page.wait_for_selector("main[data-ready='7d']")
    await expect(page.locator("[data-count=total]")).to_have_text("4")
    await page.select_option("#status-filter", "timed_out")
    await expect(page.locator("#failures tr[data-analysis]")).to_have_count(1)


async def test_the_summary_is_edited_rendered_safely_and_kept_in_the_history(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    page = await sign_in(browser, webapp, scene.runner)
    await page.goto(f"{webapp.url}/source/{scene.obj_id}")
    await page.wait_for_selector("main[data-ready=true]")

    for text in ("First take: **SN Ia** <img src=x onerror=alert(1)>", "Second take: *rising*"):
        await page.click("#summary-edit")
        await page.fill("#summary-text", text)
        await page.click("#summary-save")
        await expect(page.locator("#summary-dialog")).to_have_count(0)

    latest = page.locator("#summary-latest")
    await expect(latest.locator("em")).to_have_text("rising")
    await page.click("#summary details > summary")
    history = page.locator("#summary-history li")
    await expect(history).to_have_count(2)
    await expect(history.nth(1)).to_contain_text("<img src=x onerror=alert(1)>")  # as text
    assert await page.locator("#summary img").count() == 0
    await expect(history.nth(0)).to_contain_text(scene.runner.username)  # who, by name
    async with webapp.resources.sessions() as session:
        obj = await session.get(Obj, scene.obj_id)
        assert obj is not None and obj.summary == "Second take: *rising*"
    await webapp.shot(page, "source-summary")

    await page.click("#summary-edit")
    await page.click("#summary-clear")
    await expect(page.locator("#summary-dialog")).to_have_count(0)
    await expect(latest).to_have_text("No summary.")
    await expect(history).to_have_count(3)
    await expect(history.nth(0)).to_contain_text("(cleared)")
    async with webapp.resources.sessions() as session:
        obj = await session.get(Obj, scene.obj_id)
        assert obj is not None and obj.summary is None
        assert [e["summary"] for e in obj.summary_history][:2] == [None, "Second take: *rising*"]


async def test_run_summary_starts_the_users_summary_service_and_explains_the_key(
    webapp: WebApp, browser: Browser, scene: Scene
) -> None:
    summarizer = await make_service(
        webapp.resources,
        scene.service.url,
        [scene.group],
        display_name="LLM summary",
        is_summary=True,
        input_data_types=["comments"],
    )
    page = await sign_in(browser, webapp, scene.runner)
    await page.goto(f"{webapp.url}/source/{scene.obj_id}")
    await page.wait_for_selector("main[data-ready=true]")
    await expect(page.locator("#llm-key-state")).to_contain_text("no LLM API key stored")

    await page.click(".run-summary:has-text('Run LLM summary')")

    await expect(page.locator("#summary .notice")).to_contain_text("Summary analysis")
    async with webapp.resources.sessions() as session:
        query = select(ObjAnalysis.id).where(ObjAnalysis.analysis_service_id == summarizer)
        started = list(await session.scalars(query))
    assert len(started) == 1
    link = page.locator("#summary .notice a")
    assert await link.get_attribute("href") == f"/analysis/{started[0]}"
