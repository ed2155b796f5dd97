"""The tests' one client of the HTTP API (for the gateway app in this process or a real server
at a URL), and quick account setup straight in the database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from shared.db.models import Group
from shared.domain.accounts import add_member, ensure_user, get_or_create_group, issue_token
from shared.runtime.resources import Resources
from skyhook.composition import platform_gateway_app


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


class HasToken(Protocol):
    @property
    def token(self) -> str: ...


@dataclass(frozen=True)
class TokenUser:
    """Whoever holds an API token (e.g. one made with ``skyhook token create``)."""

    token: str


def ok(reply: Reply) -> Any:
    """The reply's ``data``, asserting HTTP 200."""
    assert reply.status == 200, f"HTTP {reply.status}: {reply.body!r}"
    return reply.data


class ApiClient:
    """Calls the API as ``user`` (anyone with a ``token``; None: no Authorization header, or
    the client's own ``user`` when it has one).

    ``ApiClient(test_client)`` talks to an app served by aiohttp's TestClient;
    ``ApiClient.at(base_url)`` to a real server (close it with ``close()``)."""

    def __init__(self, client: TestClient | None = None, *, user: HasToken | None = None) -> None:
        self.client = client
        self.user = user
        self.base_url = ""
        self.http: aiohttp.ClientSession | None = None

    @classmethod
    def at(
        cls, base_url: str, user: HasToken | None = None, timeout: float = 300, **session: Any
    ) -> ApiClient:
        """A client of the server at ``base_url`` (``session``: aiohttp.ClientSession options,
        e.g. a connector allowing more concurrent connections)."""
        api = cls(user=user)
        api.base_url = base_url
        api.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), **session)
        return api

    @property
    def test_client(self) -> TestClient:
        """The TestClient this client talks through (for requests ``call`` does not make)."""
        assert self.client is not None, "this ApiClient talks to a real server, not a TestClient"
        return self.client

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(
        self,
        method: str,
        path: str,
        user: HasToken | None = None,
        json: Any = None,
        **kwargs: Any,
    ) -> Reply:
        headers = dict(kwargs.pop("headers", {}))
        user = user or self.user
        if user is not None:
            headers["Authorization"] = f"token {user.token}"
        if json is not None:
            kwargs["json"] = json
        if self.client is not None:
            request = self.client.request(method, path, headers=headers, **kwargs)
        else:
            assert self.http is not None, "ApiClient needs a TestClient or a base URL"
            request = self.http.request(method, self.base_url + path, headers=headers, **kwargs)
        async with request as response:
            if response.content_type == "application/json":
                body = await response.json()
            else:
                body = await response.read()
            return Reply(response.status, body)

    async def ok(
        self, method: str, path: str, user: HasToken | None = None, json: Any = None, **kw: Any
    ) -> Any:
        """The reply's ``data``, asserting HTTP 200 (the message names the request)."""
        reply = await self.call(method, path, user, json, **kw)
        assert reply.status == 200, f"{method} {path}: HTTP {reply.status}: {reply.body!r}"
        return reply.data

    async def get(self, path: str, user: HasToken | None, **kwargs: Any) -> Reply:
        return await self.call("GET", path, user, **kwargs)

    async def post(self, path: str, user: HasToken | None, json: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, user, json, **kw)

    async def patch(self, path: str, user: HasToken | None, json: Any = None, **kw: Any) -> Reply:
        return await self.call("PATCH", path, user, json, **kw)

    async def delete(self, path: str, user: HasToken | None, **kwargs: Any) -> Reply:
        return await self.call("DELETE", path, user, **kwargs)


@asynccontextmanager
async def api_client(resources: Resources) -> AsyncIterator[ApiClient]:
    client = TestClient(TestServer(platform_gateway_app(resources)))
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
