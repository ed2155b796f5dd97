"""The analysis-service registry through the API, on PostgreSQL and SQLite."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from shared.db.models import AnalysisService, Group, Obj, ObjAnalysis
from shared.db.types import utcnow
from shared.domain.service_registry import decrypt_authinfo, decrypt_signing_secret
from shared.runtime.resources import Resources, open_resources
from shared.runtime.settings import load_settings
from shared.security.secrets import hash_token
from tests.support.api import Accounts, ApiClient, Reply, TestUser, api_client, unique
from tests.support.artifacts import (
    artifact_names,
    blob_exists,
    links_of,
    put_artifact,
    unreferenced_blobs,
)

pytestmark = pytest.mark.usefixtures("backend")

MANAGE = "Manage Analysis Services"
PATH = "/api/analysis_service"
URL = "http://127.0.0.1:6901/analysis"
SECRET_HEADER = "Bearer s3cr3t-header-token-0123456789"
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": unique("svc"),
        "display_name": "SN fitter",
        "url": URL,
        "authentication_type": "none",
        "analysis_type": "lightcurve_fitting",
        "input_data_types": ["photometry", "redshift"],
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not DROP}


DROP = object()


@dataclass
class World:
    group: Group
    other_group: Group
    manager: TestUser  # ACL, member of group
    member: TestUser  # member of group, no ACL
    outsider: TestUser  # ACL, member of other_group only
    admin: TestUser


@pytest.fixture
async def world(accounts: Accounts) -> World:
    group, other = await accounts.group(), await accounts.group()
    return World(
        group=group,
        other_group=other,
        manager=await accounts.user(acls=(MANAGE,), groups=(group,)),
        member=await accounts.user(acls=("Run Analyses",), groups=(group,)),
        outsider=await accounts.user(acls=(MANAGE,), groups=(other,)),
        admin=await accounts.user(admin=True),
    )


async def create(api: ApiClient, user: TestUser, **overrides: Any) -> int:
    reply = await api.post(PATH, user, body(**overrides))
    assert reply.status == 200, reply.body
    return int(reply.data["id"])


async def count_named(resources: Resources, name: str) -> int:
    async with resources.sessions() as session:
        query = select(func.count(AnalysisService.id)).where(AnalysisService.name == name)
        return int(await session.scalar(query) or 0)


async def stored(resources: Resources, service_id: int) -> AnalysisService:
    async with resources.sessions() as session:
        service = await session.get(AnalysisService, service_id)
        assert service is not None
        return service


# --- CRUD -----------------------------------------------------------------------------------


async def test_full_crud_round_trip(api: ApiClient, world: World) -> None:
    sent = body(
        description="Fits SALT2",
        version="1.2",
        contact_name="Ada",
        contact_email="ada@example.org",
        optional_analysis_parameters={"source": ["nugent-sn2p", "salt2"]},
        enabled=False,
        timeout=120,
        upload_only=False,
        is_summary=True,
        display_on_resource_dropdown=False,
        inputs_format="json",
        group_ids=[world.group.id],
    )
    created = await api.post(PATH, world.manager, sent)
    assert created.status == 200, created.body
    service_id = created.data["id"]

    got = await api.get(f"{PATH}/{service_id}", world.member)
    assert got.status == 200, got.body
    expected = {k: v for k, v in sent.items() if k != "group_ids"}
    expected["timeout"] = 120.0
    assert {k: got.data[k] for k in expected} == expected
    assert got.data["groups"] == [{"id": world.group.id, "name": world.group.name}]
    assert got.data["has_authinfo"] is False and got.data["has_signing_secret"] is False
    assert got.data["authentication_type"] == "none"
    assert set(got.data) == {
        *expected,
        "id",
        "url",
        "authentication_type",
        "has_authinfo",
        "has_signing_secret",
        "created_at",
        "modified",
        "groups",
    }

    listed = await api.get(PATH, world.member)
    assert listed.status == 200 and isinstance(listed.data, list)
    assert [s for s in listed.data if s["id"] == service_id] == [got.data]

    patched = await api.patch(
        f"{PATH}/{service_id}", world.manager, {"description": "v2", "enabled": True}
    )
    assert (patched.status, patched.data) == (200, {})
    again = await api.get(f"{PATH}/{service_id}", world.member)
    assert again.data["description"] == "v2" and again.data["enabled"] is True
    assert again.data["name"] == sent["name"]

    deleted = await api.delete(f"{PATH}/{service_id}", world.manager)
    assert deleted.status == 200, deleted.body
    gone = await api.get(f"{PATH}/{service_id}", world.manager)
    assert (gone.status, gone.message) == (403, "Cannot access this Analysis Service.")
    twice = await api.delete(f"{PATH}/{service_id}", world.manager)
    assert (twice.status, twice.message) == (403, "Cannot delete this Analysis Service.")


async def test_defaults_match_skyportal(api: ApiClient, world: World) -> None:
    reply = await api.post(PATH, world.manager, body(input_data_types=DROP))
    assert reply.status == 200, reply.body
    service_id = reply.data["id"]
    data = (await api.get(f"{PATH}/{service_id}", world.manager)).data
    assert data["enabled"] is True
    assert data["timeout"] == 3600.0
    assert data["upload_only"] is False and data["is_summary"] is False
    assert data["display_on_resource_dropdown"] is True
    assert data["optional_analysis_parameters"] == {}
    assert data["input_data_types"] == []
    assert data["inputs_format"] == "csv"
    assert data["description"] is None and data["contact_email"] is None
    assert [g["id"] for g in data["groups"]] == [world.group.id]


async def test_invalid_service_id_and_unknown_service(api: ApiClient, world: World) -> None:
    reply = await api.get(f"{PATH}/x", world.manager)
    assert (reply.status, reply.message) == (400, "Invalid analysis_service_id: x")
    reply = await api.patch(f"{PATH}/x", world.manager, {"description": "d"})
    assert (reply.status, reply.message) == (400, "Invalid analysis_service_id: x")
    reply = await api.delete(f"{PATH}/x", world.manager)
    assert (reply.status, reply.message) == (400, "Invalid analysis_service_id: x")
    reply = await api.get(f"{PATH}/987654321", world.manager)
    assert (reply.status, reply.message) == (403, "Cannot access this Analysis Service.")


async def test_list_is_paginated_only_when_asked(api: ApiClient, accounts: Accounts) -> None:
    group = await accounts.group()
    user = await accounts.user(acls=(MANAGE,), groups=(group,))
    ids = [await create(api, user) for _ in range(3)]
    plain = await api.get(PATH, user)
    assert [s["id"] for s in plain.data] == ids
    page = await api.get(f"{PATH}?pageNumber=2&numPerPage=2", user)
    assert page.status == 200, page.body
    assert page.data["totalMatches"] == 3
    assert (page.data["pageNumber"], page.data["numPerPage"]) == (2, 2)
    assert [s["id"] for s in page.data["analysis_services"]] == ids[2:]
    bad = await api.get(f"{PATH}?numPerPage=100000", user)
    assert bad.status == 400 and "numPerPage" in bad.message


# --- optional_analysis_parameters ------------------------------------------------------------

PARAMETERS = {
    "source": ["nugent-sn2p", "salt2"],
    "fix_z": {"type": "boolean", "required": "True", "description": "fix z", "default": False},
    "count": {"type": "integer", "default": 3},
    "image": {"type": "file", "required": False},
}


@pytest.mark.parametrize("given", [json.dumps(PARAMETERS), PARAMETERS], ids=["string", "object"])
async def test_optional_parameters_round_trip_as_given_and_are_listed_parsed(
    api: ApiClient, world: World, given: Any
) -> None:
    """SkyPortal's single GET gives them back as stored; its list parses them."""
    service_id = await create(api, world.manager, optional_analysis_parameters=given)
    single = await api.get(f"{PATH}/{service_id}", world.manager)
    assert single.data["optional_analysis_parameters"] == given
    listed = await api.get(PATH, world.manager)
    (item,) = [s for s in listed.data if s["id"] == service_id]
    assert item["optional_analysis_parameters"] == PARAMETERS
    paged = await api.get(f"{PATH}?numPerPage=100", world.manager)
    (item,) = [s for s in paged.data["analysis_services"] if s["id"] == service_id]
    assert item["optional_analysis_parameters"] == PARAMETERS
    # A PATCH in the other form comes back in that form.
    other = PARAMETERS if isinstance(given, str) else json.dumps(PARAMETERS)
    patch = {"optional_analysis_parameters": other}
    assert (await api.patch(f"{PATH}/{service_id}", world.manager, patch)).status == 200
    single = await api.get(f"{PATH}/{service_id}", world.manager)
    assert single.data["optional_analysis_parameters"] == other


BAD_PARAMETERS: list[tuple[Any, str]] = [
    ("{not json", "Could not parse `optional_analysis_parameters` as JSON."),
    ("[1, 2]", "`optional_analysis_parameters` must be a JSON object"),
    (["a"], "`optional_analysis_parameters` must be a JSON object"),
    (None, "`optional_analysis_parameters` must be a JSON object"),
    ({"p": []}, "Invalid `optional_analysis_parameters` entry 'p': the list of allowed"),
    ({"p": [{"x": 1}]}, "allowed values must be strings, numbers or booleans"),
    ({"p": 3}, "must be a list of allowed values or an object with a `type`"),
    ({"p": {"type": "color"}}, "`type` must be one of: number, string, file, boolean, integer"),
    ({"p": {"description": "no type"}}, "`type` must be one of"),
    ({"p": {"type": "number", "required": "perhaps"}}, "`required` must be a boolean"),
    ({"p": {"type": "number", "default": "ten"}}, "`default` is not a valid number"),
    ({"p": {"type": "integer", "default": 1.5}}, "`default` is not a valid integer"),
    ({"p": {"type": "string", "description": 4}}, "`description` must be a string"),
    ({"p": {"type": "string", "min": 4}}, "unknown keys ['min']"),
]


@pytest.mark.parametrize(("value", "message"), BAD_PARAMETERS)
async def test_bad_optional_parameters_are_refused(
    api: ApiClient, world: World, resources: Resources, value: Any, message: str
) -> None:
    sent = body(optional_analysis_parameters=value)
    reply = await api.post(PATH, world.manager, sent)
    assert reply.status == 400 and message in reply.message, reply.message
    assert await count_named(resources, sent["name"]) == 0


# --- POST validation: order, messages, status codes ------------------------------------------

INVALID = "Invalid/missing parameters: "
TIMEOUT_RANGE = (
    INVALID + "{'timeout': ['Must be greater than 0 and less than or equal to 604800.']}"
)
POST_ERRORS = [
    ({"url": DROP}, 400, "`url` is required to add an Analysis Service."),
    ({"url": ""}, 400, "`url` is required to add an Analysis Service."),
    (
        {"url": "not a url"},
        400,
        "a valid `url` is required to add an Analysis Service. "
        "URL rejected: must be an absolute http(s) URL.",
    ),
    ({"url": "ftp://example.org/x"}, 400, "a valid `url` is required"),
    ({"url": 42}, 400, "a valid `url` is required to add an Analysis Service."),
    (
        {"url": "http://user:pw@127.0.0.1/x"},
        400,
        "a valid `url` is required to add an Analysis Service. "
        "URL rejected: must not embed credentials; use authentication_type instead.",
    ),
    (
        {"url": "http://169.254.169.254/latest/meta-data"},
        400,
        "a valid `url` is required to add an Analysis Service. URL rejected: "
        "points to a link-local or metadata address (169.254.169.254).",
    ),
    (
        {"authentication_type": DROP},
        400,
        "`authentication_type` is required to add an Analysis Service.",
    ),
    (
        {"authentication_type": "magic"},
        400,
        "`authentication_type` must be one of: none, header_token, api_key, HTTPBasicAuth, "
        "HTTPDigestAuth, OAuth1.",
    ),
    (
        {"authentication_type": "header_token"},
        400,
        "`_authinfo` is required to add an Analysis Service  when authentication_type is not "
        '"none".',
    ),
    (
        {"authentication_type": "api_key", "_authinfo": "{oops"},
        400,
        "`_authinfo` must be parseable to a valid JSON object.",
    ),
    (
        {"authentication_type": "api_key", "_authinfo": "[1]"},
        400,
        "`_authinfo` must be parseable to a valid JSON object.",
    ),
    (
        {"authentication_type": "header_token", "_authinfo": {"token": "x"}},
        400,
        '`_authinfo` must contain a key for "header_token".',
    ),
    ({"group_ids": [987654321]}, 403, "Cannot find one or more groups with IDs: [987654321]."),
    ({"group_ids": "all"}, 400, "Invalid group_ids: must be a list of integer group IDs"),
    ({"group_ids": []}, 400, "Invalid group_ids: an Analysis Service needs at least one group"),
    (
        {"analysis_type": DROP},
        400,
        INVALID + "{'analysis_type': ['Missing data for required field.']}",
    ),
    (
        {"analysis_type": "astrology"},
        400,
        INVALID + "{'analysis_type': ['Must be one of: lightcurve_fitting, spectrum_fitting, "
        "meta_analysis.']}",
    ),
    ({"name": DROP}, 400, INVALID + "{'name': ['Missing data for required field.']}"),
    ({"name": "  "}, 400, INVALID + "{'name': ['Must not be empty.']}"),
    ({"name": "n" * 256}, 400, INVALID + "{'name': ['Longer than maximum length 255.']}"),
    ({"display_name": None}, 400, INVALID + "{'display_name': ['Field may not be null.']}"),
    ({"description": 5}, 400, INVALID + "{'description': ['Not a valid string.']}"),
    (
        {"contact_email": "ada-at-example"},
        400,
        INVALID + "{'contact_email': ['Not a valid email address.']}",
    ),
    ({"enabled": "maybe"}, 400, INVALID + "{'enabled': ['Not a valid boolean.']}"),
    ({"upload_only": None}, 400, INVALID + "{'upload_only': ['Field may not be null.']}"),
    ({"timeout": 0}, 400, TIMEOUT_RANGE),
    ({"timeout": 604801}, 400, TIMEOUT_RANGE),
    ({"timeout": "soon"}, 400, INVALID + "{'timeout': ['Not a valid number.']}"),
    ({"timeout": True}, 400, INVALID + "{'timeout': ['Not a valid number.']}"),
    (
        {"input_data_types": "photometry"},
        400,
        INVALID + "{'input_data_types': ['Not a valid list.']}",
    ),
    (
        {"input_data_types": ["photometry", "xrays"]},
        400,
        INVALID + "{'input_data_types': {1: ['Must be one of: photometry, spectra, redshift, "
        "annotations, comments, classifications.']}}",
    ),
    (
        {"input_data_types": ["photometry", "photometry"]},
        400,
        INVALID + "{'input_data_types': ['Duplicate values are not allowed.']}",
    ),
    ({"inputs_format": "xml"}, 400, INVALID + "{'inputs_format': ['Must be one of: csv, json.']}"),
    ({"signing_secret": "too-short"}, 400, INVALID + "{'signing_secret': ['Must be between 24"),
    (
        {"signing_secret": "whsec_!!!not-base64!!!-at-all"},
        400,
        INVALID + "{'signing_secret': ['A whsec_ secret must be followed by valid base64.']}",
    ),
    (
        {"signing_secret": "whsec_" + "QUJD" * 5},
        400,
        INVALID + "{'signing_secret': ['A whsec_ secret must decode to at least 16 bytes.']}",
    ),
    ({"authinfo": {"a": 1}}, 400, INVALID + "{'authinfo': ['Unknown field.']}"),
    (
        {"name": DROP, "enabled": 7},
        400,
        INVALID
        + "{'name': ['Missing data for required field.'], 'enabled': ['Not a valid boolean.']}",
    ),
]


@pytest.mark.parametrize(("overrides", "status", "message"), POST_ERRORS)
async def test_post_validation_messages(
    api: ApiClient,
    world: World,
    resources: Resources,
    overrides: dict[str, Any],
    status: int,
    message: str,
) -> None:
    sent = body(**overrides)
    reply = await api.post(PATH, world.manager, sent)
    assert reply.status == status, reply.body
    assert reply.message.startswith(message), reply.message
    if "name" in sent and isinstance(sent["name"], str):
        assert await count_named(resources, sent["name"]) == 0


async def test_validation_follows_skyportal_order(api: ApiClient, world: World) -> None:
    # Everything wrong at once: the url is reported first, then the parameters, then auth.
    sent = body(url="nope", optional_analysis_parameters="{", authentication_type="x", name=DROP)
    assert (await api.post(PATH, world.manager, sent)).message.startswith("a valid `url`")
    sent["url"] = URL
    reply = await api.post(PATH, world.manager, sent)
    assert reply.message == "Could not parse `optional_analysis_parameters` as JSON."
    sent["optional_analysis_parameters"] = "{}"
    assert (await api.post(PATH, world.manager, sent)).message.startswith("`authentication_type`")
    sent["authentication_type"] = "none"
    sent["group_ids"] = [world.other_group.id]
    assert (await api.post(PATH, world.manager, sent)).status == 403
    del sent["group_ids"]
    assert (await api.post(PATH, world.manager, sent)).message == (
        INVALID + "{'name': ['Missing data for required field.']}"
    )


async def test_marshmallow_style_booleans_and_numeric_strings(api: ApiClient, world: World) -> None:
    service_id = await create(api, world.manager, enabled="false", upload_only="True", timeout="90")
    data = (await api.get(f"{PATH}/{service_id}", world.manager)).data
    assert (data["enabled"], data["upload_only"], data["timeout"]) == (False, True, 90.0)


async def test_bad_json_body(api: ApiClient, world: World) -> None:
    reply = await api.post(PATH, world.manager, data=b"{nope", headers={"Content-Type": "x"})
    assert reply.status == 400 and reply.message.startswith("Error parsing JSON")


async def test_duplicate_name_is_a_clean_400(
    api: ApiClient, world: World, resources: Resources
) -> None:
    name = unique("dup")
    first = await create(api, world.manager, name=name)
    reply = await api.post(PATH, world.manager, body(name=name))
    assert reply.status == 400
    assert reply.message.startswith("Analysis Service with that name already exists: ")
    assert "duplicate key value violates unique constraint" in reply.message
    for leak in ("DETAIL", "IntegrityError", "sqlite3", "asyncpg", "INSERT"):
        assert leak not in reply.message
    assert await count_named(resources, name) == 1
    other = await create(api, world.manager)
    renamed = await api.patch(f"{PATH}/{other}", world.manager, {"name": name})
    assert renamed.status == 400 and "already exists" in renamed.message
    assert (await api.get(f"{PATH}/{first}", world.manager)).data["name"] == name


async def test_url_policy_refuses_loopback_unless_allowed(
    database_url: str, tmp_path: Any, accounts: Accounts
) -> None:
    strict = load_settings(
        None,
        database_url=database_url,
        amqp_url="memory://",
        artifact_dir=tmp_path / "artifacts",
        secret_key="test-secret-key",
        allowed_url_hosts=["localhost"],
    )
    async with open_resources(strict) as resources, api_client(resources) as client:
        group = await Accounts(resources).group()
        user = await Accounts(resources).user(acls=(MANAGE,), groups=(group,))
        reply = await client.post(PATH, user, body(url="http://127.0.0.1:8000/x"))
        assert reply.status == 400
        assert "loopback address (127.0.0.1)" in reply.message
        assert "SKYHOOK_ALLOW_LOOPBACK_URLS" in reply.message
        reply = await client.post(PATH, user, body(url="http://10.1.2.3/x"))
        assert reply.status == 400 and "private address (10.1.2.3)" in reply.message
        # An explicitly allowed host passes even though it resolves to loopback.
        assert (await client.post(PATH, user, body(url="http://localhost:8000/x"))).status == 200
        # PATCH checks a changed url against the same policy.
        created = await client.post(PATH, user, body(url="http://localhost:8001/x"))
        patched = await client.patch(
            f"{PATH}/{created.data['id']}", user, {"url": "http://[::1]:8000/x"}
        )
        assert patched.status == 400 and "loopback address (::1)" in patched.message


async def test_registration_does_not_resolve_host_names(
    database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SkyPortal's documented example URL registers under the strict policy, with no lookup;
    the dispatcher resolves and checks the name when it sends."""
    strict = load_settings(
        None,
        database_url=database_url,
        amqp_url="memory://",
        artifact_dir=tmp_path / "artifacts",
        secret_key="test-secret-key",
    )
    asked: list[Any] = []
    real = socket.getaddrinfo

    def recording(host: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    url = "http://amazing.analysis.edu:6801/analysis/rrl_analysis"
    async with open_resources(strict) as resources, api_client(resources) as client:
        group = await Accounts(resources).group()
        user = await Accounts(resources).user(acls=(MANAGE,), groups=(group,))
        reply = await client.post(PATH, user, body(url=url))
        assert reply.status == 200, reply.body
        shown = await client.get(f"{PATH}/{reply.data['id']}", user)
        assert shown.data["url"] == url
        reply = await client.post(PATH, user, body(url="http://localhost:8000/x"))
        assert reply.status == 200, reply.body
    assert not {"amazing.analysis.edu", "localhost"} & set(asked)


# --- PATCH validation -----------------------------------------------------------------------

PATCH_ERRORS = [
    ({"url": ""}, 400, "`url` is required to add an Analysis Service."),
    ({"url": "nope"}, 400, "a valid `url` is required to add an Analysis Service."),
    (
        {"url": "http://169.254.169.254/"},
        400,
        "a valid `url` is required to add an Analysis Service. "
        "URL rejected: points to a link-local",
    ),
    (
        {"optional_analysis_parameters": "{x"},
        400,
        "Could not parse `optional_analysis_parameters` as JSON.",
    ),
    (
        {"optional_analysis_parameters": {"p": {"type": "nope"}}},
        400,
        "Invalid `optional_analysis_parameters` entry 'p'",
    ),
    (
        {"authentication_type": None},
        400,
        "`authentication_type` is required to add an Analysis Service.",
    ),
    (
        {"authentication_type": "HTTPBasicAuth"},
        400,
        '`_authinfo` must contain a key for "username".',
    ),
    ({"_authinfo": "{broken"}, 400, "`_authinfo` must be parseable to a valid JSON object."),
    (
        {"_authinfo": {"header_token": "plain string"}},
        400,
        '`_authinfo` key "header_token" must be an object',
    ),
    ({"name": None}, 400, INVALID + "{'name': ['Field may not be null.']}"),
    ({"analysis_type": "x"}, 400, INVALID + "{'analysis_type': ['Must be one of:"),
    ({"timeout": -1}, 400, INVALID + "{'timeout': ['Must be greater than 0"),
    ({"enabled": None}, 400, INVALID + "{'enabled': ['Field may not be null.']}"),
    (
        {"input_data_types": ["spectra", "spectra"]},
        400,
        INVALID + "{'input_data_types': ['Duplicate values are not allowed.']}",
    ),
    ({"contact_email": "bad"}, 400, INVALID + "{'contact_email': ['Not a valid email address.']}"),
    ({"id": 5}, 400, INVALID + "{'id': ['Unknown field.']}"),
    ({"group_ids": [987654321]}, 400, "Cannot find one or more groups with IDs: [987654321]."),
    ({"group_ids": []}, 400, "Invalid group_ids: an Analysis Service needs at least one group"),
]


@pytest.mark.parametrize(("patch", "status", "message"), PATCH_ERRORS)
async def test_patch_is_validated_like_post_and_changes_nothing(
    api: ApiClient, world: World, patch: dict[str, Any], status: int, message: str
) -> None:
    service_id = await create(
        api,
        world.manager,
        authentication_type="header_token",
        _authinfo={"header_token": {"Authorization": SECRET_HEADER}},
    )
    before = (await api.get(f"{PATH}/{service_id}", world.manager)).data
    reply = await api.patch(f"{PATH}/{service_id}", world.manager, patch)
    assert reply.status == status, reply.body
    assert reply.message.startswith(message), reply.message
    assert (await api.get(f"{PATH}/{service_id}", world.manager)).data == before


async def test_patch_group_changes(api: ApiClient, world: World, accounts: Accounts) -> None:
    service_id = await create(api, world.manager)
    reply = await api.patch(
        f"{PATH}/{service_id}", world.manager, {"group_ids": [world.other_group.id]}
    )
    assert (reply.status, reply.message) == (
        400,
        "Cannot change groups for Analysis Services that you are not a member of.",
    )
    both = await accounts.user(acls=(MANAGE,), groups=(world.group, world.other_group))
    reply = await api.patch(
        f"{PATH}/{service_id}", both, {"group_ids": [world.group.id, world.other_group.id]}
    )
    assert reply.status == 200, reply.body
    # The outsider now sees the service through other_group.
    seen = await api.get(f"{PATH}/{service_id}", world.outsider)
    assert seen.status == 200
    assert {g["id"] for g in seen.data["groups"]} == {world.group.id, world.other_group.id}
    reply = await api.patch(f"{PATH}/{service_id}", both, {"group_ids": [world.other_group.id]})
    assert reply.status == 200
    assert (await api.get(f"{PATH}/{service_id}", world.member)).status == 403


async def test_patch_auth_type_with_new_authinfo_and_back_to_none(
    api: ApiClient, world: World, resources: Resources
) -> None:
    service_id = await create(api, world.manager)
    reply = await api.patch(
        f"{PATH}/{service_id}",
        world.manager,
        {"authentication_type": "HTTPDigestAuth", "_authinfo": {"username": "u", "password": "p"}},
    )
    assert reply.status == 200, reply.body
    data = (await api.get(f"{PATH}/{service_id}", world.manager)).data
    assert data["authentication_type"] == "HTTPDigestAuth" and data["has_authinfo"] is True
    service = await stored(resources, service_id)
    assert decrypt_authinfo(resources.secret_box, service) == {"username": "u", "password": "p"}
    # Other fields can change without resending the credentials.
    assert (await api.patch(f"{PATH}/{service_id}", world.manager, {"version": "2"})).status == 200
    service = await stored(resources, service_id)
    assert decrypt_authinfo(resources.secret_box, service) == {"username": "u", "password": "p"}
    reply = await api.patch(f"{PATH}/{service_id}", world.manager, {"authentication_type": "none"})
    assert reply.status == 200
    service = await stored(resources, service_id)
    assert service.authinfo_ciphertext is None
    assert (await api.get(f"{PATH}/{service_id}", world.manager)).data["has_authinfo"] is False


# --- _authinfo --------------------------------------------------------------------------------

AUTHINFO_ACCEPTED = [
    (
        "header_token",
        json.dumps({"header_token": {"Authorization": "Bearer abc", "X-Extra": "1"}}),
        {"header_token": {"Authorization": "Bearer abc", "X-Extra": "1"}},
    ),
    (
        "api_key",
        {"api_key": "k-123", "api_key_name": "apikey"},
        {"api_key_name": "apikey", "api_key": "k-123"},
    ),
    (
        "HTTPBasicAuth",
        json.dumps({"HTTPBasicAuth": "yes", "username": "ada", "password": "pw"}),
        {"username": "ada", "password": "pw"},
    ),
    (
        "HTTPBasicAuth",
        {"HTTPBasicAuth": {"username": "ada", "password": "pw"}},
        {"username": "ada", "password": "pw"},
    ),
    (
        "HTTPDigestAuth",
        {"username": "ada", "password": "pw"},
        {"username": "ada", "password": "pw"},
    ),
    (
        "OAuth1",
        {
            "OAuth1": True,
            "app_key": "a",
            "app_secret": "b",
            "user_oauth_token": "c",
            "user_oauth_token_secret": "d",
        },
        {
            "app_key": "a",
            "app_secret": "b",
            "user_oauth_token": "c",
            "user_oauth_token_secret": "d",
        },
    ),
    ("none", {"anything": "ignored"}, {}),
]


@pytest.mark.parametrize(("auth_type", "authinfo", "canonical"), AUTHINFO_ACCEPTED)
async def test_authinfo_is_stored_encrypted_in_the_form_it_is_used(
    api: ApiClient,
    world: World,
    resources: Resources,
    auth_type: str,
    authinfo: Any,
    canonical: dict[str, Any],
) -> None:
    service_id = await create(api, world.manager, authentication_type=auth_type, _authinfo=authinfo)
    service = await stored(resources, service_id)
    assert decrypt_authinfo(resources.secret_box, service) == canonical
    assert (service.authinfo_ciphertext is not None) == bool(canonical)
    data = (await api.get(f"{PATH}/{service_id}", world.manager)).data
    assert data["has_authinfo"] is bool(canonical)
    assert "_authinfo" not in data and "authinfo" not in data


AUTHINFO_REFUSED = [
    ("api_key", {"api_key": "k"}, '`_authinfo` must contain a key for "api_key_name".'),
    ("api_key", {"api_key_name": "key"}, '`_authinfo` must contain a key for "api_key".'),
    (
        "api_key",
        {"api_key_name": "key", "api_key": 5},
        '`_authinfo` key "api_key" must be a non-empty string.',
    ),
    (
        "api_key",
        {"api_key_name": "inputs", "api_key": "k"},
        "`_authinfo.api_key_name` must not be one of the request payload's keys",
    ),
    ("HTTPBasicAuth", {"HTTPBasicAuth": "x"}, '`_authinfo` must contain a key for "username".'),
    ("HTTPDigestAuth", {"username": "u"}, '`_authinfo` must contain a key for "password".'),
    (
        "OAuth1",
        {"app_key": "a", "app_secret": "b", "user_oauth_token": "c"},
        '`_authinfo` must contain a key for "user_oauth_token_secret".',
    ),
    ("header_token", {"header_token": {}}, '`_authinfo` key "header_token" must be an object'),
    (
        "header_token",
        {"header_token": {"Bad Name": "v"}},
        '`_authinfo` header name "Bad Name" is not a valid HTTP header name.',
    ),
    (
        "header_token",
        {"header_token": {"Host": "evil"}},
        '`_authinfo` header "Host" is set by skyhook and cannot be given.',
    ),
    (
        "header_token",
        {"header_token": {"X-A": "a\r\nX-B: b"}},
        '`_authinfo` header "X-A" must have a string value without line breaks.',
    ),
    (
        "header_token",
        {"header_token": {"X-A": 5}},
        '`_authinfo` header "X-A" must have a string value',
    ),
    ("header_token", "", "`_authinfo` is required to add an Analysis Service  when"),
]


@pytest.mark.parametrize(("auth_type", "authinfo", "message"), AUTHINFO_REFUSED)
async def test_authinfo_must_hold_what_will_be_used(
    api: ApiClient,
    world: World,
    resources: Resources,
    auth_type: str,
    authinfo: Any,
    message: str,
) -> None:
    sent = body(authentication_type=auth_type, _authinfo=authinfo)
    reply = await api.post(PATH, world.manager, sent)
    assert reply.status == 400 and reply.message.startswith(message), reply.message
    assert await count_named(resources, sent["name"]) == 0


async def test_secrets_never_in_responses_or_logs(
    api: ApiClient, world: World, resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "pw-" + uuid.uuid4().hex
    replies: list[Reply] = []
    sent = body(
        authentication_type="header_token",
        _authinfo=json.dumps({"header_token": {"Authorization": SECRET_HEADER}}),
        signing_secret=SIGNING_SECRET,
    )
    replies.append(await api.post(PATH, world.manager, sent))
    service_id = replies[-1].data["id"]
    replies.append(await api.get(f"{PATH}/{service_id}", world.member))
    replies.append(await api.get(PATH, world.admin))
    replies.append(await api.get(f"{PATH}?pageNumber=1", world.manager))
    basic: dict[str, Any] = {"authentication_type": "HTTPBasicAuth", "_authinfo": {"username": "u"}}
    basic["_authinfo"]["password"] = password
    replies.append(await api.patch(f"{PATH}/{service_id}", world.manager, basic))
    # Failing requests that carry secrets must not echo them either.
    replies.append(
        await api.patch(
            f"{PATH}/{service_id}",
            world.manager,
            {"_authinfo": {"username": password}, "timeout": -1},
        )
    )
    replies.append(
        await api.post(
            PATH, world.manager, body(signing_secret=password[:10], authentication_type="api_key")
        )
    )
    replies.append(await api.get(f"{PATH}/{service_id}", world.manager))
    assert [r.status for r in replies] == [200, 200, 200, 200, 200, 400, 400, 200]
    assert replies[-1].data["has_signing_secret"] is True
    assert replies[-1].data["has_authinfo"] is True

    assert any(r.name == "skyhook.gateway.analysis_services" for r in caplog.records)
    texts = [json.dumps(r.body) for r in replies] + [caplog.text]
    texts += [record.getMessage() for record in caplog.records]
    for secret in (SECRET_HEADER, SIGNING_SECRET, password, SIGNING_SECRET.removeprefix("whsec_")):
        for text in texts:
            assert secret not in text

    service = await stored(resources, service_id)
    for ciphertext in (service.authinfo_ciphertext, service.signing_secret_ciphertext):
        assert ciphertext and password not in ciphertext and SIGNING_SECRET not in ciphertext
    assert decrypt_authinfo(resources.secret_box, service) == {
        "username": "u",
        "password": password,
    }
    assert decrypt_signing_secret(resources.secret_box, service) == SIGNING_SECRET


async def test_ciphertext_is_bound_to_its_service_and_survives_renames(
    api: ApiClient, world: World, resources: Resources
) -> None:
    auth = {"authentication_type": "api_key", "_authinfo": {"api_key_name": "k", "api_key": "v"}}
    first = await create(api, world.manager, **auth)
    second = await create(api, world.manager)
    renamed = await api.patch(f"{PATH}/{first}", world.manager, {"name": unique("renamed")})
    assert renamed.status == 200
    service = await stored(resources, first)
    assert decrypt_authinfo(resources.secret_box, service) == {"api_key_name": "k", "api_key": "v"}
    # The same ciphertext copied onto another row does not decrypt there.
    async with resources.sessions.begin() as session:
        other = await session.get(AnalysisService, second)
        assert other is not None
        other.authinfo_ciphertext = service.authinfo_ciphertext
    with pytest.raises(ValueError, match="failed authentication"):
        decrypt_authinfo(resources.secret_box, await stored(resources, second))


async def test_signing_secret_can_be_set_replaced_and_removed(
    api: ApiClient, world: World, resources: Resources
) -> None:
    plain = "a-plain-signing-secret-of-32-chars!"
    service_id = await create(api, world.manager, signing_secret=plain)
    service = await stored(resources, service_id)
    assert decrypt_signing_secret(resources.secret_box, service) == plain
    reply = await api.patch(
        f"{PATH}/{service_id}", world.manager, {"signing_secret": SIGNING_SECRET}
    )
    assert reply.status == 200
    service = await stored(resources, service_id)
    assert decrypt_signing_secret(resources.secret_box, service) == SIGNING_SECRET
    assert (
        await api.patch(f"{PATH}/{service_id}", world.manager, {"enabled": False})
    ).status == 200
    service = await stored(resources, service_id)
    assert decrypt_signing_secret(resources.secret_box, service) == SIGNING_SECRET
    reply = await api.patch(f"{PATH}/{service_id}", world.manager, {"signing_secret": None})
    assert reply.status == 200
    data = (await api.get(f"{PATH}/{service_id}", world.manager)).data
    assert data["has_signing_secret"] is False
    assert decrypt_signing_secret(resources.secret_box, await stored(resources, service_id)) is None


# --- access -----------------------------------------------------------------------------------


async def test_group_visibility(api: ApiClient, world: World) -> None:
    service_id = await create(api, world.manager)
    assert (await api.get(f"{PATH}/{service_id}", world.member)).status == 200
    hidden = await api.get(f"{PATH}/{service_id}", world.outsider)
    assert (hidden.status, hidden.message) == (403, "Cannot access this Analysis Service.")
    assert service_id not in [s["id"] for s in (await api.get(PATH, world.outsider)).data]
    assert service_id in [s["id"] for s in (await api.get(PATH, world.admin)).data]
    assert (await api.get(f"{PATH}/{service_id}", world.admin)).status == 200


async def test_acl_and_membership_enforced(
    api: ApiClient, world: World, resources: Resources
) -> None:
    sent = body()
    refused = await api.post(PATH, world.member, sent)
    assert (refused.status, refused.message) == (
        401,
        "This endpoint requires the ACL: Manage Analysis Services",
    )
    assert await count_named(resources, sent["name"]) == 0
    assert (await api.post(PATH, None, body())).status == 401

    service_id = await create(api, world.manager)
    path = f"{PATH}/{service_id}"
    assert (await api.patch(path, world.member, {"version": "x"})).status == 401
    assert (await api.delete(path, world.member)).status == 401
    reply = await api.patch(path, world.outsider, {"version": "x"})
    assert (reply.status, reply.message) == (403, "Cannot access this Analysis Service.")
    reply = await api.delete(path, world.outsider)
    assert (reply.status, reply.message) == (403, "Cannot delete this Analysis Service.")
    assert (await api.get(path, world.manager)).data["version"] is None

    # A group the caller does not belong to cannot be named on creation (admins may).
    reply = await api.post(PATH, world.manager, body(group_ids=[world.other_group.id]))
    assert reply.status == 403
    assert reply.message == f"Cannot find one or more groups with IDs: [{world.other_group.id}]."
    ok = await api.post(PATH, world.admin, body(group_ids=[world.other_group.id]))
    assert ok.status == 200
    assert (await api.patch(path, world.admin, {"version": "admin"})).status == 200
    assert (await api.delete(path, world.admin)).status == 200


async def test_delete_removes_analyses_artifacts_and_their_summaries(
    api: ApiClient, world: World, resources: Resources
) -> None:
    service_id = await create(api, world.manager, is_summary=True)
    keep_service = await create(api, world.manager)
    obj_id = unique("ZTF")
    async with resources.sessions.begin() as session:
        session.add(Obj(id=obj_id, ra=1.0, dec=2.0))
        await session.flush()
        doomed = _analysis(obj_id, world.manager.id, service_id)
        kept = _analysis(obj_id, world.manager.id, keep_service)
        session.add_all([doomed, kept])
        await session.flush()
        obj = await session.get(Obj, obj_id)
        assert obj is not None
        obj.summary = "new"
        obj.summary_history = [
            {"summary": "new", "analysis_id": doomed.id},
            {"summary": "old", "analysis_id": kept.id},
        ]
        doomed_id, doomed_uid, kept_uid = doomed.id, doomed.unique_id, kept.unique_id
        kept_id = kept.id
    doomed_only = f"doomed {doomed_uid}".encode()
    await put_artifact(resources, doomed_id, "results.json", b"{}", "application/json")
    await put_artifact(resources, doomed_id, "own.json", doomed_only, "application/json")
    shared = await put_artifact(resources, kept_id, "results.json", b"{}", "application/json")

    assert (await api.delete(f"{PATH}/{service_id}", world.manager)).status == 200
    async with resources.sessions() as session:
        assert await session.get(ObjAnalysis, doomed_id) is None
        remaining = await session.scalars(select(ObjAnalysis).where(ObjAnalysis.obj_id == obj_id))
        assert [a.unique_id for a in remaining] == [kept_uid]
        obj = await session.get(Obj, obj_id)
        assert obj is not None
        assert obj.summary == "old" and [e["summary"] for e in obj.summary_history] == ["old"]
    assert await links_of(resources, [doomed_id]) == 0
    assert await unreferenced_blobs(resources) == []
    assert not await blob_exists(resources, hashlib.sha256(doomed_only).hexdigest())
    assert await artifact_names(resources, kept_uid) == ["results.json"]
    assert await resources.artifacts.read(shared) == b"{}"


def _analysis(obj_id: str, author_id: int, service_id: int) -> ObjAnalysis:
    unique_id = str(uuid.uuid4())
    return ObjAnalysis(
        unique_id=unique_id,
        obj_id=obj_id,
        author_id=author_id,
        analysis_service_id=service_id,
        token_hash=hash_token(unique_id),
        status="completed",
        invalid_after=utcnow() + timedelta(hours=1),
    )
