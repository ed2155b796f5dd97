"""The gateway's route table (gateway/routes.py) decides who may call each route; requests no
route matches answer as they always have: an unknown path under /api/ needs a token first."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_gateway_app
from shared.runtime.resources import Resources
from tests.support.api import Accounts, ApiClient

pytestmark = pytest.mark.usefixtures("backend")


async def test_requests_no_route_matches_are_answered_as_the_routes_near_them(
    api: ApiClient,
) -> None:
    cases = [
        ("GET", "/api/no_such_resource", 401),
        ("PUT", "/api/groups", 401),  # authenticated before the 405
        ("GET", "/api/webhook/no_such_resource", 404),  # under the public webhook route
        ("GET", "/no_such_page", 404),
    ]
    for method, path, status in cases:
        reply = await api.call(method, path)
        assert reply.status == status, (method, path, reply.body)


async def test_another_method_on_a_public_route_is_a_405_without_a_token(api: ApiClient) -> None:
    cases = [
        ("/api/webhook/obj_analysis/some-token", {"POST"}),
        ("/api/session", {"POST", "DELETE"}),
        ("/api/openapi.json", {"GET"}),
    ]
    assert api.client is not None
    for path, allowed in cases:
        async with api.client.request("PUT", path) as response:
            assert response.status == 405, path
            assert set(response.headers["Allow"].split(",")) == allowed


async def test_a_route_gated_on_an_acl_or_admin_refuses_before_reading_the_request(
    api: ApiClient, accounts: Accounts
) -> None:
    reader = await accounts.user()
    reply = await api.call("POST", "/api/sources", reader, data=b"not json")
    assert (reply.status, reply.message) == (401, "This endpoint requires the ACL: Upload Data")
    reply = await api.delete("/api/sources/not%00an-id", reader)
    assert (reply.status, reply.message) == (401, "This endpoint requires a system admin")


async def test_the_gateway_serves_the_webhook_route_only_when_mounted(
    resources: Resources,
) -> None:
    client = TestClient(TestServer(create_gateway_app(resources)))
    await client.start_server()
    try:
        async with client.post("/api/webhook/obj_analysis/some-token", json={}) as response:
            assert response.status == 401  # an unknown /api path, like any other
        async with client.get("/api/openapi.json") as response:
            paths = (await response.json())["paths"]
        assert not [path for path in paths if path.startswith("/api/webhook/")]
    finally:
        await client.close()
