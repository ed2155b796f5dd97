"""A thin client for the gateway under test, and quick account setup straight in the database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_gateway_app
from shared.accounts import add_member, ensure_user, get_or_create_group, issue_token
from shared.db.models import Group
from shared.resources import Resources


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Reply:
    status: int
    body: Any

    @property
    def data(self) -> Any:
        return self.body["data"]

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


@dataclass(frozen=True)
class TestUser:
    __test__ = False  # not a pytest test class

    id: int
    username: str
    token: str


class ApiClient:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def call(
        self, method: str, path: str, user: TestUser | None, json: Any = None, **kwargs: Any
    ) -> Reply:
        headers = dict(kwargs.pop("headers", {}))
        if user is not None:
            headers["Authorization"] = f"token {user.token}"
        if json is not None:
            kwargs["json"] = json
        async with self.client.request(method, path, headers=headers, **kwargs) as response:
            if response.content_type == "application/json":
                body = await response.json()
            else:
                body = await response.read()
            return Reply(response.status, body)

    async def get(self, path: str, user: TestUser | None, **kwargs: Any) -> Reply:
        return await self.call("GET", path, user, **kwargs)

    async def post(self, path: str, user: TestUser | None, json: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, user, json, **kw)

    async def patch(self, path: str, user: TestUser | None, json: Any = None, **kw: Any) -> Reply:
        return await self.call("PATCH", path, user, json, **kw)

    async def delete(self, path: str, user: TestUser | None, **kwargs: Any) -> Reply:
        return await self.call("DELETE", path, user, **kwargs)


@asynccontextmanager
async def api_client(resources: Resources) -> AsyncIterator[ApiClient]:
    client = TestClient(TestServer(create_gateway_app(resources)))
    await client.start_server()
    try:
        yield ApiClient(client)
    finally:
        await client.close()


class Accounts:
    """Creates users and groups directly in the database (each with a unique name)."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    async def group(self, name: str | None = None) -> Group:
        async with self.resources.sessions.begin() as session:
            return await get_or_create_group(session, name or unique("group"))

    async def user(
        self,
        *,
        admin: bool = False,
        acls: tuple[str, ...] = (),
        groups: tuple[Group, ...] = (),
        group_admin_of: tuple[Group, ...] = (),
        name: str | None = None,
    ) -> TestUser:
        async with self.resources.sessions.begin() as session:
            user = await ensure_user(session, name or unique("user"), admin=admin, acls=acls)
            for group in groups:
                await add_member(session, group, user)
            for group in group_admin_of:
                await add_member(session, group, user, admin=True)
            _, secret = await issue_token(session, user, "test")
            return TestUser(user.id, user.username, secret)
