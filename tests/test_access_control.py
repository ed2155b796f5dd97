"""Group-based access to sources and their data: who sees what, who may write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from shared.db.models import Group
from shared.runtime.resources import Resources
from tests.support.api import Accounts, ApiClient
from tests.support.api import TestUser as Caller
from tests.test_sources import _analysis, new_instrument, new_source, table_counts

pytestmark = pytest.mark.usefixtures("backend")

UPLOAD = ("Upload Data",)
KINDS = ("photometry", "spectra", "comments", "classifications", "annotations")


@dataclass
class World:
    """Group A (alice), group B (bob); carol belongs to both and shares one source with both."""

    group_a: Group
    group_b: Group
    alice: Caller
    bob: Caller
    carol: Caller
    admin: Caller
    source_a: str
    source_b: str
    shared: str
    instrument_id: int
    # kind -> group name -> ids of the rows carol posted on the shared source for that group
    rows: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def _data_posts(world: World, obj_id: str, tag: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, path, body) posting one row of every kind, tagged so reads can tell them apart."""
    return [
        (
            "photometry",
            "/api/photometry",
            {
                "obj_id": obj_id,
                "instrument_id": world.instrument_id,
                "mjd": 59000.0,
                "filter": "ztfg",
                "mag": 19.0,
                "magerr": 0.05,
                "limiting_mag": 21.0,
                "magsys": "ab",
                "origin": tag,
            },
        ),
        (
            "spectra",
            "/api/spectrum",
            {
                "obj_id": obj_id,
                "instrument_id": world.instrument_id,
                "observed_at": "2021-01-01T00:00:00",
                "wavelengths": [5000.0],
                "fluxes": [1.0],
                "origin": tag,
            },
        ),
        ("comments", f"/api/sources/{obj_id}/comments", {"text": tag}),
        ("classifications", "/api/classification", {"obj_id": obj_id, "classification": tag}),
        ("annotations", f"/api/sources/{obj_id}/annotations", {"origin": tag, "data": {}}),
    ]


def _row_id(kind: str, data: dict[str, Any]) -> int:
    key = {"comments": "comment_id", "classifications": "classification_id"}.get(kind)
    key = {"annotations": "annotation_id", "photometry": "ids"}.get(kind, key or "id")
    value = data[key]
    return int(value[0] if isinstance(value, list) else value)


@pytest.fixture
async def world(api: ApiClient, accounts: Accounts) -> World:
    group_a, group_b = await accounts.group(), await accounts.group()
    alice = await accounts.user(acls=UPLOAD, groups=(group_a,))
    bob = await accounts.user(acls=UPLOAD, groups=(group_b,))
    carol = await accounts.user(acls=UPLOAD, groups=(group_a, group_b))
    admin = await accounts.user(admin=True)
    world = World(
        group_a,
        group_b,
        alice,
        bob,
        carol,
        admin,
        source_a=await new_source(api, alice, ra=11.0, dec=12.0),
        source_b=await new_source(api, bob, ra=123.456, dec=-65.4321, redshift=0.0421),
        shared=await new_source(api, carol, group_ids=[group_a.id, group_b.id]),
        instrument_id=await new_instrument(api, carol),
    )
    for group in (group_a, group_b):
        for kind, path, body in _data_posts(world, world.shared, f"for-{group.name}"):
            reply = await api.post(path, carol, {**body, "group_ids": [group.id]})
            assert reply.status == 200, (kind, reply.body)
            world.rows.setdefault(kind, {}).setdefault(group.name, []).append(
                _row_id(kind, reply.data)
            )
    return world


async def _read(api: ApiClient, user: Caller, obj_id: str, kind: str) -> list[dict[str, Any]]:
    reply = await api.get(f"/api/sources/{obj_id}/{kind}", user)
    assert reply.status == 200, reply.body
    data = reply.data
    return list(data[kind] if isinstance(data, dict) else data)


async def test_source_lists_and_reads_follow_groups(api: ApiClient, world: World) -> None:
    cases = [
        (world.alice, world.source_a, world.source_b),
        (world.bob, world.source_b, world.source_a),
    ]
    for user, own, other in cases:
        listed = await api.get("/api/sources", user)
        assert {s["id"] for s in listed.data["sources"]} == {own, world.shared}
        assert listed.data["totalMatches"] == 2
        assert (await api.get(f"/api/sources/{own}", user)).status == 200
        hidden = await api.get(f"/api/sources/{other}", user)
        assert (hidden.status, hidden.message) == (404, f"Source {other} not found")
        for kind in KINDS:
            reply = await api.get(f"/api/sources/{other}/{kind}", user)
            assert (reply.status, reply.message) == (404, f"Source {other} not found"), kind
    both = await api.get("/api/sources", world.carol)
    assert {s["id"] for s in both.data["sources"]} == {world.source_a, world.source_b, world.shared}
    everything = await api.get(f"/api/sources/{world.source_b}", world.admin)
    assert everything.status == 200


async def test_shared_source_shows_each_user_only_their_groups_rows(
    api: ApiClient, world: World
) -> None:
    for user, group, other in (
        (world.alice, world.group_a, world.group_b),
        (world.bob, world.group_b, world.group_a),
    ):
        source = (await api.get(f"/api/sources/{world.shared}", user)).data
        assert source["groups"] == [{"id": group.id, "name": group.name}]
        for kind in KINDS:
            rows = await _read(api, user, world.shared, kind)
            assert [r["id"] for r in rows] == world.rows[kind][group.name], kind
            assert all(r["groups"] == [{"id": group.id, "name": group.name}] for r in rows)
            assert other.name not in str(rows), kind
    photometry = await api.get(f"/api/sources/{world.shared}/photometry", world.alice)
    assert photometry.data["totalMatches"] == 1
    for user in (world.carol, world.admin):
        for kind in KINDS:
            rows = await _read(api, user, world.shared, kind)
            expected = world.rows[kind][world.group_a.name] + world.rows[kind][world.group_b.name]
            assert sorted(r["id"] for r in rows) == sorted(expected), kind


async def test_posting_to_an_invisible_source_is_404_and_writes_nothing(
    api: ApiClient, world: World, resources: Resources
) -> None:
    before = await table_counts(resources)
    for kind, path, body in _data_posts(world, world.source_b, "sneaky"):
        reply = await api.post(path, world.alice, body)
        assert (reply.status, reply.message) == (404, f"Source {world.source_b} not found"), kind
    assert await table_counts(resources) == before


async def test_data_can_only_be_shared_with_the_callers_groups(
    api: ApiClient, world: World, resources: Resources
) -> None:
    before = await table_counts(resources)
    for kind, path, body in _data_posts(world, world.shared, "into-b"):
        reply = await api.post(path, world.alice, {**body, "group_ids": [world.group_b.id]})
        assert reply.status == 400 and "Cannot find one or more groups" in reply.message, kind
    refused = await api.post(
        "/api/sources",
        world.alice,
        {"id": "alice_into_b", "ra": 1.0, "dec": 1.0, "group_ids": [world.group_b.id]},
    )
    assert refused.status == 400
    assert await table_counts(resources) == before


async def test_taken_ids_are_refused_without_revealing_the_hidden_source(
    api: ApiClient, world: World, resources: Resources
) -> None:
    before = await table_counts(resources)
    hidden = await api.post(
        "/api/sources", world.alice, {"id": world.source_b, "ra": 1.0, "dec": 2.0}
    )
    seen = await api.post("/api/sources", world.alice, {"id": world.source_a, "ra": 1.0, "dec": 2})
    assert (hidden.status, seen.status) == (400, 400)
    assert hidden.message == f"Source {world.source_b} already exists"
    assert seen.message == f"Source {world.source_a} already exists"
    for secret in ("123.456", "65.4321", "0.0421", world.group_b.name):
        assert secret not in str(hidden.body)
    assert await table_counts(resources) == before


async def test_annotation_origins_are_unique_per_what_the_caller_can_see(
    api: ApiClient, world: World
) -> None:
    origin = f"for-{world.group_b.name}"  # carol's group-B annotation, invisible to alice
    path = f"/api/sources/{world.shared}/annotations"
    mine = await api.post(path, world.alice, {"origin": origin, "data": {"by": "alice"}})
    assert mine.status == 200, mine.body
    duplicate = await api.post(path, world.carol, {"origin": origin, "data": {}})
    assert duplicate.status == 400 and "already exists" in duplicate.message


@pytest.mark.parametrize("acls", [(), ("View Only",), ("View Only", "Upload Data")])
async def test_view_only_and_acl_less_users_cannot_post(
    api: ApiClient, accounts: Accounts, world: World, resources: Resources, acls: tuple[str, ...]
) -> None:
    user = await accounts.user(acls=acls, groups=(world.group_a,))
    posts = [
        ("/api/instrument", {"name": "blocked-cam", "filters": ["g"]}),
        ("/api/sources", {"id": "blocked_source", "ra": 1.0, "dec": 1.0}),
        *((path, body) for _, path, body in _data_posts(world, world.shared, "blocked")),
        ("/api/comment", {"obj_id": world.shared, "text": "blocked"}),
    ]
    before = await table_counts(resources)
    for path, body in posts:
        reply = await api.post(path, user, body)
        assert reply.status == 401 and "Upload Data" in reply.message, (path, reply.body)
    assert await table_counts(resources) == before
    # Reading stays allowed.
    assert len(await _read(api, user, world.shared, "comments")) == 1
    assert (await api.get("/api/instrument", user)).status == 200


async def test_admin_data_without_group_ids_goes_to_the_source_groups(
    api: ApiClient, world: World
) -> None:
    posted = await api.post(
        f"/api/sources/{world.source_a}/comments", world.admin, {"text": "from the admin"}
    )
    assert posted.status == 200, posted.body
    (comment,) = await _read(api, world.alice, world.source_a, "comments")
    assert comment["text"] == "from the admin"
    assert comment["groups"] == [{"id": world.group_a.id, "name": world.group_a.name}]


async def test_unauthenticated_requests_are_refused(api: ApiClient, world: World) -> None:
    for path in ("/api/sources", f"/api/sources/{world.shared}", "/api/instrument"):
        assert (await api.get(path, None)).status == 401
    assert (await api.post("/api/sources", None, {"id": "x", "ra": 1, "dec": 1})).status == 401


async def test_analyses_are_listed_only_for_their_groups(
    api: ApiClient, world: World, resources: Resources
) -> None:
    for_a = await _analysis(resources, world.shared, world.carol, world.group_a)
    for_b = await _analysis(resources, world.shared, world.carol, world.group_b)
    expected = {world.alice: [for_a], world.bob: [for_b], world.admin: [for_a, for_b]}
    for user, ids in expected.items():
        reply = await api.get(f"/api/sources/{world.shared}", user, params={"includeAnalyses": "1"})
        assert [a["id"] for a in reply.data["analyses"]] == ids
