"""Internal API routes for reading state: a workspace's billing state and one inbox event."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers.codec import to_jsonable
from worker.errors import NotFound
from worker.http.params import event_id_of, workspace_id_of
from worker.plan_changes.store import change_json, workspace_status
from worker.services import SERVICES
from worker.storage import inbox


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


async def get_event(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    event_id = event_id_of(request)
    row = await inbox.get_event(services.pool, event_id)
    if row is None:
        raise NotFound("event_not_found", f"no inbox event {event_id!r}")
    return web.json_response(to_jsonable(dict(row)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/workspaces/{workspace_id}", get_workspace)
    app.router.add_get("/v1/events/{event_id}", get_event)
