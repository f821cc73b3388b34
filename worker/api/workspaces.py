"""Internal API route for reading a workspace's billing state now (its history: ``api/timeline.py``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers.codec import to_jsonable
from worker.api.openapi import (
    INT,
    OBJ,
    STRING_OR_NULL,
    TIME,
    WORKSPACE_ID_SCHEMA,
    WORKSPACE_PARAM,
    array,
    obj,
    operation,
)
from worker.errors import NotFound
from worker.http.params import workspace_id_of
from worker.plan_changes.store import change_json, workspace_status
from worker.services import SERVICES


def workspace_json(row: Any, invoices: list[Any]) -> dict[str, Any]:
    view = dict(row["view"])
    block = view.pop("block")
    return {
        "workspace_id": row["workspace_id"],
        "customer_id": row["customer_id"],
        **view,
        "blocked": block is not None,
        "block": block,
        "block_reasons": block["reasons"] if block else [],
        "dunning_level": block["level"] if block else None,
        "open_invoices": [to_jsonable(dict(r)) for r in invoices],
        "version": row["version"],
        "updated_at": to_jsonable(row["updated_at"]),
    }


async def get_workspace(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    workspace_id = workspace_id_of(request)
    found = await workspace_status(services.pool, workspace_id)
    if found is None:
        raise NotFound("workspace_not_found", f"no billing state for workspace {workspace_id!r}")
    row, invoices, pending = found
    return web.json_response({**workspace_json(row, invoices), "pending_plan_change": change_json(pending)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/workspaces/{workspace_id}", get_workspace)


PLAN_CHANGE = obj(
    {
        "change_id": {"type": "string"},
        "workspace_id": {"type": "string"},
        "kind": {"type": "string", "enum": ["immediate", "at_period_end"]},
        "status": {"type": "string"},
        "idempotency_key": {"type": "string"},
        "created_at": TIME,
    },
    {"to_plan": {"type": "string"}, "to_seats": INT, "history": array(OBJ)},
)
WORKSPACE = obj(
    {
        "workspace_id": WORKSPACE_ID_SCHEMA,
        "customer_id": STRING_OR_NULL,
        "plan": {"type": "string"},
        "seats": INT,
        "status": {"type": "string"},
        "blocked": {"type": "boolean"},
        "block_reasons": array({"type": "string"}),
        "dunning_level": STRING_OR_NULL,
        "open_invoices": array(OBJ),
        "version": INT,
        "updated_at": TIME,
        "pending_plan_change": {"oneOf": [{"type": "null"}, PLAN_CHANGE]},
    }
)

PATHS: dict[str, dict[str, Any]] = {
    "/v1/workspaces/{workspace_id}": {
        "get": operation(
            "getWorkspace", "A workspace's billing state now", WORKSPACE, params=[WORKSPACE_PARAM]
        )
    }
}
