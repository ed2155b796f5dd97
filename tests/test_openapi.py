"""Every /api route of every skyhook HTTP app is documented, and every documented route exists.

Apps are discovered rather than listed: any ``<package>/app.py`` of the skyhook packages with a
``create_…app(resources)`` factory is included, so apps added later are covered too.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.openapi import openapi_path
from shared.runtime.resources import Resources
from skyhook.composition import platform_gateway_app

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
