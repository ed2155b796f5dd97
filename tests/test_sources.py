"""Instruments and sources through the API, on PostgreSQL and SQLite."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from shared.db.models import (
    AnalysisService,
    Annotation,
    Classification,
    Comment,
    Group,
    Instrument,
    Obj,
    ObjAnalysis,
    Photometry,
    Spectrum,
    obj_groups,
)
from shared.db.types import utcnow
from shared.runtime.resources import Resources
from tests.support.api import Accounts, ApiClient, unique
from tests.support.api import TestUser as Caller
from tests.support.artifacts import blob_exists, links_of, put_artifact, unreferenced_blobs

pytestmark = pytest.mark.usefixtures("backend")

UPLOAD = ("Upload Data",)
COUNTED = (Obj, Instrument, Photometry, Spectrum, Comment, Classification, Annotation)


async def table_counts(resources: Resources) -> dict[str, int]:
    """Rows per table (plus source-group links), to prove a refused request wrote nothing."""
    async with resources.sessions() as session:
        counts = {
            model.__tablename__: await session.scalar(select(func.count()).select_from(model))
            for model in COUNTED
        }
        counts["obj_groups"] = await session.scalar(select(func.count()).select_from(obj_groups))
    return {name: int(n or 0) for name, n in counts.items()}


async def new_instrument(
    api: ApiClient, user: Caller, filters: tuple[str, ...] = ("ztfg", "ztfr")
) -> int:
    reply = await api.post(
        "/api/instrument",
        user,
        {"name": unique("ZTF"), "telescope": "P48", "filters": list(filters)},
    )
    assert reply.status == 200, reply.body
    return int(reply.data["id"])


async def new_source(
    api: ApiClient, user: Caller, group_ids: list[int] | None = None, **fields: Any
) -> str:
    body: dict[str, Any] = {"id": unique("ZTF").replace("-", "_"), "ra": 10.5, "dec": -5.25}
    body.update(fields)
    if group_ids is not None:
        body["group_ids"] = group_ids
    reply = await api.post("/api/sources", user, body)
    assert reply.status == 200, reply.body
    assert reply.data == {"id": body["id"]}
    return str(body["id"])


async def test_instruments_are_created_listed_and_read(api: ApiClient, accounts: Accounts) -> None:
    uploader = await accounts.user(acls=UPLOAD)
    reader = await accounts.user()
    name = unique("SEDM")
    created = await api.post(
        "/api/instrument", uploader, {"name": name, "telescope_name": "P60", "filters": ["sdssr"]}
    )
    assert created.status == 200, created.body
    instrument_id = created.data["id"]

    one = await api.get(f"/api/instrument/{instrument_id}", reader)
    assert one.status == 200
    assert (one.data["name"], one.data["telescope"], one.data["filters"]) == (
        name,
        "P60",
        ["sdssr"],
    )
    listed = await api.get("/api/instrument", reader, params={"name": name})
    assert [i["id"] for i in listed.data] == [instrument_id]
    everything = await api.get("/api/instrument", reader)
    assert instrument_id in {i["id"] for i in everything.data}


BAD_INSTRUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"telescope": "P48", "filters": ["g"]}, "Missing required field: name"),
    ({"name": "", "filters": ["g"]}, "Invalid name"),
    ({"name": 12, "filters": ["g"]}, "Invalid name"),
    ({"name": "x" * 256, "filters": ["g"]}, "at most 255"),
    ({"name": "cam", "filters": "ztfg"}, "Invalid filters"),
    ({"name": "cam", "filters": [1, 2]}, "Invalid filters"),
    ({"name": "cam", "filters": ["g", "g"]}, "listed twice"),
    ({"name": "cam", "telescope": 5}, "Invalid telescope"),
    # the older name is checked even when ``telescope`` makes it unused
    ({"name": "cam", "telescope": "P48", "telescope_name": {}}, "Invalid telescope_name"),
    ({"name": "cam\u0000"}, "NUL"),
    ({"name": "cam", "filters": ["g\u0000"]}, "Invalid filters"),
]


async def test_bad_instruments_are_refused(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    uploader = await accounts.user(acls=UPLOAD)
    before = await table_counts(resources)
    for body, fragment in BAD_INSTRUMENTS:
        reply = await api.post("/api/instrument", uploader, body)
        assert reply.status == 400 and fragment in reply.message, (body, reply.body)
    assert await table_counts(resources) == before


async def test_instrument_name_is_unique_and_unknown_ids_are_clear(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    uploader = await accounts.user(acls=UPLOAD)
    name = unique("cam")
    assert (await api.post("/api/instrument", uploader, {"name": name})).status == 200
    before = await table_counts(resources)
    again = await api.post("/api/instrument", uploader, {"name": name})
    assert again.status == 400 and "already exists" in again.message
    assert await table_counts(resources) == before
    missing = await api.get("/api/instrument/987654321", uploader)
    assert (missing.status, missing.message) == (404, "Instrument 987654321 not found")
    for malformed_id in ("abc", str(2**40)):  # not an id at all: the 32-bit columns' range
        malformed = await api.get(f"/api/instrument/{malformed_id}", uploader)
        assert (malformed.status, malformed.message) == (
            400,
            f"Invalid instrument_id: {malformed_id}",
        )


async def test_source_round_trip_defaults_to_all_caller_groups(
    api: ApiClient, accounts: Accounts
) -> None:
    first, second = await accounts.group(), await accounts.group()
    user = await accounts.user(acls=UPLOAD, groups=(first, second))
    obj_id = await new_source(api, user, redshift=0.05, redshift_error=0.001)
    reply = await api.get(f"/api/sources/{obj_id}", user)
    assert reply.status == 200, reply.body
    source = reply.data
    assert (source["id"], source["ra"], source["dec"]) == (obj_id, 10.5, -5.25)
    assert (source["redshift"], source["redshift_error"]) == (0.05, 0.001)
    assert source["summary"] is None and source["summary_history"] == []
    assert source["groups"] == [
        {"id": first.id, "name": first.name},
        {"id": second.id, "name": second.name},
    ]
    assert source["created_at"].endswith("+00:00")
    assert "analyses" not in source


async def test_sources_list_is_paginated_newest_first(api: ApiClient, accounts: Accounts) -> None:
    group = await accounts.group()
    user = await accounts.user(acls=UPLOAD, groups=(group,))
    ids = [await new_source(api, user) for _ in range(5)]
    page = await api.get("/api/sources", user, params={"numPerPage": "2", "pageNumber": "1"})
    assert page.status == 200, page.body
    assert (page.data["totalMatches"], page.data["pageNumber"], page.data["numPerPage"]) == (
        5,
        1,
        2,
    )
    pages = [page.data["sources"]]
    for number in (2, 3):
        more = await api.get(
            "/api/sources", user, params={"numPerPage": "2", "pageNumber": str(number)}
        )
        pages.append(more.data["sources"])
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [s["id"] for p in pages for s in p] == list(reversed(ids))
    for params in ({"numPerPage": "100000"}, {"pageNumber": "-1"}, {"pageNumber": "x"}):
        assert (await api.get("/api/sources", user, params=params)).status == 400


def _source_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "good_id", "ra": 1.0, "dec": 2.0}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


BAD_SOURCES: list[tuple[Any, str]] = [
    (_source_body(id=...), "Missing required field: id"),
    (_source_body(id="has space"), "Invalid id"),
    (_source_body(id="slash/y"), "Invalid id"),
    (_source_body(id=""), "Invalid id"),
    (_source_body(id=123), "Invalid id"),
    (_source_body(id="a" * 256), "at most 255"),
    (_source_body(ra=...), "Missing required field: ra"),
    (_source_body(ra=360), "Invalid ra"),
    (_source_body(ra=-0.1), "Invalid ra"),
    (_source_body(ra="12"), "Invalid ra"),
    (_source_body(ra=True), "Invalid ra"),
    (_source_body(dec=-(10**400)), "Invalid dec: out of range"),
    (_source_body(dec=90.5), "Invalid dec"),
    (_source_body(dec=None), "Missing required field: dec"),
    (_source_body(redshift="0.1"), "Invalid redshift"),
    (_source_body(redshift_error=-1), "Invalid redshift_error"),
    (_source_body(group_ids="1"), "Invalid group_ids"),
    (_source_body(group_ids=[]), "at least one group"),
    (_source_body(group_ids=[2**40]), "Cannot find one or more groups"),
    (_source_body(group_ids=[2**40, "a"]), "Invalid group_ids"),
    (_source_body(redshift_origin="a\u0000"), "NUL"),
    ([1, 2], "must be a JSON object"),
]


async def test_bad_sources_are_refused(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    group = await accounts.group()
    user = await accounts.user(acls=UPLOAD, groups=(group,))
    before = await table_counts(resources)
    for body, fragment in BAD_SOURCES:
        if isinstance(body, dict) and body.get("id") == "good_id":
            body = {**body, "id": unique("good").replace("-", "_")}
        reply = await api.post("/api/sources", user, body)
        assert reply.status == 400 and fragment in reply.message, (body, reply.body)
    assert await table_counts(resources) == before


async def test_malformed_json_and_duplicates_are_refused(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    group = await accounts.group()
    user = await accounts.user(acls=UPLOAD, groups=(group,))
    obj_id = await new_source(api, user)
    before = await table_counts(resources)
    for raw in (b"{", b'{"id": "x", "ra": NaN, "dec": 0}', b""):
        reply = await api.post(
            "/api/sources", user, data=raw, headers={"Content-Type": "application/json"}
        )
        assert reply.status == 400 and "JSON" in reply.message, reply.body
    again = await api.post("/api/sources", user, {"id": obj_id, "ra": 2.0, "dec": 3.0})
    assert (again.status, again.message) == (400, f"Source {obj_id} already exists")
    assert await table_counts(resources) == before


async def test_missing_source_is_404(api: ApiClient, accounts: Accounts) -> None:
    user = await accounts.user(acls=UPLOAD, groups=(await accounts.group(),))
    for suffix in ("", "/photometry", "/spectra", "/comments", "/classifications", "/annotations"):
        reply = await api.get(f"/api/sources/nope_{uuid.uuid4().hex}{suffix}", user)
        assert reply.status == 404 and reply.message.startswith("Source nope_"), reply.body
        for odd in ("nul%00byte", "x" * 300):
            reply = await api.get(f"/api/sources/{odd}{suffix}", user)
            assert reply.status == 404, reply.body


async def _analysis(resources: Resources, obj_id: str, author: Caller, *groups: Group) -> int:
    async with resources.sessions.begin() as session:
        service = AnalysisService(
            name=unique("svc"),
            display_name="Fitter",
            url="http://127.0.0.1:9/fit",
            authentication_type="none",
            analysis_type="lightcurve_fitting",
        )
        session.add(service)
        await session.flush()
        analysis = ObjAnalysis(
            unique_id=str(uuid.uuid4()),
            obj_id=obj_id,
            author_id=author.id,
            analysis_service_id=service.id,
            token_hash=uuid.uuid4().hex + uuid.uuid4().hex,
            status="queued",
            invalid_after=utcnow() + timedelta(hours=1),
            groups=[await session.get(Group, group.id) for group in groups],
        )
        session.add(analysis)
        await session.flush()
        return analysis.id


async def test_include_analyses_lists_the_source_analyses(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    group = await accounts.group()
    user = await accounts.user(acls=UPLOAD, groups=(group,))
    obj_id = await new_source(api, user)
    analysis_id = await _analysis(resources, obj_id, user, group)
    reply = await api.get(f"/api/sources/{obj_id}", user, params={"includeAnalyses": "true"})
    assert reply.status == 200, reply.body
    (analysis,) = reply.data["analyses"]
    assert (analysis["id"], analysis["status"], analysis["obj_id"]) == (
        analysis_id,
        "queued",
        obj_id,
    )
    assert "token_hash" not in analysis and "token" not in analysis


async def test_only_admins_delete_sources_and_deletion_cascades(
    api: ApiClient, accounts: Accounts, resources: Resources
) -> None:
    group = await accounts.group()
    user = await accounts.user(acls=UPLOAD, groups=(group,))
    admin = await accounts.user(admin=True)
    obj_id = await new_source(api, user)
    instrument_id = await new_instrument(api, user)
    posted = await api.post(
        "/api/photometry",
        user,
        {
            "obj_id": obj_id,
            "instrument_id": instrument_id,
            "mjd": [59000.0, 59001.0],
            "filter": "ztfg",
            "flux": 10.0,
            "fluxerr": 1.0,
            "zp": 23.9,
            "magsys": "ab",
        },
    )
    assert posted.status == 200, posted.body
    comment = await api.post(f"/api/sources/{obj_id}/comments", user, {"text": "nice"})
    assert comment.status == 200, comment.body
    analysis_id = await _analysis(resources, obj_id, user, group)
    own = f"only {obj_id} has these bytes".encode()
    await put_artifact(resources, analysis_id, "results.json", own, "application/json")

    refused = await api.delete(f"/api/sources/{obj_id}", user)
    assert refused.status == 401
    assert (await api.get(f"/api/sources/{obj_id}", user)).status == 200

    deleted = await api.delete(f"/api/sources/{obj_id}", admin)
    assert deleted.status == 200, deleted.body
    assert (await api.get(f"/api/sources/{obj_id}", admin)).status == 404
    async with resources.sessions() as session:
        for model in (Photometry, Comment, ObjAnalysis):
            left = await session.scalar(
                select(func.count()).select_from(model).where(model.obj_id == obj_id)
            )
            assert left == 0, model.__tablename__
    # The analyses' artifacts went in the same transaction: no links, no orphaned blob.
    assert await links_of(resources, [analysis_id]) == 0
    assert await unreferenced_blobs(resources) == []
    assert not await blob_exists(resources, hashlib.sha256(own).hexdigest())
    again = await api.delete(f"/api/sources/{obj_id}", admin)
    assert (again.status, again.message) == (404, f"Source {obj_id} not found")


async def test_openapi_describes_the_source_routes(api: ApiClient) -> None:
    document = (await api.get("/api/openapi.json", None)).body
    paths = document["paths"]
    assert set(paths["/api/sources"]) == {"get", "post"}
    source_body = paths["/api/sources"]["post"]["requestBody"]["content"]["application/json"]
    model = source_body["schema"]["$ref"].removeprefix("#/components/schemas/")
    assert document["components"]["schemas"][model]["properties"]["ra"] == {
        "title": "Ra",
        "type": "number",
    }
    query_names = {p["name"] for p in paths["/api/sources/{obj_id}"]["get"]["parameters"]}
    assert query_names == {"obj_id", "includeAnalyses"}
    for path in (
        "/api/photometry",
        "/api/spectrum",
        "/api/classification",
        "/api/comment",
        "/api/instrument",
        "/api/sources/{obj_id}/annotations",
    ):
        assert "post" in paths[path], path
