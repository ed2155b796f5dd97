"""Every /api route of every skyhook HTTP app is documented, and every documented route exists.

Apps are discovered rather than listed: any ``<package>/app.py`` of the skyhook packages with a
``create_…app(resources)`` factory is included, so apps added later are covered too.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.openapi import openapi_path
from gateway.routes import gateway_routes
from gateway.schemas import ROUTE_SCHEMAS
from shared.domain.enums import ACL
from shared.domain.ids import MAX_ID
from shared.runtime.resources import Resources
from skyhook.composition import platform_gateway_app
from tests.support.analyses import make_obj, make_service
from tests.support.api import Accounts, ApiClient
from webhook_receiver.routes import WEBHOOK_ROUTES

PACKAGES = ("gateway", "webhook_receiver", "summary_service", "dispatcher", "sn_fitter")
OPENAPI = "/api/openapi.json"
METHODS = {"get", "post", "put", "patch", "delete"}


def app_factories() -> Iterator[tuple[str, Callable[[Resources], web.Application]]]:
    for package in PACKAGES:
        module_name = f"{package}.app"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        for name, factory in inspect.getmembers(module, inspect.isfunction):
            takes_resources = _required_parameters(factory) == ["resources"]
            if name.startswith("create_") and name.endswith("app") and takes_resources:
                yield f"{module_name}.{name}", factory


def _required_parameters(factory: Callable[..., object]) -> list[str]:
    """Parameters without a default (the gateway's factory also takes optional mounts)."""
    parameters = inspect.signature(factory).parameters.values()
    return [p.name for p in parameters if p.default is inspect.Parameter.empty]


def api_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, OpenAPI path) of every route, leaving out aiohttp's implicit HEADs."""
    found = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method != "HEAD" and path.startswith("/"):
            found.add((route.method.upper(), openapi_path(path)))
    return found


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in METHODS
    }


async def fetch_document(app: web.Application) -> dict[str, Any]:
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        response = await client.get(OPENAPI)  # public: no Authorization header
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document
    finally:
        await client.close()


def test_the_known_apps_are_discovered() -> None:
    names = [name for name, _ in app_factories()]
    assert "gateway.app.create_gateway_app" in names
    assert "webhook_receiver.app.create_webhook_app" in names


async def test_gateway_document_matches_gateway_routes(resources: Resources) -> None:
    app = platform_gateway_app(resources)
    document = await fetch_document(app)
    assert document["openapi"].startswith("3.")
    routes = api_routes(app)
    assert ("POST", "/api/analysis_service") in routes
    assert routes == documented(document), {
        "undocumented": sorted(routes - documented(document)),
        "documented but missing": sorted(documented(document) - routes),
    }
    for operations in document["paths"].values():
        for operation in operations.values():
            assert operation["summary"] and operation["tags"]


@pytest.mark.parametrize(("name", "factory"), list(app_factories()), ids=lambda v: str(v))
async def test_every_app_route_is_documented(
    resources: Resources, name: str, factory: Callable[[Resources], web.Application]
) -> None:
    app = factory(resources)
    own = ("GET", OPENAPI) in api_routes(app)
    document = await fetch_document(app if own else platform_gateway_app(resources))
    missing = api_routes(app) - documented(document)
    assert not missing, f"{name}: routes missing from {OPENAPI}: {sorted(missing)}"


async def test_documented_path_parameters_match_the_path(resources: Resources) -> None:
    document = await fetch_document(platform_gateway_app(resources))
    for path, operations in document["paths"].items():
        in_path = set(re.findall(r"\{(\w+)\}", path))
        for method, operation in operations.items():
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == in_path, (method, path)


# --- the typed bodies ---------------------------------------------------------------------

ERROR_STATUSES = {"400", "403", "404", "405", "503"}


def test_every_gateway_route_has_typed_bodies() -> None:
    """A route added without an entry in gateway.schemas fails here (and the document with it).
    The gateway serves its own table and the webhook route the composition root mounts."""
    served = [*gateway_routes(), *WEBHOOK_ROUTES]
    routes = {(r.method.upper(), openapi_path(r.path)) for r in served}
    assert routes - set(ROUTE_SCHEMAS) == set(), "routes without typed bodies"
    assert set(ROUTE_SCHEMAS) - routes == set(), "typed bodies of routes that do not exist"


async def test_every_operation_documents_its_answers(resources: Resources) -> None:
    document = await fetch_document(platform_gateway_app(resources))
    schemas = document["components"]["schemas"]
    error = {"$ref": "#/components/schemas/ErrorEnvelope"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = (method, path)
            responses = operation["responses"]
            assert responses["200"]["content"], where
            for answer in responses["200"]["content"].values():
                assert answer["schema"], where
            expected = set(ERROR_STATUSES)
            if operation.get("security"):
                expected.add("401")
            if "requestBody" in operation:
                expected.add("413")
                (body,) = operation["requestBody"]["content"].values()
                assert body["schema"]["$ref"].split("/")[-1] in schemas, where
            assert expected <= set(responses), (where, sorted(expected - set(responses)))
            assert "Allow" in responses["405"]["headers"], where
            if path != "/readyz":
                for code in expected:
                    assert responses[code]["content"]["application/json"]["schema"] == error
            for parameter in operation["parameters"]:
                if parameter["in"] == "path" and parameter["name"].endswith("_id"):
                    if parameter["name"] != "obj_id":
                        assert parameter["schema"] == {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": MAX_ID,
                        }, where
    assert "{model}" not in json.dumps(document)
    assert "$defs" not in json.dumps(document), "every definition sits in components.schemas"


def _validator(document: dict[str, Any], method: str, path: str) -> Draft202012Validator:
    answer = document["paths"][path][method.lower()]["responses"]["200"]
    schema = answer["content"]["application/json"]["schema"]
    registry: Registry = Registry().with_resource(
        "urn:openapi", Resource.from_contents(document, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": "urn:openapi#" + schema["$ref"][1:]}, registry=registry)


def assert_documented(document: dict[str, Any], method: str, path: str, body: Any) -> None:
    errors = [e.message for e in _validator(document, method, path).iter_errors(body)]
    assert not errors, (method, path, errors, body)


def assert_error_documented(document: dict[str, Any], body: Any) -> None:
    schema = {"$ref": "urn:openapi#/components/schemas/ErrorEnvelope"}
    registry: Registry = Registry().with_resource(
        "urn:openapi", Resource.from_contents(document, default_specification=DRAFT202012)
    )
    Draft202012Validator(schema, registry=registry).validate(body)


async def test_real_answers_validate_against_their_documented_schemas(
    resources: Resources, api: ApiClient, accounts: Accounts
) -> None:
    document = (await api.get(OPENAPI, None)).body
    group = await accounts.group()
    user = await accounts.user(acls=(ACL.RUN_ANALYSES,), groups=(group,))
    service = await make_service(resources, [group])
    obj_id = await make_obj(resources, [group])

    services = await api.get("/api/analysis_service", user)
    assert services.status == 200
    assert_documented(document, "GET", "/api/analysis_service", services.body)
    paged = await api.get("/api/analysis_service?pageNumber=1", user)
    assert_documented(document, "GET", "/api/analysis_service", paged.body)
    one = await api.get(f"/api/analysis_service/{service.id}", user)
    assert_documented(document, "GET", "/api/analysis_service/{analysis_service_id}", one.body)

    start = "/api/obj/{obj_id}/analysis/{analysis_service_id}"
    started = await api.post(f"/api/obj/{obj_id}/analysis/{service.id}", user, json={})
    assert started.status == 200, started.body
    assert_documented(document, "POST", start, started.body)
    analysis_id = started.data["id"]

    read = await api.get(f"/api/obj/analysis/{analysis_id}?includeAnalysisData=true", user)
    assert_documented(document, "GET", "/api/obj/analysis/{analysis_id}", read.body)
    for path in (f"/api/obj/analysis?objID={obj_id}", "/api/obj/analysis?numPerPage=5"):
        listed = await api.get(path, user)
        assert_documented(document, "GET", "/api/obj/analysis", listed.body)
    of_source = await api.get(f"/api/obj/{obj_id}/analysis", user)
    assert_documented(document, "GET", "/api/obj/{obj_id}/analysis", of_source.body)
    source = await api.get(f"/api/sources/{obj_id}?includeAnalyses=true", user)
    assert_documented(document, "GET", "/api/sources/{obj_id}", source.body)
    profile = await api.get("/api/internal/profile", user)
    assert_documented(document, "GET", "/api/internal/profile", profile.body)

    refused = await api.get(f"/api/obj/analysis/{analysis_id + 1000}", user)
    assert refused.status == 403
    assert_error_documented(document, refused.body)
