"""Internal API for the support desk's view of one workspace: its timeline (transitions, inbox
events, plan changes, AI credits; newest first, paged by cursor) and finding a workspace by its
id or a Stripe customer or subscription id."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers.timeline import KINDS, Cursor, encode_cursor, timeline_item
from worker.api.events import CURSOR_PARAM, LIMIT_PARAM, PAGE, page_cursor, page_limit
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
    query_param,
)
from worker.errors import InvalidInput, NotFound
from worker.http.params import WORKSPACE_ID, workspace_id_of
from worker.services import SERVICES
from worker.storage import timeline


async def get_timeline(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    workspace_id = workspace_id_of(request)
    limit, cursor = page_limit(request), page_cursor(request)
    if not await timeline.workspace_exists(services.pool, workspace_id):
        raise NotFound("workspace_not_found", f"no billing state for workspace {workspace_id!r}")
    rows = await timeline.timeline_page(services.pool, workspace_id, limit + 1, cursor)
    page = rows[:limit]
    items = [timeline_item(r["kind"], r["at"], r["data"]) for r in page]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor(Cursor(last["at"], last["kind"], items[-1]["id"]))
    return web.json_response({"workspace_id": workspace_id, "items": items, "next_cursor": next_cursor})


async def lookup(request: web.Request) -> web.Response:
    query = request.query.get("q", "")
    if not WORKSPACE_ID.fullmatch(query):
        raise InvalidInput(
            "invalid_query",
            "`q` must be a workspace id, a Stripe customer id (cus_…) or subscription id (sub_…)",
        )
    found = await timeline.lookup(request.app[SERVICES].pool, query)
    if found is None:
        raise NotFound("workspace_not_found", f"no workspace, customer or subscription {query!r}")
    return web.json_response({"workspace_id": found[0], "matched": found[1]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/workspaces/{workspace_id}/timeline", get_timeline)
    app.router.add_get("/v1/lookup", lookup)


CAUSE = obj(
    {"kind": {"type": "string", "enum": ["event", "request", "job", "sweep"]}, "id": {"type": "string"}},
    {"event_type": STRING_OR_NULL, "api_version": STRING_OR_NULL},
)
ITEM = obj(
    {
        "at": TIME,
        "kind": {"type": "string", "enum": list(KINDS)},
        "id": {"type": "string"},
        "summary": {"type": "string"},
    },
    {
        # transition
        "version": INT,
        "cause": CAUSE,
        "changes": OBJ,
        # event
        "event_id": {"type": "string"},
        "type": {"type": "string"},
        "status": {"type": "string"},
        "last_error": STRING_OR_NULL,
        "api_version": STRING_OR_NULL,
        # plan change
        "change_id": {"type": "string"},
        "history": array(obj({"status": {"type": "string"}, "at": TIME})),
        "idempotency_key": {"type": "string"},
        "confirmed_event_id": STRING_OR_NULL,
        # credit
        "entry_id": INT,
        "delta": INT,
        "balance_after": INT,
        "source_key": {"type": "string"},
        "reason": STRING_OR_NULL,
    },
)

PATHS: dict[str, dict[str, Any]] = {
    "/v1/workspaces/{workspace_id}/timeline": {
        "get": operation(
            "getWorkspaceTimeline",
            "A workspace's history newest first: transitions, inbox events, plan changes, AI credits",
            obj({"workspace_id": WORKSPACE_ID_SCHEMA, "items": array(ITEM), **PAGE}),
            params=[WORKSPACE_PARAM, LIMIT_PARAM, CURSOR_PARAM],
        )
    },
    "/v1/lookup": {
        "get": operation(
            "lookupWorkspace",
            "Find a workspace by its id, a Stripe customer id or a subscription id",
            obj(
                {
                    "workspace_id": WORKSPACE_ID_SCHEMA,
                    "matched": {"type": "string", "enum": ["workspace", "customer", "subscription"]},
                }
            ),
            params=[{**query_param("q", WORKSPACE_ID_SCHEMA), "required": True}],
        )
    },
}
