"""The OpenAPI document, built from the same route table that registers the routes and says
who may call each (``security`` follows the access level)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from http_edge.web import MAX_ID, Route
from shared import __version__

_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
_STRING_PARAMETERS = frozenset({"obj_id", "token"})
_ID_QUERY_PARAMETERS = frozenset({"pageNumber", "analysisServiceID"})
_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "obj": "object"}


def openapi_path(path: str) -> str:
    return _PARAM.sub(r"{\1}", path)


def _schema(kind: Any) -> dict[str, Any]:
    if isinstance(kind, dict):
        return {"type": "object", "properties": {k: _schema(v) for k, v in kind.items()}}
    if isinstance(kind, str) and kind.startswith("[") and kind.endswith("]"):
        return {"type": "array", "items": _schema(kind[1:-1])}
    return {"type": _TYPES.get(str(kind), "string")}


def _path_schema(name: str) -> dict[str, Any]:
    """Ids and numbers are integers within the id columns' range; names are strings."""
    if name == "resource_type":
        return {"type": "string", "enum": ["obj"]}
    if name in _STRING_PARAMETERS:
        return {"type": "string"}
    return {"type": "integer", "minimum": 0, "maximum": MAX_ID}


def _query_schema(name: str) -> dict[str, Any]:
    if name in _ID_QUERY_PARAMETERS:
        return {"type": "integer", "minimum": 1 if name == "pageNumber" else 0, "maximum": MAX_ID}
    if name == "numPerPage":
        return {"type": "integer", "minimum": 1}
    return {"type": "string"}


def _error_responses(route: Route) -> dict[str, dict[str, str]]:
    """The error envelopes any route of its kind may answer with."""
    found = {
        "403": "error envelope: not allowed (permission, or a resource the caller cannot see)",
        "404": "error envelope: not found",
        "503": "error envelope: database unavailable (with Retry-After)",
    }
    if not route.access.public:
        found["401"] = "error envelope: missing, malformed or invalid token"
    if route.body is not None:
        found["413"] = "error envelope: request body too large"
    return {code: {"description": text} for code, text in found.items()}


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
            for name in _PARAM.findall(route.path)
        ]
        + [{"name": q, "in": "query", "schema": _query_schema(q)} for q in route.query],
        "responses": {
            "200": {"description": "success envelope"},
            **_error_responses(route),
            **{str(code): {"description": text} for code, text in route.responses.items()},
            "400": {"description": "error envelope: invalid input"},
        },
    }
    if not route.access.public:
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


OPENAPI_DOCUMENT = web.AppKey("openapi_document", dict[str, Any])


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_DOCUMENT])
