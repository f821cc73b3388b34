"""The internal API (separate port, bearer token): workspace state and inbox inspection.

Every route answers JSON; errors carry ``{"error": {"code", "message"}}``. Ids are validated
before any query so hostile input gets a 400 and touches nothing.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from handlers.codec import to_jsonable
from worker import plan_changes, store
from worker.hardening import guarded
from worker.http_errors import ApiError, error
from worker.services import SERVICES, Services

WORKSPACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
EVENT_ID = re.compile(r"^evt_[A-Za-z0-9_]{1,250}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes and scrapers reach these without the token: they reveal counts, never billing data.
UNAUTHENTICATED = frozenset({"/readyz", "/metrics"})


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in UNAUTHENTICATED and request.method == "GET":
        return await handler(request)
    expected = request.app[SERVICES].settings.internal_token or ""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    ok = (
        bool(expected)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.encode(), expected.encode())
    )
    if not ok:
        return error(401, "unauthorized", "a valid bearer token is required")
    return await handler(request)


def workspace_id_of(request: web.Request) -> str:
    workspace_id = request.match_info["workspace_id"]
    if not WORKSPACE_ID.fullmatch(workspace_id):
        raise ApiError(400, "invalid_workspace_id", "workspace ids are 1-128 of A-Z a-z 0-9 _ . : -")
    return workspace_id


def event_id_of(request: web.Request) -> str:
    event_id = request.match_info["event_id"]
    if not EVENT_ID.fullmatch(event_id):
        raise ApiError(400, "invalid_event_id", "event ids look like evt_ followed by letters, digits or _")
    return event_id


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
    found = await plan_changes.workspace_status(services.pool, workspace_id)
    if found is None:
        return error(404, "workspace_not_found", f"no billing state for workspace {workspace_id!r}")
    row, invoices, pending = found
    return web.json_response(
        {**workspace_json(row, invoices), "pending_plan_change": plan_changes.change_json(pending)}
    )


async def get_event(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    event_id = event_id_of(request)
    row = await store.get_event(services.pool, event_id)
    if row is None:
        return error(404, "event_not_found", f"no inbox event {event_id!r}")
    return web.json_response(to_jsonable(dict(row)))


def create_internal_app(services: Services) -> web.Application:
    # The route modules import this one's helpers, hence the local imports.
    from worker import api_ops, api_plan_changes, api_usage_credits

    app = web.Application(client_max_size=64 * 1024, middlewares=[guarded, bearer_auth])
    app[SERVICES] = services
    app.router.add_get("/v1/workspaces/{workspace_id}", get_workspace)
    app.router.add_get("/v1/events/{event_id}", get_event)
    api_usage_credits.add_routes(app)
    api_plan_changes.add_routes(app)
    api_ops.add_routes(app)
    return app
