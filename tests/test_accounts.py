"""Users, groups and tokens through the API, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from shared.db.models import Token
from shared.runtime.resources import Resources
from tests.support.api import Accounts, ApiClient, unique

pytestmark = pytest.mark.usefixtures("backend")


async def test_requests_without_a_valid_token_are_refused(api: ApiClient) -> None:
    reply = await api.get("/api/internal/profile", None)
    assert reply.status == 401
    assert reply.body["status"] == "error"
    reply = await api.get("/api/internal/profile", None, headers={"Authorization": "token nope"})
    assert (reply.status, reply.message) == (401, "Invalid token")
    reply = await api.get("/api/internal/profile", None, headers={"Authorization": "Bearer x"})
    assert reply.status == 401 and "expected form" in reply.message


async def test_requests_arriving_together_each_act_as_their_own_caller(
    api: ApiClient, accounts: Accounts
) -> None:
    """Tokens are looked up in batches: concurrent callers never get each other's identity."""
    astro, other = await accounts.group(), await accounts.group()
    alice = await accounts.user(acls=("Run Analyses",), groups=(astro,))
    bob = await accounts.user(groups=(astro, other), group_admin_of=(other,))
    nobody = await accounts.user()
    callers = [alice, bob, nobody, None] * 8
    bad = {"headers": {"Authorization": "token not-a-token"}}
    replies = await asyncio.gather(
        *(api.get("/api/internal/profile", user, **({} if user else bad)) for user in callers)
    )
    seen = [(r.status, r.data["username"] if r.status == 200 else r.message) for r in replies]
    expected = [(200, u.username) if u else (401, "Invalid token") for u in callers]
    assert seen == expected
    groups = {r.data["username"]: r.data["groups"] for r in replies if r.status == 200}
    assert groups[alice.username] == [{"id": astro.id, "admin": False}]
    assert sorted(g["id"] for g in groups[bob.username]) == sorted([astro.id, other.id])
    assert groups[nobody.username] == []


async def test_admin_creates_user_group_membership_and_token(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    admin = await accounts.user(admin=True)
    group_reply = await api.post("/api/groups", admin, {"name": unique("astro")})
    assert group_reply.status == 200, group_reply.body
    group_id = group_reply.data["id"]

    user_reply = await api.post(
        "/api/user", admin, {"username": unique("bob"), "acls": ["Run Analyses"]}
    )
    assert user_reply.status == 200, user_reply.body
    user_id = user_reply.data["id"]

    added = await api.post(f"/api/groups/{group_id}/users", admin, {"userID": user_id})
    assert added.status == 200, added.body

    token_reply = await api.post("/api/tokens", admin, {"name": "bob's", "user_id": user_id})
    assert token_reply.status == 200
    secret = token_reply.data["token"]

    # The new token works, and the user sees its group membership and ACL.
    from tests.support.api import TestUser

    bob = TestUser(user_id, "bob", secret)
    profile = await api.get("/api/internal/profile", bob)
    assert profile.data["acls"] == ["Run Analyses"]
    assert profile.data["groups"] == [{"id": group_id, "admin": False}]

    # The secret is stored only as a hash and never listed again.
    async with resources.sessions() as session:
        stored = (await session.scalars(select(Token).where(Token.user_id == user_id))).all()
    assert stored and all(secret not in (t.token_hash, t.name) for t in stored)
    listed = await api.get("/api/tokens", bob)
    assert listed.status == 200 and secret not in str(listed.body)


async def test_non_admins_cannot_create_users_or_groups(api: ApiClient, accounts: Accounts) -> None:
    user = await accounts.user(acls=("Run Analyses",))
    assert (await api.post("/api/user", user, {"username": unique("x")})).status == 401
    assert (await api.post("/api/groups", user, {"name": unique("g")})).status == 401


async def test_group_admin_manages_members_but_not_other_groups(
    api: ApiClient, accounts: Accounts
) -> None:
    mine, theirs = await accounts.group(), await accounts.group()
    boss = await accounts.user(group_admin_of=(mine,))
    newcomer = await accounts.user()
    ok = await api.post(f"/api/groups/{mine.id}/users", boss, {"username": newcomer.username})
    assert ok.status == 200, ok.body
    refused = await api.post(f"/api/groups/{theirs.id}/users", boss, {"userID": newcomer.id})
    assert refused.status == 403
    members = await api.get(f"/api/groups/{mine.id}", boss)
    assert {m["id"] for m in members.data["users"]} == {boss.id, newcomer.id}
    removed = await api.delete(f"/api/groups/{mine.id}/users/{newcomer.id}", boss)
    assert removed.status == 200
    hidden = await api.get(f"/api/groups/{mine.id}", newcomer)
    assert hidden.status == 404


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/user", {"username": ""}, "`username` is required"),
        ("/api/user", {"username": "ok", "acls": ["Fly"]}, "Invalid ACL"),
        ("/api/user", {"username": "ok", "is_admin": "yes"}, "Invalid is_admin"),
        ("/api/user", {"username": "ok", "group_ids": [999999]}, "Cannot find one or more groups"),
        ("/api/groups", {"name": 5}, "`name` is required"),
        ("/api/groups", {"name": "g", "group_admins": [999999]}, "Cannot find one or more users"),
    ],
)
async def test_bad_account_input_is_refused_and_changes_nothing(
    api: ApiClient, accounts: Accounts, path: str, body: dict, message: str
) -> None:
    admin = await accounts.user(admin=True)
    before = (await api.get("/api/user?numPerPage=1000", admin)).data["totalMatches"]
    reply = await api.post(path, admin, body)
    assert reply.status == 400 and message in reply.message, reply.body
    after = (await api.get("/api/user?numPerPage=1000", admin)).data["totalMatches"]
    assert before == after


async def test_malformed_json_and_duplicates(api: ApiClient, accounts: Accounts) -> None:
    admin = await accounts.user(admin=True)
    reply = await api.post(
        "/api/groups", admin, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert reply.status == 400 and reply.message.startswith("Error parsing JSON")
    name = unique("dup")
    assert (await api.post("/api/groups", admin, {"name": name})).status == 200
    again = await api.post("/api/groups", admin, {"name": name})
    assert again.status == 400 and "already exists" in again.message


async def test_tokens_can_be_revoked(api: ApiClient, accounts: Accounts) -> None:
    user = await accounts.user()
    created = await api.post("/api/tokens", user, {"name": "second"})
    from tests.support.api import TestUser

    second = TestUser(user.id, user.username, created.data["token"])
    assert (await api.get("/api/internal/profile", second)).status == 200
    assert (await api.delete(f"/api/tokens/{created.data['id']}", user)).status == 200
    assert (await api.get("/api/internal/profile", second)).status == 401
    other = await accounts.user()
    assert (await api.post("/api/tokens", user, {"user_id": other.id})).status == 403
