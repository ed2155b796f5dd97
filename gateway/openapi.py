"""The OpenAPI document, built from the same route table that registers the routes."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from shared import __version__
from shared.web import Route

_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "obj": "object"}


def openapi_path(path: str) -> str:
    return _PARAM.sub(r"{\1}", path)


def _schema(kind: Any) -> dict[str, Any]:
    if isinstance(kind, dict):
        return {"type": "object", "properties": {k: _schema(v) for k, v in kind.items()}}
    if isinstance(kind, str) and kind.startswith("[") and kind.endswith("]"):
        return {"type": "array", "items": _schema(kind[1:-1])}
    return {"type": _TYPES.get(str(kind), "string")}


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(route.path)
        ]
        + [{"name": q, "in": "query", "schema": {"type": "string"}} for q in route.query],
        "responses": {
            "200": {"description": "success envelope"},
            **{str(code): {"description": text} for code, text in route.responses.items()},
            "400": {"description": "error envelope: invalid input"},
        },
    }
    if route.auth:
        operation["security"] = [{"token": []}]
    if route.body is not None:
        operation["requestBody"] = {
            "content": {"application/json": {"schema": _schema(route.body)}}
        }
    return operation


def build_document(routes: list[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "skyhook", "version": __version__},
        "components": {
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`Authorization: token <token>`",
                }
            }
        },
        "paths": paths,
    }


def openapi_handler(routes: list[Route]) -> Route:
    document: dict[str, Any] = {}

    async def get_openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    route = Route(
        "GET", "/api/openapi.json", get_openapi, "This OpenAPI document", "meta", auth=False
    )
    document.update(build_document([*routes, route]))
    return route
