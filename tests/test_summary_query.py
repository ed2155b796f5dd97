"""``POST /api/summary_query``: validation (SkyPortal's messages), ranking by embedding
similarity from a real local OpenAI-compatible server, filters, group privacy (readable sources
only, filtered before the top k), stale embeddings, and API failures."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from gateway.handlers.summaries import SEARCH_NOT_CONFIGURED
from shared.db.models import Group
from shared.domain.embeddings import embeddings_config, rank
from shared.runtime.resources import Resources
from shared.runtime.settings import Settings
from summary_service.embedder import SummaryEmbedder
from tests.support.api import Accounts, ApiClient, api_client
from tests.support.api import TestUser as ApiUser
from tests.support.fake_openai import FakeOpenAI
from tests.support.pipeline import add_classification, make_obj

SITE_KEY = "sk-site-valid-key-0001"


@pytest.fixture
async def llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(valid_keys={SITE_KEY}) as fake:
        yield fake


@pytest.fixture
def settings(settings: Settings, llm: FakeOpenAI) -> Settings:
    return settings.model_copy(
        update={
            "llm_base_url": llm.base_url,
            "llm_api_key": SecretStr(SITE_KEY),
            "llm_max_retries": 0,
            "embeddings_model": "fake-embed",
        }
    )


@dataclass
class World:
    mine: Group
    theirs: Group
    me: ApiUser
    other: ApiUser
    admin: ApiUser


@pytest.fixture
async def world(accounts: Accounts) -> World:
    mine, theirs = await accounts.group(), await accounts.group()
    me = await accounts.user(acls=("Upload Data",), groups=(mine,))
    other = await accounts.user(acls=("Upload Data",), groups=(theirs,))
    admin = await accounts.user(admin=True)
    return World(mine, theirs, me, other, admin)


async def summarized(
    resources: Resources, api: ApiClient, user: ApiUser, group: Group, summary: str, **obj: Any
) -> str:
    obj_id = await make_obj(resources, [group], **obj)
    reply = await api.patch(f"/api/sources/{obj_id}", user, {"summary": summary})
    assert reply.status == 200, reply.body
    return obj_id


async def embed_all(resources: Resources) -> None:
    config = embeddings_config(resources.settings)
    assert config is not None
    embedder = SummaryEmbedder(resources.sessions, config)
    try:
        await embedder.reconcile()
    finally:
        await embedder.close()


async def search(api: ApiClient, user: ApiUser, **body: Any) -> list[dict[str, Any]]:
    reply = await api.post("/api/summary_query", user, body)
    assert reply.status == 200, reply.body
    return list(reply.data["query_results"])


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, 'Missing one of the required: "q" or "objID"'),
        ({"k": 3}, 'Missing one of the required: "q" or "objID"'),
        ({"q": "a", "objID": "b"}, 'Cannot specify both "q" and "objID"'),
        ({"q": "a", "k": 0}, "k must be 1<=k<=100"),
        ({"q": "a", "k": 101}, "k must be 1<=k<=100"),
        ({"q": "a", "k": "5"}, "k must be an integer, 1<=k<=100"),
        ({"q": "a", "k": True}, "k must be an integer, 1<=k<=100"),
        ({"q": "a", "k": 2.5}, "k must be an integer, 1<=k<=100"),
        ({"q": "a", "z_min": 0.5, "z_max": 0.1}, "z_min must be <= z_max"),
        ({"q": "a", "z_min": "low"}, "Invalid z_min"),
        ({"q": "a", "classificationTypes": "Ia"}, "Invalid classificationTypes"),
        ({"q": "a", "classificationTypes": [1]}, "Invalid classificationTypes"),
        ({"q": ""}, 'Invalid "q": must be a non-empty string'),
        ({"q": 7}, 'Invalid "q": must be a non-empty string'),
        ({"objID": 7}, 'Invalid "objID"'),
    ],
)
async def test_invalid_queries(
    api: ApiClient, world: World, llm: FakeOpenAI, body: dict[str, Any], message: str
) -> None:
    reply = await api.post("/api/summary_query", world.me, body)
    assert reply.status == 400
    assert reply.message.startswith(message), reply.message
    assert llm.requests == []


async def test_not_configured(resources: Resources, world: World) -> None:
    settings = resources.settings.model_copy(update={"embeddings_model": None})
    unconfigured = dataclasses.replace(resources, settings=settings)
    async with api_client(unconfigured) as api:
        reply = await api.post("/api/summary_query", world.me, {"q": "anything"})
    assert (reply.status, reply.message) == (400, SEARCH_NOT_CONFIGURED)


async def test_needs_a_token(api: ApiClient) -> None:
    reply = await api.post("/api/summary_query", None, {"q": "x"})
    assert reply.status == 401


# --- search -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("backend")
async def test_nearest_summaries_first(resources: Resources, api: ApiClient, world: World) -> None:
    nova = await summarized(
        resources, api, world.me, world.mine, "Classical nova eruption in M31 bulge", redshift=0.0
    )
    ia = await summarized(
        resources, api, world.me, world.mine, "Type Ia supernova near peak in spiral host"
    )
    agn = await summarized(resources, api, world.me, world.mine, "Flaring AGN with broad lines")
    await embed_all(resources)

    hits = await search(api, world.me, q="supernova type Ia in a spiral host", k=3)
    assert hits[0]["id"] == ia
    assert {h["id"] for h in hits} == {nova, ia, agn}
    assert hits[0]["score"] > hits[1]["score"] >= hits[2]["score"]
    assert hits[0]["metadata"] == {
        "summary": "Type Ia supernova near peak in spiral host",
        "redshift": None,
        "class": [],
    }
    assert [h["id"] for h in await search(api, world.me, q="nova eruption M31", k=1)] == [nova]


async def test_readable_sources_only_and_k_of_them(
    resources: Resources, api: ApiClient, world: World
) -> None:
    text = "Superluminous supernova with slow decline"
    hidden = [await summarized(resources, api, world.other, world.theirs, text) for _ in range(4)]
    mine = [
        await summarized(resources, api, world.me, world.mine, f"{text} and {extra}")
        for extra in ("a bright host", "late rebrightening", "hydrogen in spectra")
    ]
    await embed_all(resources)

    # The hidden ones match best, yet only readable ones come back, k of them.
    hits = await search(api, world.me, q=text, k=3)
    assert sorted(h["id"] for h in hits) == sorted(mine)
    hits = await search(api, world.me, q=text, k=100)
    assert sorted(h["id"] for h in hits) == sorted(mine)
    assert not {h["id"] for h in hits} & set(hidden)
    # An admin reads everything; the other group reads only its own.
    hits = await search(api, world.admin, q=text, k=100)
    assert set(hidden) | set(mine) <= {h["id"] for h in hits}
    hits = await search(api, world.other, q=text, k=100)
    assert sorted(h["id"] for h in hits) == sorted(hidden)


async def test_redshift_and_class_filters_use_readable_classifications(
    resources: Resources, api: ApiClient, world: World
) -> None:
    near = await summarized(resources, api, world.me, world.mine, "A transient", redshift=0.02)
    far = await summarized(resources, api, world.me, world.mine, "A transient", redshift=0.4)
    unknown_z = await summarized(resources, api, world.me, world.mine, "A transient")
    await add_classification(resources, near, [world.mine], classification="SN II")
    await add_classification(resources, far, [world.theirs], classification="SN II")  # hidden
    await add_classification(resources, far, [world.mine], classification="SN Ia")
    await embed_all(resources)

    def ids(hits: list[dict[str, Any]]) -> set[str]:
        return {h["id"] for h in hits}

    assert ids(await search(api, world.me, q="transient", z_max=0.1)) == {near}
    assert ids(await search(api, world.me, q="transient", z_min=0.1)) == {far}
    assert ids(await search(api, world.me, q="transient", z_min=0.0, z_max=1.0)) == {near, far}
    assert ids(await search(api, world.me, q="transient")) == {near, far, unknown_z}
    hits = await search(api, world.me, q="transient", classificationTypes=["SN II"])
    assert ids(hits) == {near}
    assert hits[0]["metadata"]["class"] == ["SN II"]
    hits = await search(api, world.me, q="transient", classificationTypes=["SN Ia", "SN II"])
    assert ids(hits) == {near, far}
    by_id = {h["id"]: h["metadata"] for h in hits}
    assert by_id[far] == {"summary": "A transient", "redshift": 0.4, "class": ["SN Ia"]}
    assert ids(await search(api, world.admin, q="transient", classificationTypes=["SN II"])) >= {
        near,
        far,
    }


async def test_by_object_id(resources: Resources, api: ApiClient, world: World) -> None:
    source = await summarized(resources, api, world.me, world.mine, "Tidal disruption event")
    twin = await summarized(resources, api, world.me, world.mine, "Tidal disruption event flare")
    other = await summarized(resources, api, world.me, world.mine, "Eclipsing binary star")
    hidden = await summarized(resources, api, world.other, world.theirs, "Tidal disruption")
    await embed_all(resources)

    hits = await search(api, world.me, objID=source, k=3)
    assert [h["id"] for h in hits] == [source, twin, other]
    assert hits[0]["score"] == pytest.approx(1.0)

    reply = await api.post("/api/summary_query", world.me, {"objID": hidden})
    assert (reply.status, reply.message) == (404, f"Source {hidden} not found")
    bare = await make_obj(resources, [world.mine])
    reply = await api.post("/api/summary_query", world.me, {"objID": bare})
    assert reply.status == 400
    assert reply.message.startswith(f"Source {bare} has no summary embedding yet")


async def test_changed_summary_is_not_matched_until_embedded_again(
    resources: Resources, api: ApiClient, world: World
) -> None:
    obj_id = await summarized(resources, api, world.me, world.mine, "Magnetar giant flare")
    await embed_all(resources)
    assert [h["id"] for h in await search(api, world.me, q="magnetar flare")] == [obj_id]

    reply = await api.patch(f"/api/sources/{obj_id}", world.me, {"summary": "Blazar outburst"})
    assert reply.status == 200
    assert await search(api, world.me, q="magnetar flare") == []
    await embed_all(resources)
    (hit,) = await search(api, world.me, q="blazar outburst")
    assert (hit["id"], hit["metadata"]["summary"]) == (obj_id, "Blazar outburst")


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "Could not search sources: the embeddings API rejected the site's API key (401)"),
        (500, "Could not search sources: the embeddings API failed (server): The server had"),
        (429, "Could not search sources: the embeddings API failed (rate_limit): Rate limit"),
    ],
)
async def test_embeddings_api_failures(
    api: ApiClient, world: World, llm: FakeOpenAI, status: int, message: str
) -> None:
    if status == 401:
        llm.valid_keys.clear()
    else:
        llm.fail_next(status)
    reply = await api.post("/api/summary_query", world.me, {"q": "anything"})
    assert reply.status == 502
    assert reply.message.startswith(message), reply.message
    assert SITE_KEY not in reply.message


def test_rank_is_cosine_similarity() -> None:
    vectors = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0]]
    ranked = rank([2.0, 0.0], vectors, 3)
    assert [i for i, _ in ranked] == [0, 2, 1]
    assert [round(s, 4) for _, s in ranked] == [1.0, 0.7071, 0.0]
    assert rank([1.0, 0.0], [], 5) == []
