"""The internal API's OpenAPI 3.1 document, built from the path items each API module exports, and
the helpers those modules describe their routes with.

A module that adds routes exports ``PATHS``: OpenAPI path items keyed by the aiohttp route
pattern, or a function of the ``Services`` returning them (for what depends on the catalog or the
clock: the plans a change may name, the backfill's 30-day window). ``worker.api.app`` keeps them
under ``DOCUMENTED_PATHS``; the builder merges them and includes a path only when a route for it
is registered, so the document never describes a route that does not exist.

Every operation has an ``operationId``, its parameters with their patterns and bounds, its body
schema and its answers' schemas, so that a client generator or schemathesis can use it: a value
the schema allows is never refused with a 400 (``tests/integration/test_openapi_schemathesis.py``).
``tests/integration/test_ops_api.py`` checks that every registered route is documented.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from worker.http.params import EVENT_ID, WORKSPACE_ID
from worker.services import SERVICES, Services

PathItems = Mapping[str, Mapping[str, Any]]
PathSource = PathItems | Callable[[Services], PathItems]
# The path items (or their builders) of the application's route modules.
DOCUMENTED_PATHS = web.AppKey("documented_paths", tuple)

Schema = dict[str, Any]
ERROR = {"$ref": "#/components/responses/Error"}
ERROR_SCHEMA: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
STRING_OR_NULL: Schema = {"type": ["string", "null"]}
TIME: Schema = {"type": "string", "format": "date-time"}
TIME_OR_NULL: Schema = {"type": ["string", "null"], "format": "date-time"}
INT: Schema = {"type": "integer"}
OBJ: Schema = {"type": "object"}
WORKSPACE_ID_SCHEMA: Schema = {"type": "string", "pattern": WORKSPACE_ID.pattern, "maxLength": 128}
EVENT_ID_SCHEMA: Schema = {"type": "string", "pattern": EVENT_ID.pattern, "maxLength": 254}
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


def obj(required: Mapping[str, Schema] | None = None, optional: Mapping[str, Schema] | None = None) -> Schema:
    """An object schema: these properties, the ``required`` ones always present."""
    required = dict(required or {})
    out: Schema = {"type": "object", "properties": {**required, **(optional or {})}}
    if required:
        out["required"] = sorted(required)
    return out


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def path_param(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query_param(name: str, schema: Schema, description: str = "") -> Schema:
    out = {"name": name, "in": "query", "required": False, "schema": schema}
    return {**out, "description": description} if description else out


WORKSPACE_PARAM = path_param("workspace_id", WORKSPACE_ID_SCHEMA)
EVENT_PARAM = path_param("event_id", EVENT_ID_SCHEMA)
REQUEST_ID_PARAM = {
    "name": "X-Request-Id",
    "in": "header",
    "required": False,
    "description": "kept in the audit log as the change's cause; a fresh one when absent",
    "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
}


def json_response(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def operation(
    operation_id: str,
    summary: str,
    ok: Schema,
    *,
    status: str = "200",
    params: Iterable[Schema] = (),
    body: Schema | None = None,
    errors: Iterable[int] = (400, 404),
    **responses: Schema,
) -> dict[str, Any]:
    """One operation: its answer ``status`` with schema ``ok``, the error answers ``errors`` (401
    always: every route but the probes needs the token), and any ``responses`` beside them."""
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {
            status: json_response(ok),
            "401": ERROR,
            **{str(code): ERROR for code in errors},
            **responses,
        },
    }
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def registered(app: web.Application) -> dict[str, set[str]]:
    """Route pattern → lower-case methods (HEAD, added by aiohttp for every GET, left out)."""
    out: dict[str, set[str]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method != "HEAD":
            out.setdefault(path, set()).add(route.method.lower())
    return out


def known_paths(sources: Iterable[PathSource], services: Services) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for source in sources:
        items = source(services) if callable(source) else source
        for path, item in items.items():
            merged.setdefault(path, {}).update(item)
    return merged


def build_openapi(app: web.Application) -> dict[str, Any]:
    routes = registered(app)
    paths = {
        path: {m: op for m, op in item.items() if m in routes.get(path, set())}
        for path, item in known_paths(app.get(DOCUMENTED_PATHS, ()), app[SERVICES]).items()
        if routes.get(path, set()) & set(item)
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "billing-worker internal API", "version": "1"},
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": json_response(ERROR_SCHEMA, "An error with a stable code")},
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(request.app))


PATHS: dict[str, dict[str, Any]] = {
    "/openapi.json": {
        "get": operation(
            "getOpenApi",
            "This document",
            {"type": "object", "required": ["openapi", "paths"]},
            errors=(),
        )
    }
}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_json)
