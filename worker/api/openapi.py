"""The internal API's OpenAPI 3.1 document, built from the path items each API module exports.

A module that adds routes exports ``PATHS`` (OpenAPI path items keyed by the aiohttp route
pattern); ``worker.api.app`` keeps them under ``DOCUMENTED_PATHS`` on the application, and the
builder merges them and includes a path only when a route for it is registered, so the document
never describes a route that does not exist.
``tests/integration/test_ops_api.py`` checks the other direction: every registered route is documented.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

PathItems = Mapping[str, Mapping[str, Any]]
# The path items of the application's route modules.
DOCUMENTED_PATHS = web.AppKey("documented_paths", tuple)

_ERR = {"$ref": "#/components/responses/Error"}
_OBJ = {"content": {"application/json": {"schema": {"type": "object"}}}}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


# Routes of worker/api/workspaces.py, and those other issues announced (used only when their module does not
# export PATHS itself and the route is registered).
CORE_PATHS: dict[str, dict[str, Any]] = {
    "/v1/workspaces/{workspace_id}": {
        "get": {
            "summary": "A workspace's billing state",
            "parameters": [_path_param("workspace_id")],
            "responses": {"200": {"description": "state", **_OBJ}, "400": _ERR, "401": _ERR, "404": _ERR},
        }
    },
    "/v1/events/{event_id}": {
        "get": {
            "summary": "An inbox event: status, attempts, last error",
            "parameters": [_path_param("event_id")],
            "responses": {"200": {"description": "event", **_OBJ}, "400": _ERR, "401": _ERR, "404": _ERR},
        }
    },
}
_STD = {"200": {"description": "OK", **_OBJ}, "400": _ERR, "401": _ERR, "404": _ERR, "409": _ERR}
ANNOUNCED_PATHS: dict[str, dict[str, Any]] = {
    "/v1/workspaces/{workspace_id}/plan-changes": {
        method: {
            "summary": f"{method.upper()} the workspace's plan change",
            "parameters": [_path_param("workspace_id")],
            "responses": _STD,
        }
        for method in ("get", "post", "delete")
    },
    "/v1/workspaces/{workspace_id}/usage": {
        "put": {"summary": "Report usage", "parameters": [_path_param("workspace_id")], "responses": _STD}
    },
    "/v1/workspaces/{workspace_id}/ai-credits/consume": {
        "post": {
            "summary": "Consume AI credits",
            "parameters": [_path_param("workspace_id")],
            "responses": _STD,
        }
    },
    "/v1/workspaces/{workspace_id}/ai-credits/ledger": {
        "get": {
            "summary": "The AI credit ledger",
            "parameters": [_path_param("workspace_id")],
            "responses": _STD,
        }
    },
}


def registered(app: web.Application) -> dict[str, set[str]]:
    """Route pattern → lower-case methods (HEAD, added by aiohttp for every GET, left out)."""
    out: dict[str, set[str]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method != "HEAD":
            out.setdefault(path, set()).add(route.method.lower())
    return out


def known_paths(sources: Iterable[PathItems] = ()) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for source in (ANNOUNCED_PATHS, CORE_PATHS, *sources):
        for path, item in source.items():
            merged.setdefault(path, {}).update(item)
    return merged


def build_openapi(app: web.Application) -> dict[str, Any]:
    routes = registered(app)
    paths = {
        path: {m: op for m, op in item.items() if m in routes.get(path, set())}
        for path, item in known_paths(app.get(DOCUMENTED_PATHS, ())).items()
        if routes.get(path, set()) & set(item)
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "billing-worker internal API", "version": "1"},
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": {
                    "description": "An error with a stable code",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["error"],
                                "properties": {
                                    "error": {
                                        "type": "object",
                                        "required": ["code", "message"],
                                        "properties": {
                                            "code": {"type": "string"},
                                            "message": {"type": "string"},
                                        },
                                    }
                                },
                            }
                        }
                    },
                }
            },
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(request.app))
