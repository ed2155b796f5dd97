"""The OpenAPI document, built from the route table and the typed bodies of
``gateway.schemas``: request bodies from the request models, answers from the response models
(or the media types of binary answers), every error status with SkyPortal's error envelope;
``security`` and the 401 answer follow each route's access level."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway.schemas import ROUTE_SCHEMAS, BinaryContent, ErrorEnvelope, RouteSchemas
from http_edge.web import DATABASE_RETRY_AFTER_SECONDS, Route
from shared import __version__
from shared.domain.ids import MAX_ID

_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
_STRING_PARAMETERS = frozenset({"obj_id", "token", "name"})
_ID_QUERY_PARAMETERS = frozenset({"pageNumber", "analysisServiceID"})
REF_TEMPLATE = "#/components/schemas/{model}"

_ERRORS = {
    400: "invalid input",
    401: "missing, malformed or invalid token, or a permission (ACL) the caller lacks",
    403: "not allowed (permission, or a resource the caller cannot see)",
    404: "not found",
    405: "method not allowed on this path",
    413: "request body too large",
    503: "database unavailable; try again after Retry-After seconds",
}


def openapi_path(path: str) -> str:
    return _PARAM.sub(r"{\1}", path)


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


def schemas_of(route: Route) -> RouteSchemas:
    """The typed bodies of a route; KeyError names a route ``gateway.schemas`` lacks."""
    key = (route.method.upper(), openapi_path(route.path))
    try:
        return ROUTE_SCHEMAS[key]
    except KeyError:
        raise KeyError(f"no entry in gateway.schemas.ROUTE_SCHEMAS for {key}") from None


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _binary(content: BinaryContent, components: _Components) -> dict[str, Any]:
    schema = {"type": "string"} if content.items is None else components.ref(content.items)
    return {media: {"schema": schema} for media in content.media_types}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


class _Components:
    """Every model the document refers to, named once under ``components.schemas``."""

    def __init__(self, models: Iterable[type[BaseModel]]) -> None:
        unique = list(dict.fromkeys(models))
        mode: JsonSchemaMode = "validation"
        refs, schemas = models_json_schema(
            [(model, mode) for model in unique], ref_template=REF_TEMPLATE
        )
        self.schemas: dict[str, Any] = schemas.get("$defs", {})
        self._refs = {model: refs[(model, mode)] for model in unique}

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        return dict(self._refs[model])


def _models(entries: Iterable[RouteSchemas]) -> Iterable[type[BaseModel]]:
    yield ErrorEnvelope
    for entry in entries:
        if entry.request is not None:
            yield entry.request
        if isinstance(entry.response, BinaryContent):
            if entry.response.items is not None:
                yield entry.response.items
        else:
            yield entry.response
        yield from entry.statuses.values()


def _error_responses(route: Route, entry: RouteSchemas, components: _Components) -> dict[str, Any]:
    """The error answers any route of its kind may give, each with the error envelope."""
    codes = {400, 403, 404, 405, 503, *route.responses}
    if not route.access.public:
        codes.add(401)
    if entry.request is not None:
        codes.add(413)
    found: dict[str, Any] = {}
    for code in sorted(codes):
        text = "; ".join(t for t in (_ERRORS.get(code), route.responses.get(code)) if t)
        model = entry.statuses.get(code, ErrorEnvelope)
        answer: dict[str, Any] = {"description": text, "content": _json(components.ref(model))}
        if code == 405:
            answer["headers"] = {
                "Allow": {"description": "the methods this path has", "schema": {"type": "string"}}
            }
        if code == 503 and model is ErrorEnvelope:
            answer["headers"] = {
                "Retry-After": {
                    "description": f"seconds to wait ({DATABASE_RETRY_AFTER_SECONDS})",
                    "schema": {"type": "integer"},
                }
            }
        found[str(code)] = answer
    return found


def _success_response(entry: RouteSchemas, components: _Components) -> dict[str, Any]:
    response = entry.response
    if isinstance(response, BinaryContent):
        return {"description": response.description, "content": _binary(response, components)}
    content = _json(components.ref(response))
    if entry.also is not None:
        content.update(_binary(entry.also, components))
    return {"description": response.__doc__ or "success", "content": content}


def _operation(route: Route, components: _Components) -> dict[str, Any]:
    entry = schemas_of(route)
    operation: dict[str, Any] = {
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
            for name in _PARAM.findall(route.path)
        ]
        + [{"name": q, "in": "query", "schema": _query_schema(q)} for q in route.query],
        "responses": {
            "200": _success_response(entry, components),
            **_error_responses(route, entry, components),
        },
    }
    if not route.access.public:
        operation["security"] = [{"token": []}]
    if entry.request is not None:
        operation["requestBody"] = {"content": _json(components.ref(entry.request))}
    return operation


def build_document(routes: list[Route]) -> dict[str, Any]:
    components = _Components(_models(schemas_of(route) for route in routes))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation = _operation(route, components)
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "skyhook", "version": __version__},
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`Authorization: token <token>`",
                }
            },
        },
        "paths": paths,
    }


OPENAPI_DOCUMENT = web.AppKey("openapi_document", dict[str, Any])


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_DOCUMENT])
