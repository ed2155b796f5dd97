"""Request bodies are checked by the models the OpenAPI document shows, so the two cannot drift.

For a few routes: the document names the route's model as its request body, a body breaking
that documented schema is refused with a 400, and the refusal is the model's own message.
"""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.schemas import ROUTE_SCHEMAS
from gateway.schemas.validation import validated
from shared.domain.enums import ACL
from shared.domain.errors import InvalidInput
from shared.runtime.resources import Resources
from tests.support.analyses import make_obj, make_service
from tests.support.api import Accounts, ApiClient, TestUser

OPENAPI = "/api/openapi.json"


def documented_model_name(document: dict[str, Any], method: str, path: str) -> str:
    body = document["paths"][path][method.lower()]["requestBody"]
    (content,) = body["content"].values()
    return str(content["schema"]["$ref"].split("/")[-1])


def breaks_documented_schema(document: dict[str, Any], name: str, body: Any) -> bool:
    registry: Registry = Registry().with_resource(
        "urn:openapi", Resource.from_contents(document, default_specification=DRAFT202012)
    )
    schema = {"$ref": f"urn:openapi#/components/schemas/{name}"}
    return not Draft202012Validator(schema, registry=registry).is_valid(body)


def model_refusal(method: str, path: str, body: dict[str, Any]) -> str:
    model = ROUTE_SCHEMAS[(method, path)].request
    assert model is not None
    with pytest.raises(InvalidInput) as refused:
        validated(model, body)
    return str(refused.value)


async def assert_refused_as_the_model_says(
    api: ApiClient,
    document: dict[str, Any],
    user: TestUser,
    route: tuple[str, str],
    url: str,
    body: dict[str, Any],
) -> None:
    method, path = route
    model = ROUTE_SCHEMAS[route].request
    assert model is not None
    name = documented_model_name(document, method, path)
    assert name == model.__name__, route
    assert breaks_documented_schema(document, name, body), (route, body)
    reply = await api.call(method, url, user, body)
    assert reply.status == 400, (route, reply.body)
    assert reply.message == model_refusal(method, path, body), route


async def test_bodies_breaking_the_document_get_the_models_refusal(
    resources: Resources, api: ApiClient, accounts: Accounts
) -> None:
    document = (await api.get(OPENAPI, None)).body
    group = await accounts.group()
    admin = await accounts.user(admin=True, groups=(group,))
    runner = await accounts.user(acls=(ACL.RUN_ANALYSES,), groups=(group,))
    service = await make_service(resources, [group])
    obj_id = await make_obj(resources, [group])

    cases: list[tuple[TestUser, tuple[str, str], str, dict[str, Any]]] = [
        (
            runner,
            ("POST", "/api/obj/{obj_id}/analysis/{analysis_service_id}"),
            f"/api/obj/{obj_id}/analysis/{service.id}",
            {"show_plots": "yes"},
        ),
        (admin, ("POST", "/api/groups"), "/api/groups", {"name": "g", "description": 7}),
        (admin, ("PATCH", "/api/user/{user_id}"), f"/api/user/{runner.id}", {"is_admin": None}),
        (admin, ("POST", "/api/instrument"), "/api/instrument", {"name": "cam", "filters": "g"}),
        (
            admin,
            ("PATCH", "/api/sources/{obj_id}"),
            f"/api/sources/{obj_id}",
            {"redshift": "high"},
        ),
        (runner, ("PUT", "/api/internal/profile/llm_key"), "/api/internal/profile/llm_key", {}),
        (
            admin,
            ("POST", "/api/analysis_service/{analysis_service_id}/default_analysis"),
            f"/api/analysis_service/{service.id}/default_analysis",
            {"source_filter": {"on_new_photometry": True}, "show_corner": 1},
        ),
    ]
    for user, route, url, body in cases:
        await assert_refused_as_the_model_says(api, document, user, route, url, body)


def test_a_validators_message_is_the_refusal_as_it_is() -> None:
    """No "Value error, " prefix, no field name added: the hand-written check's own words."""
    start = ("POST", "/api/obj/{obj_id}/analysis/{analysis_service_id}")
    assert model_refusal(*start, {"group_ids": [True]}) == (
        "Invalid group_ids: must be a list of integer group IDs"
    )
    user = ("POST", "/api/user")
    assert model_refusal(*user, {}) == "`username` is required and must be a non-empty string"
    groups = ("POST", "/api/source_groups")
    assert model_refusal(*groups, {"objId": "a"}) == (
        "One of inviteGroupIds or unsaveGroupIds is required"
    )
