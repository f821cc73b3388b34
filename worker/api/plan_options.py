"""Internal API: the Billing page's available actions, ``GET /v1/workspaces/{id}/plan-options``.

One option per catalog plan and offered interval, each decided by the plan policy exactly as
``POST …/plan-changes`` would decide it; one database read, no Stripe call, nothing written.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers.codec import to_jsonable
from worker.api import schemas as sc
from worker.api.change_params import parse_options_query
from worker.http.params import workspace_id_of
from worker.plan_changes.previews import options_for
from worker.services import SERVICES


async def get_plan_options(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    workspace_id = workspace_id_of(request)
    options_request = parse_options_query(request.query)
    found = await options_for(services, workspace_id, options_request)
    return web.json_response(
        {
            "workspace_id": workspace_id,
            "current": found.current,
            "contact_sales": found.contact_sales,
            "options": [
                {
                    "plan": o.plan,
                    "interval": o.interval,
                    "seats": o.seats,
                    "decision": to_jsonable(o.decision),
                }
                for o in found.options
            ],
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/workspaces/{workspace_id}/plan-options", get_plan_options)


def _query(name: str, schema: dict[str, Any], required: bool, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


_OPTIONS = {
    "type": "object",
    "required": ["workspace_id", "current", "contact_sales", "options"],
    "properties": {
        "workspace_id": {"type": "string"},
        "current": {
            "type": "object",
            "properties": {
                "plan": {"type": "string"},
                "interval": sc.STR_OR_NULL,
                "seats": sc.INT,
                "storage_addon_units": sc.INT,
            },
        },
        "contact_sales": {"type": "boolean"},
        "options": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["plan", "interval", "seats", "decision"],
                "properties": {
                    "plan": {"type": "string"},
                    "interval": sc.STR_OR_NULL,
                    "seats": sc.INT,
                    "decision": sc.DECISION,
                },
            },
        },
    },
}
PATHS: dict[str, dict[str, Any]] = {
    "/v1/workspaces/{workspace_id}/plan-options": {
        "get": {
            "operationId": "listPlanOptions",
            "summary": "Every plan x offered interval, each decided by the plan-change policy",
            "parameters": [
                sc.WORKSPACE_PARAM,
                _query("requested_by_role", sc.ROLE, True, "who asks"),
                _query("member_count", sc.MEMBERS, True, "members today"),
                _query("storage_used_bytes", sc.BYTES, True, "storage used today"),
                _query(
                    "has_payment_method",
                    {"type": "string", "enum": ["true", "false"]},
                    False,
                    "unknown if left out",
                ),
                _query("seats", sc.SEATS, False, "seats to decide paid options with (default: today's)"),
            ],
            "responses": {
                "200": sc.ok("the options", _OPTIONS),
                "400": sc.error("a query parameter is invalid (code names it)"),
                "401": sc.error("missing or wrong bearer token"),
                "404": sc.error("workspace_not_found"),
            },
        }
    }
}
