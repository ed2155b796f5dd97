"""The API behind the web app, without a browser: session cookies (forged, expired, revoked),
the live stream's visibility filter, the source overview and analysis health."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
from sqlalchemy import delete, update

from gateway.web_session import SESSION_COOKIE, WebSession, seal
from shared.bus import Envelope
from shared.db.models import ObjAnalysis, Token
from shared.runtime.resources import Resources
from tests.support.analyses import insert_analysis, make_obj, make_service
from tests.support.api import Accounts, ApiClient


async def signed_in_cookie(api: ApiClient, token: str) -> str:
    async with api.test_client.post("/api/session", json={"token": token}) as response:
        assert response.status == 200
        cookie = response.cookies[SESSION_COOKIE].value
    api.test_client.session.cookie_jar.clear()  # each check below sends its own cookie
    return cookie


async def profile_status(api: ApiClient, cookie: str) -> int:
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
    async with api.test_client.get("/api/internal/profile", headers=headers) as response:
        return response.status


async def test_forged_expired_and_revoked_sessions_are_refused(
    resources: Resources, api: ApiClient, accounts: Accounts
) -> None:
    user = await accounts.user()
    cookie = await signed_in_cookie(api, user.token)
    assert await profile_status(api, cookie) == 200

    assert await profile_status(api, cookie[:-4] + "AAAA") == 401  # tampered
    expired = WebSession(user.token, "csrf", time.time() - 1)
    assert await profile_status(api, seal(resources.secret_box, expired)) == 401
    async with resources.sessions.begin() as session:
        await session.execute(delete(Token).where(Token.user_id == user.id))
    assert await profile_status(api, cookie) == 401  # revoking the token ends the session


async def test_sign_in_needs_a_token(api: ApiClient) -> None:
    reply = await api.post("/api/session", None, {"token": 42})
    assert reply.status == 400
    reply = await api.post("/api/session", None, {"code": "never-issued"})
    assert (reply.status, reply.message) == (
        401,
        "This sign-in link was already used or has expired",
    )


async def read_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict]]:
    name = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])


async def fail(resources: Resources, analysis: ObjAnalysis, message: str) -> None:
    async with resources.sessions.begin() as session:
        await session.execute(
            update(ObjAnalysis)
            .where(ObjAnalysis.id == analysis.id)
            .values(status="failure", status_message=message)
        )
    payload = {
        "analysis_id": analysis.id,
        "obj_id": analysis.obj_id,
        "analysis_service_id": analysis.analysis_service_id,
        "status": "failure",
    }
    await resources.bus.publish([Envelope(str(uuid.uuid4()), "analysis.completed", payload)])


async def test_the_live_stream_refuses_bad_parameters_and_strangers_before_it_opens(
    api: ApiClient, accounts: Accounts
) -> None:
    me = await accounts.user()
    for value in ("abc", "-1", "99999999999999999999", "1.5"):
        reply = await api.get(f"/api/live/analyses?analysisServiceID={value}", me)
        assert (reply.status, reply.message) == (400, f"Invalid analysisServiceID: {value}")
    stranger = await api.get("/api/live/analyses", None)
    assert stranger.status == 401


async def test_live_events_reach_only_users_who_may_read_the_analysis(
    resources: Resources, api: ApiClient, accounts: Accounts
) -> None:
    mine, theirs = await accounts.group(), await accounts.group()
    me = await accounts.user(groups=(mine,))
    other = await accounts.user(groups=(theirs,))
    service = (await make_service(resources, [mine, theirs])).id
    hidden = await insert_analysis(
        resources,
        obj_id=await make_obj(resources, [mine]),
        service_id=service,
        author_id=me.id,
        status="pending",
        groups=[mine],
    )
    shared = await insert_analysis(
        resources,
        obj_id=await make_obj(resources, [theirs]),
        service_id=service,
        author_id=other.id,
        status="pending",
        groups=[theirs],
    )
    headers = {"Authorization": f"token {other.token}"}
    async with api.test_client.get("/api/live/analyses", headers=headers) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = read_events(response)
        assert (await anext(events))[0] == "ready"

        await fail(resources, hidden, "not for the other group")
        await fail(resources, shared, "theirs failed")

        name, data = await anext(events)  # the hidden one was skipped: events arrive in order
        assert (name, data["id"], data["status"]) == ("analysis", shared.id, "failure")
        assert data["status_message"] == "theirs failed"


async def test_a_stream_opened_after_the_last_one_closed_still_hears_events(
    resources: Resources, api: ApiClient, accounts: Accounts
) -> None:
    """The gateway listens to the bus only while a stream is open; it listens again for the
    next one."""
    group = await accounts.group()
    me = await accounts.user(groups=(group,))
    service = (await make_service(resources, [group])).id
    obj_id = await make_obj(resources, [group])
    headers = {"Authorization": f"token {me.token}"}
    for attempt in range(2):
        analysis = await insert_analysis(
            resources,
            obj_id=obj_id,
            service_id=service,
            author_id=me.id,
            status="pending",
            groups=[group],
        )
        async with api.test_client.get("/api/live/analyses", headers=headers) as response:
            events = read_events(response)
            assert (await anext(events))[0] == "ready"
            await fail(resources, analysis, f"attempt {attempt}")
            name, data = await anext(events)
            assert (name, data["id"], data["status_message"]) == (
                "analysis",
                analysis.id,
                f"attempt {attempt}",
            )


async def test_source_overview_searches_and_counts_readable_analyses(
    resources: Resources, api: ApiClient, accounts: Accounts
) -> None:
    group = await accounts.group()
    me = await accounts.user(groups=(group,))
    tag = uuid.uuid4().hex[:6]
    found = await make_obj(resources, [group], obj_id=f"ZTF{tag}x")
    await make_obj(resources, [group], obj_id=f"ZTFother{uuid.uuid4().hex[:6]}")
    service = (await make_service(resources, [group])).id
    for status in ("completed", "completed", "failure"):
        await insert_analysis(
            resources,
            obj_id=found,
            service_id=service,
            author_id=me.id,
            status=status,
            groups=[group],
        )

    reply = await api.get(f"/api/sources_overview?q={tag.upper()}", me)

    assert reply.status == 200
    assert [s["id"] for s in reply.data["sources"]] == [found]
    assert reply.data["sources"][0]["analyses_by_status"] == {"completed": 2, "failure": 1}
    assert reply.data["totalMatches"] == 1


async def test_health_refuses_an_unknown_window_or_status(
    api: ApiClient, accounts: Accounts
) -> None:
    me = await accounts.user()
    reply = await api.get("/api/analysis_health?window=2h", me)
    assert (reply.status, reply.message) == (400, "Invalid window: 2h (one of 1h, 24h, 7d, 30d)")
    reply = await api.get("/api/analysis_health?status=lost", me)
    assert (reply.status, reply.message) == (400, "Invalid status: lost")
