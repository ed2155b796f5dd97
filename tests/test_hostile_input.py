"""Hostile input is a clear 4xx on every endpoint, never a 500, and the server keeps answering:
deep nesting, lone surrogates, non-finite numbers, huge page numbers and ids, an unreachable
database (503 with Retry-After), and a duplicate service name from another group."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from gateway.openapi import openapi_path
from gateway.routes import gateway_routes
from gateway.schemas import ROUTE_SCHEMAS
from service_kit.protocol import RequestError, read_request, refused
from shared.runtime.resources import Resources, open_resources
from shared.runtime.settings import Settings, load_settings
from tests.conftest import PG_ADMIN_URL
from tests.support.api import Accounts, ApiClient, TestUser, api_client, unique
from tests.support.pipeline import (
    add_annotation,
    make_analysis,
    make_instrument,
    make_obj,
    make_service,
)
from tests.support.ports import free_port
from webhook_receiver.routes import WEBHOOK_ROUTES

pytestmark = pytest.mark.usefixtures("backend")

DEEP = b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}"
LONE_SURROGATE = b'{"name": "x\\ud800y", "text": "x\\ud800y", "id": "x\\ud800y"}'
SURROGATE_KEY = b'{"\\udc00": 1}'
HUGE_NUMBER = b'{"data": {"period": 1e400}, "mag": 1e400, "timeout": -1e999}'
HOSTILE_BODIES = {
    "deep": (DEEP, "nested more than 64 levels deep"),
    "lone surrogate": (LONE_SURROGATE, "lone surrogates"),
    "surrogate key": (SURROGATE_KEY, "lone surrogates"),
    "1e400": (HUGE_NUMBER, "too large (not a finite float)"),
}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Summary search configured, so that its endpoint reads its body (no LLM is ever called:
    every body sent to it here is refused first)."""
    return settings.model_copy(
        update={
            "llm_base_url": "http://127.0.0.1:9/v1",
            "llm_api_key": SecretStr("sk-unused"),
            "embeddings_model": "unused",
        }
    )


@dataclass
class Scene:
    admin: TestUser
    member: TestUser
    group_id: int
    obj_id: str
    service_id: int
    analysis_id: int
    token: str

    def path_values(self) -> dict[str, str]:
        return {
            "user_id": str(self.member.id),
            "group_id": str(self.group_id),
            "analysis_service_id": str(self.service_id),
            "obj_id": self.obj_id,
            "analysis_id": str(self.analysis_id),
            "default_analysis_id": "1",  # the body is refused before the id is looked up
            "resource_type": "obj",
            "token:[^/]*": self.token,
        }


@pytest.fixture
async def scene(resources: Resources, accounts: Accounts) -> Scene:
    group = await accounts.group()
    admin = await accounts.user(admin=True, groups=(group,))
    member = await accounts.user(acls=("Run Analyses", "Upload Data"), groups=(group,))
    obj_id = await make_obj(resources, [group])
    service_id = await make_service(resources, "http://127.0.0.1:9/analysis", [group])
    analysis = await make_analysis(resources, obj_id, service_id, member.id, [group])
    token = resources.callback_tokens.token_for(analysis.unique_id)
    return Scene(admin, member, group.id, obj_id, service_id, analysis.id, token)


def concrete(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, path
    return path


# The routes the gateway serves as skyhook runs it: its table and the mounted webhook route.
SERVED_ROUTES = [*gateway_routes(), *WEBHOOK_ROUTES]
BODY_ROUTES = [
    r for r in SERVED_ROUTES if ROUTE_SCHEMAS[r.method, openapi_path(r.path)].request is not None
]


async def assert_still_answering(api: ApiClient, user: TestUser) -> None:
    reply = await api.get("/api/sources", user)
    assert reply.status == 200, reply.body


@pytest.mark.parametrize("hostile", sorted(HOSTILE_BODIES))
async def test_every_json_body_endpoint_refuses_hostile_json_with_a_400(
    api: ApiClient, scene: Scene, hostile: str
) -> None:
    raw, expected = HOSTILE_BODIES[hostile]
    assert BODY_ROUTES and any("webhook" in r.path for r in BODY_ROUTES)
    for route in BODY_ROUTES:
        path = concrete(route.path, scene.path_values())
        reply = await api.call(route.method, path, scene.admin, data=raw, headers=JSON)
        assert reply.status == 400, (route.method, route.path, reply.status, reply.body)
        assert expected in reply.message, (route.path, reply.message)
        await assert_still_answering(api, scene.admin)


async def test_a_deep_json_string_inside_a_callback_result_is_refused(
    api: ApiClient, scene: Scene
) -> None:
    nested = "[" * 3000 + "]" * 3000
    body = {"status": "success", "analysis": {"results": {"format": "json", "data": nested}}}
    reply = await api.post(f"/api/webhook/obj_analysis/{scene.token}", None, body)
    assert reply.status == 400, reply.body
    assert "nested" in reply.message
    await assert_still_answering(api, scene.admin)


async def test_a_huge_number_in_annotation_data_is_refused_and_annotations_stay_readable(
    api: ApiClient, scene: Scene, resources: Resources
) -> None:
    group = [type("G", (), {"id": scene.group_id})()]
    await add_annotation(resources, scene.obj_id, group, origin="earlier")
    path = f"/api/sources/{scene.obj_id}/annotations"
    raw = b'{"origin": "hostile", "data": {"period": 1e400}}'
    reply = await api.call("POST", path, scene.member, data=raw, headers=JSON)
    assert reply.status == 400 and "1e400" in reply.message
    listed = await api.get(path, scene.member)
    assert listed.status == 200
    assert [a["origin"] for a in listed.data] == ["earlier"]


async def test_nul_in_query_parameters_is_refused(api: ApiClient, scene: Scene) -> None:
    for path in ("/api/sources?pageNumber=1&x=%00", "/api/obj/analysis?objID=a%00b"):
        reply = await api.get(path, scene.admin)
        assert reply.status == 400, (path, reply.body)
        assert (
            reply.message == "Invalid query parameters: must not contain NUL (\\u0000) characters"
        )
    await assert_still_answering(api, scene.admin)


async def test_an_unsupported_method_is_a_405_that_lists_the_allowed_ones(
    api: ApiClient, scene: Scene
) -> None:
    reply = await api.call("TRACE", "/api/groups", scene.admin)
    assert reply.status == 405 and reply.body["status"] == "error"
    headers = {"Authorization": f"token {scene.admin.token}"}
    async with api.test_client.request("PUT", "/api/groups", headers=headers) as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == {"GET", "POST"}


PAGED = [r.path for r in SERVED_ROUTES if r.method == "GET" and "pageNumber" in r.query]


async def test_a_page_number_beyond_any_integer_is_a_400(api: ApiClient, scene: Scene) -> None:
    assert len(PAGED) >= 5
    for route_path in PAGED:
        path = concrete(route_path, scene.path_values())
        reply = await api.get(f"{path}?pageNumber=99999999999999999999&numPerPage=10", scene.admin)
        assert reply.status == 400, (path, reply.body)
        assert reply.message.startswith("Invalid pageNumber"), reply.message
    reply = await api.get("/api/sources?pageNumber=2147483647", scene.admin)
    assert reply.status == 200 and reply.data["sources"] == []


async def test_ids_beyond_the_integer_columns_are_refused(
    api: ApiClient, scene: Scene, resources: Resources
) -> None:
    huge = 2**40
    reply = await api.get(f"/api/obj/analysis?analysisServiceID={huge}", scene.admin)
    assert (reply.status, reply.message) == (400, f"Invalid analysisServiceID: {huge}")
    reply = await api.get(f"/api/obj/analysis?analysisServiceID={10**30}", scene.admin)
    assert reply.status == 400
    instrument_id = await make_instrument(resources)
    path = f"/api/obj/{scene.obj_id}/analysis/{scene.service_id}"
    for instruments in ([huge], [str(huge)], [instrument_id, 2**31]):
        filters = {"photometry": {"instruments": instruments}}
        reply = await api.post(path, scene.member, {"input_filters": filters})
        assert reply.status == 400, reply.body
        assert reply.message.startswith("Invalid input_filters: photometry.instruments")
    reply = await api.post(
        path, scene.member, {"input_filters": {"photometry": {"instruments": [instrument_id]}}}
    )
    assert reply.status == 200, reply.body


async def test_non_finite_numbers_are_refused_in_bodies_that_are_not_stored(
    api: ApiClient, scene: Scene
) -> None:
    raw = b'{"q": "a supernova", "k": 1e999}'
    reply = await api.call("POST", "/api/summary_query", scene.admin, data=raw, headers=JSON)
    assert reply.status == 400 and "not a finite float" in reply.message


# --- a database that cannot be reached ---------------------------------------------------------


@asynccontextmanager
async def gateway_on(database_url: str, tmp_path: Path) -> AsyncIterator[ApiClient]:
    settings = load_settings(
        None,
        database_url=database_url,
        amqp_url="memory://",
        artifact_dir=tmp_path / "artifacts",
        public_url="http://127.0.0.1:5000",
        secret_key="test-secret-key",
    )
    async with open_resources(settings) as resources, api_client(resources) as client:
        yield client


def closed_port() -> int:
    return free_port()  # nothing listens on it


async def _dropped_database() -> str:
    name = f"skyhook_dropped_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN_URL.replace("+asyncpg", ""))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.execute(f'DROP DATABASE "{name}"')
    finally:
        await admin.close()
    return PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + (
        f"/{name}"
    )


async def unreachable_urls(backend: str, tmp_path: Path) -> list[str]:
    if backend == "sqlite":
        directory = tmp_path / "a-directory-not-a-database"
        directory.mkdir()
        return [f"sqlite+aiosqlite:///{directory}"]
    return [
        f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/skyhook",
        await _dropped_database(),
    ]


async def test_an_unreachable_database_answers_503_with_retry_after(
    backend: str, tmp_path: Path, settings: Settings
) -> None:
    for url in await unreachable_urls(backend, tmp_path):
        async with gateway_on(url, tmp_path) as client:
            reply = await client.get("/api/sources", None, headers={"Authorization": "token x"})
            assert reply.status == 503, (url, reply.body)
            assert reply.message == "Database unavailable; try again later"
            async with client.test_client.get(
                "/api/sources", headers={"Authorization": "token x"}
            ) as response:
                assert response.headers["Retry-After"] == "10"
            hook = await client.post(
                "/api/webhook/obj_analysis/some-token", None, {"status": "success"}
            )
            assert hook.status == 503 and hook.message == reply.message
            ready = await client.get("/readyz", None)
            assert ready.status == 503


# --- duplicate service names -------------------------------------------------------------------


def service_body(name: str, group_id: int) -> dict[str, Any]:
    return {
        "name": name,
        "display_name": "fitter",
        "url": "http://127.0.0.1:6901/analysis",
        "authentication_type": "none",
        "analysis_type": "lightcurve_fitting",
        "input_data_types": ["photometry"],
        "group_ids": [group_id],
    }


async def test_a_duplicate_name_tells_nothing_of_another_groups_service(
    api: ApiClient, accounts: Accounts
) -> None:
    ours, theirs = await accounts.group(), await accounts.group()
    manage = ("Manage Analysis Services",)
    us = await accounts.user(acls=manage, groups=(ours,))
    them = await accounts.user(acls=manage, groups=(theirs,))
    name = unique("secret-project")
    created = await api.post("/api/analysis_service", them, service_body(name, theirs.id))
    assert created.status == 200, created.body

    mine = await api.post("/api/analysis_service", us, service_body(unique("mine"), ours.id))
    for reply in (
        await api.post("/api/analysis_service", us, service_body(name, ours.id)),
        await api.patch(f"/api/analysis_service/{mine.data['id']}", us, {"name": name}),
    ):
        assert reply.status == 400
        assert reply.message == "Invalid name: this name cannot be used; choose another name"
        assert name not in reply.message and "exists" not in reply.message

    # Within the group that holds it, SkyPortal's text.
    again = await api.post("/api/analysis_service", them, service_body(name, theirs.id))
    assert again.status == 400
    assert again.message.startswith("Analysis Service with that name already exists")


async def test_skyhooks_own_services_refuse_deep_json_with_a_400() -> None:
    """sn_fitter and the summarizer read requests with ``read_request``."""

    async def handler(request: web.Request) -> web.Response:
        try:
            await read_request(request)
        except RequestError as exc:
            return refused(str(exc))
        return web.json_response({"status": "pending"})

    app = web.Application()
    app.router.add_post("/", handler)
    async with TestClient(TestServer(app)) as client:
        for raw in (DEEP, b"[" * 100_000):
            async with client.post("/", data=raw) as response:
                assert response.status == 400
                assert (await response.json())["message"] == "Invalid JSON"
