"""Signing in to the web app: token → session cookie, CSRF protection, sign out, the one-time
link, and API clients with `Authorization: token …` unchanged."""

from __future__ import annotations

import aiohttp
from playwright.async_api import Browser

from gateway.web_session import ONE_TIME_LINKS, OneTimeLinks
from tests.support.pipeline import make_obj
from tests.webapp.conftest import PHONE, WebApp, js_errors, new_page, sign_in


async def test_sign_in_shows_sources_and_sign_out_ends_the_session(
    webapp: WebApp, browser: Browser
) -> None:
    group = await webapp.accounts.group()
    user = await webapp.accounts.user(groups=(group,))
    obj_id = await make_obj(webapp.resources, [group], redshift=0.051)
    await make_obj(webapp.resources, [await webapp.accounts.group()])  # not shared with user

    page = await sign_in(browser, webapp, user)

    assert await page.text_content("#username") == user.username
    await page.wait_for_selector(f"tr[data-source='{obj_id}']")
    assert await page.locator("#sources tbody tr").count() == 1
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["skyhook_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert user.token not in session["value"]  # sealed, not the token in clear
    assert not await page.evaluate("document.cookie.includes('skyhook_session')")
    await webapp.shot(page, "sources-laptop")

    await page.click("#sign-out")
    await page.wait_for_url("**/login")
    await page.goto(f"{webapp.url}/")
    await page.wait_for_url("**/login?next=*")
    assert js_errors(page) == []


async def test_a_wrong_token_is_refused_with_a_message(webapp: WebApp, browser: Browser) -> None:
    page = await new_page(browser)
    await page.goto(f"{webapp.url}/login")
    await page.fill("#token", "not-a-token")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#login-error .error")
    assert await page.text_content("#login-error") == "Invalid token"
    assert "skyhook_session" not in {c["name"] for c in await page.context.cookies()}


async def test_cookie_requests_that_change_state_need_the_csrf_header(
    webapp: WebApp, browser: Browser
) -> None:
    group = await webapp.accounts.group()
    user = await webapp.accounts.user(groups=(group,), acls=("Upload Data",))
    obj_id = await make_obj(webapp.resources, [group])
    page = await sign_in(browser, webapp, user)
    path = f"/api/sources/{obj_id}/comments"
    post = """async ([path, headers]) => {
        const r = await fetch(path, {method: 'POST', headers, body: JSON.stringify({text: 'hi'})});
        return [r.status, (await r.json()).message || ''];
    }"""

    refused = await page.evaluate(post, [path, {"Content-Type": "application/json"}])
    csrf = await page.evaluate("document.cookie.match(/skyhook_csrf=([^;]+)/)[1]")
    accepted = await page.evaluate(post, [path, {"X-CSRF-Token": csrf}])

    assert refused == [403, "CSRF check failed: send the X-CSRF-Token header"]
    assert accepted[0] == 200
    async with aiohttp.ClientSession() as client:  # a script with its token: no CSRF needed
        headers = {"Authorization": f"token {user.token}"}
        async with client.post(f"{webapp.url}{path}", json={"text": "x"}, headers=headers) as r:
            assert r.status == 200
        async with client.get(f"{webapp.url}/api/sources/{obj_id}/comments") as r:
            assert r.status == 401  # neither a token nor a session


async def test_a_cross_origin_request_with_the_cookie_is_refused(
    webapp: WebApp, browser: Browser
) -> None:
    user = await webapp.accounts.user()
    page = await sign_in(browser, webapp, user)
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    headers = {
        "Cookie": f"skyhook_session={cookies['skyhook_session']}",
        "X-CSRF-Token": cookies["skyhook_csrf"],
        "Origin": "http://evil.example",
    }
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{webapp.url}/api/tokens", json={}, headers=headers) as r:
            assert r.status == 403
            assert (await r.json())["message"] == "CSRF check failed: cross-origin request"


async def test_the_one_time_sign_in_link_works_once(webapp: WebApp, browser: Browser) -> None:
    user = await webapp.accounts.user()
    links: OneTimeLinks = webapp.app[ONE_TIME_LINKS]
    link = f"{webapp.url}/login?code={links.issue(user.token)}"

    page = await new_page(browser, PHONE)
    await page.goto(link)
    await page.wait_for_selector("#username")
    assert await page.text_content("#username") == user.username
    assert "code=" not in page.url
    await webapp.shot(page, "sources-phone")

    again = await new_page(browser)
    await again.goto(link)
    await again.wait_for_selector("#login-error .error")
    assert "already used" in (await again.text_content("#login-error") or "")
