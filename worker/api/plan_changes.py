"""Internal API for plan changes: evaluate (dry run) or request, show and cancel the pending one.

Every field is validated before anything is read or written; a bad one gets a 400 with a code
naming it. Acting writes the change and its audit entry in one transaction, then (immediate
changes) calls Stripe with the change's idempotency key, or (period-end changes) defers the firing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers.catalog import Catalog
from worker.api import schemas as sc
from worker.api.change_params import parse_change_request, request_id_of
from worker.errors import InvalidInput, NotFound, UpstreamFailed
from worker.http.errors import read_json_object
from worker.http.params import workspace_id_of
from worker.plan_changes import requests as plan_changes
from worker.plan_changes.firing import send
from worker.plan_changes.previews import preview_change
from worker.plan_changes.store import active_change, change_json, decision_json, get_change
from worker.processing.after_commit import after_commit, after_plan_change, enqueue_fire
from worker.services import SERVICES, Services
from worker.storage import timeline


async def post_plan_change(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    workspace_id = workspace_id_of(request)
    request_id = request_id_of(request)
    body = await read_json_object(request)
    change_request, dry_run, preview = parse_change_request(body, services.catalog)
    if preview:
        decision, invoice = await preview_change(services, workspace_id, change_request)
        answer = {"dry_run": True, "decision": decision_json(decision), "plan_change": None}
        return web.json_response({**answer, "invoice_preview": invoice})
    if dry_run:
        decision, _view = await plan_changes.evaluate(services, workspace_id, change_request)
        return web.json_response({"dry_run": True, "decision": decision_json(decision), "plan_change": None})
    outcome = await plan_changes.request_change(services, workspace_id, change_request, request_id)
    for c in outcome.committed:
        await after_commit(services, c.workspace_id, c.version, c.changes, (), request_id)
    change = outcome.change
    status = 201
    if outcome.fire_now is not None:
        result = await send(services, outcome.fire_now, cause=("request", request_id))
        await after_plan_change(services, result.committed, result.change_id)
        change = change_json(await get_change(services.pool, outcome.fire_now))
        if result.outcome == "failed":
            raise UpstreamFailed(
                "stripe_rejected", f"Stripe refused the change: {result.error}", plan_change=change
            )
        # A transient Stripe error: the change stays claimed-free and the sweep retries it with
        # the same idempotency key; 202 tells the caller it is not applied yet.
        status = 200 if result.outcome == "applied" else 202
        answer = {"dry_run": False, "decision": decision_json(outcome.decision), "plan_change": change}
        return web.json_response({**answer, "payment_pending": result.payment_pending}, status=status)
    else:
        assert change is not None
        await enqueue_fire(services, change["change_id"], defer_until=outcome.defer_until, tag="due")
    answer = {"dry_run": False, "decision": decision_json(outcome.decision), "plan_change": change}
    return web.json_response({**answer, "payment_pending": None}, status=status)


async def get_plan_change(request: web.Request) -> web.Response:
    """The active change; with ``?status=all`` every change, newest first, each with its life."""
    services = request.app[SERVICES]
    workspace_id = workspace_id_of(request)
    status = request.query.get("status")
    if status is not None:
        if status != "all":
            raise InvalidInput("invalid_status", "`status` may only be `all` (every change, newest first)")
        if not await timeline.workspace_exists(services.pool, workspace_id):
            raise NotFound("workspace_not_found", f"no billing state for workspace {workspace_id!r}")
        rows = await timeline.plan_changes(services.pool, workspace_id)
        return web.json_response({"plan_changes": [change_json(r) for r in rows]})
    row = await active_change(services.pool, workspace_id)
    if row is None:
        raise NotFound("no_pending_plan_change", f"workspace {workspace_id!r} has no pending plan change")
    return web.json_response({"plan_change": change_json(row)})


async def delete_plan_change(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    workspace_id = workspace_id_of(request)
    request_id = request_id_of(request)
    change, committed = await plan_changes.cancel_change(services, workspace_id, request_id)
    await after_commit(services, committed.workspace_id, committed.version, committed.changes, (), request_id)
    return web.json_response({"plan_change": change})


def add_routes(app: web.Application) -> None:
    path = "/v1/workspaces/{workspace_id}/plan-changes"
    app.router.add_post(path, post_plan_change)
    app.router.add_get(path, get_plan_change)
    app.router.add_delete(path, delete_plan_change)


def _change_body(catalog: Catalog | None) -> dict[str, Any]:
    """The body ``parse_change_request`` accepts, with the running catalog's plans and intervals
    (an application built without a catalog, only to list its routes, gets any plan name)."""
    properties: dict[str, Any] = {
        "plan": {"type": "string", "enum": sorted(catalog.plans)} if catalog else sc.PLAN,
        "interval": sc.INTERVAL,
        "seats": sc.SEATS,
        "requested_by_role": sc.ROLE,
        "member_count": sc.MEMBERS,
        "storage_used_bytes": sc.BYTES,
        "has_payment_method": {"type": ["boolean", "null"]},
        "proration_date": {
            **sc.TIMESTAMP,
            "type": ["integer", "null"],
            "description": "a preview's proration_date, sent with the update",
        },
        "dry_run": {"type": ["boolean", "null"]},
        "preview": {"type": ["boolean", "null"], "description": "with dry_run: add invoice_preview"},
    }
    if catalog is None or catalog.storage_addons:
        properties["storage_addon_units"] = {
            **sc.ADDON_UNITS,
            "type": ["integer", "null"],
            "description": "the add-on units wanted in total; 0 removes",
        }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["plan", "seats", "requested_by_role", "member_count", "storage_used_bytes"],
        "properties": properties,
        **({"anyOf": sc.plan_branches(catalog)} if catalog else {}),
        # preview only with dry_run (nothing is acted on)
        "if": {"properties": {"preview": {"const": True}}, "required": ["preview"]},
        "then": {"properties": {"dry_run": {"const": True}}, "required": ["dry_run"]},
    }


_PAYMENT_PENDING = {
    "type": ["object", "null"],
    "description": "set when Stripe holds the change in pending_update until its invoice is paid",
    "properties": {
        "waiting_for": {"type": "string", "enum": ["payment", "customer_action"]},
        "expires_at": sc.TIME_OR_NULL,
        "latest_invoice": sc.STR_OR_NULL,
        "invoice_status": sc.STR_OR_NULL,
    },
}
_ANSWER = {
    "type": "object",
    "required": ["dry_run", "decision", "plan_change"],
    "properties": {
        "dry_run": {"type": "boolean"},
        "decision": sc.DECISION,
        "plan_change": sc.PLAN_CHANGE,
        "invoice_preview": sc.INVOICE_PREVIEW,
        "payment_pending": _PAYMENT_PENDING,
    },
}
_ONE = {"type": "object", "required": ["plan_change"], "properties": {"plan_change": sc.PLAN_CHANGE}}
_ALL = {
    "type": "object",
    "required": ["plan_changes"],
    "properties": {"plan_changes": {"type": "array", "items": sc.PLAN_CHANGE}},
}


def PATHS(services: Services) -> dict[str, dict[str, Any]]:
    """The path items; the body's plans and intervals are the running catalog's."""
    return {"/v1/workspaces/{workspace_id}/plan-changes": _plan_change_item(services.catalog)}


def _plan_change_item(catalog: Catalog | None) -> dict[str, Any]:
    return {
        "post": {
            "operationId": "requestPlanChange",
            "summary": "Decide (dry_run), preview (dry_run + preview) or request a plan, seat, interval or add-on change",
            "parameters": [sc.WORKSPACE_PARAM, sc.REQUEST_ID_HEADER],
            "requestBody": {"required": True, "content": {sc.JSON: {"schema": _change_body(catalog)}}},
            "responses": {
                "200": sc.ok("dry run or preview; or an immediate change applied", _ANSWER),
                "201": sc.ok("a period-end change stored pending", _ANSWER),
                "202": sc.ok(
                    "an immediate change not applied yet (Stripe was unavailable; retried)", _ANSWER
                ),
                "400": sc.error("a field is invalid (code names it)"),
                "401": sc.error("missing or wrong bearer token"),
                "404": sc.error("workspace_not_found"),
                "409": sc.error(
                    "plan_change_blocked, contact_sales_required, no_change, checkout_required, change_in_progress"
                ),
                "502": sc.error("stripe_rejected"),
                "503": sc.error("stripe_not_configured, stripe_unavailable"),
            },
        },
        "get": {
            "operationId": "getPlanChanges",
            "summary": "The workspace's active plan change; with status=all every change, newest first",
            "parameters": [
                sc.WORKSPACE_PARAM,
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["all"]},
                },
            ],
            "responses": {
                "200": sc.ok(
                    "the active change, or (status=all) every change with its history",
                    {"oneOf": [_ONE, _ALL]},
                ),
                "400": sc.error("invalid_workspace_id, invalid_status"),
                "401": sc.error("missing or wrong bearer token"),
                "404": sc.error("no_pending_plan_change, workspace_not_found"),
            },
        },
        "delete": {
            "operationId": "cancelPlanChange",
            "summary": "Cancel the active plan change",
            "parameters": [sc.WORKSPACE_PARAM, sc.REQUEST_ID_HEADER],
            "responses": {
                "200": sc.ok("canceled", _ONE),
                "400": sc.error("invalid_workspace_id, invalid_request_id"),
                "401": sc.error("missing or wrong bearer token"),
                "404": sc.error("workspace_not_found, no_pending_plan_change"),
                "409": sc.error("change_in_progress"),
            },
        },
    }
