"""Conventions every endpoint shares: envelopes, bad ids, paging and hostile JSON."""

from __future__ import annotations

import pytest

from tests.support.api import Accounts, ApiClient, unique

pytestmark = pytest.mark.usefixtures("backend")


async def test_nul_characters_are_refused_before_reaching_the_database(
    api: ApiClient, accounts: Accounts
) -> None:
    admin = await accounts.user(admin=True)
    reply = await api.post("/api/groups", admin, {"name": unique("g") + "\u0000"})
    assert reply.status == 400 and "NUL" in reply.message
    reply = await api.post("/api/groups", admin, {"name": "ok", "nested": {"k\u0000": 1}})
    assert (reply.status, reply.message.split(":")[0]) == (400, "Invalid nested")
    reply = await api.post("/api/groups", admin, {"name": "ok", "tags": ["a", "b\u0000"]})
    assert (reply.status, reply.message.split(":")[0]) == (400, "Invalid tags[1]")


async def test_out_of_range_ids_are_a_clear_400_not_a_server_error(
    api: ApiClient, accounts: Accounts
) -> None:
    admin = await accounts.user(admin=True)
    reply = await api.get(f"/api/groups/{2**40}", admin)
    assert (reply.status, reply.message) == (400, f"Invalid group_id: {2**40}")
    reply = await api.post("/api/user", admin, {"username": unique("u"), "group_ids": [2**40]})
    assert reply.status == 400


@pytest.mark.parametrize(
    "query", ["numPerPage=0", "pageNumber=0", "numPerPage=100000", "pageNumber=x"]
)
async def test_bad_paging_is_refused(api: ApiClient, accounts: Accounts, query: str) -> None:
    admin = await accounts.user(admin=True)
    reply = await api.get(f"/api/user?{query}", admin)
    assert reply.status == 400 and reply.body["status"] == "error"


async def test_error_envelope_shape(api: ApiClient) -> None:
    reply = await api.get("/api/internal/profile", None)
    assert set(reply.body) == {"status", "message", "data", "version"}
    assert reply.body["data"] == {}
