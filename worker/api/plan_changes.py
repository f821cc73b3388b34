"""Internal API for plan changes: evaluate (dry run) or request, show and cancel the pending one.

Every field is validated before anything is read or written; a bad one gets a 400 with a code
naming it. Acting writes the change and its audit entry in one transaction, then (immediate
changes) calls Stripe with the change's idempotency key, or (period-end changes) defers the firing.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from aiohttp import web

from handlers.catalog import INTERVALS, Catalog
from handlers.codec import json_int
from handlers.plan_policy import ROLES, ChangeRequest
from worker.api.openapi import (
    OBJ,
    REQUEST_ID_PARAM,
    TIME,
    WORKSPACE_PARAM,
    array,
    json_response,
    obj,
    operation,
    query_param,
)
from worker.errors import InvalidInput, NotFound, UpstreamFailed
from worker.http.errors import read_json_object
from worker.http.params import workspace_id_of
from worker.plan_changes import requests as plan_changes
from worker.plan_changes.firing import send
from worker.plan_changes.store import active_change, change_json, decision_json, get_change
from worker.processing.after_commit import after_commit, after_plan_change, enqueue_fire
from worker.services import SERVICES, Services
from worker.storage import timeline

FIELDS = {
    "plan",
    "interval",
    "seats",
    "requested_by_role",
    "member_count",
    "storage_used_bytes",
    "has_payment_method",
    "dry_run",
}
# Bounds that keep values inside their Postgres columns (seats: integer; bytes: bigint).
MAX_SEATS = 1_000_000
MAX_MEMBERS = 10**7
MAX_BYTES = 2**62
REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def request_id_of(request: web.Request) -> str:
    """The caller's ``X-Request-Id`` (kept in the audit log), or a fresh one."""
    given = request.headers.get("X-Request-Id")
    if given is None:
        return "req_" + secrets.token_hex(12)
    if not REQUEST_ID.fullmatch(given):
        raise InvalidInput("invalid_request_id", "X-Request-Id is 1-128 of A-Z a-z 0-9 _ . : -")
    return given


def _int(body: dict[str, Any], name: str, minimum: int, maximum: int) -> int:
    value = body.get(name)
    if value is None:
        raise InvalidInput(f"missing_{name}", f"{name} is required")
    number = json_int(value)
    if number is None:
        raise InvalidInput(f"invalid_{name}", f"{name} must be an integer, got {type(value).__name__}")
    if not minimum <= number <= maximum:
        raise InvalidInput(f"invalid_{name}", f"{name} must be from {minimum} to {maximum}, got {number}")
    return number


def _bool(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"invalid_{name}", f"{name} must be true or false")
    return value


def parse_change_request(body: Any, catalog: Catalog) -> tuple[ChangeRequest, bool]:
    """Validate the JSON body; returns the request and ``dry_run``."""
    if not isinstance(body, dict):
        raise InvalidInput("invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidInput("unknown_field", f"unknown field(s): {', '.join(unknown)}")
    plan = body.get("plan")
    if plan is None:
        raise InvalidInput("missing_plan", "plan is required")
    if not isinstance(plan, str):
        raise InvalidInput("invalid_plan", "plan must be a string")
    if plan not in catalog.plans:
        raise InvalidInput(
            "unknown_plan", f"unknown plan {plan!r}; known: {', '.join(sorted(catalog.plans))}"
        )
    target = catalog.plans[plan]
    interval = body.get("interval")
    if interval is not None and not isinstance(interval, str):
        raise InvalidInput("invalid_interval", "interval must be a string or null")
    if target.is_free:
        if interval is not None:
            raise InvalidInput("interval_not_applicable", f"plan {plan!r} has no billing interval")
    else:
        if interval is None:
            raise InvalidInput("missing_interval", f"plan {plan!r} needs an interval")
        if interval not in INTERVALS:
            raise InvalidInput("unknown_interval", f"interval must be one of {', '.join(INTERVALS)}")
        if interval not in target.prices:
            raise InvalidInput(
                "interval_not_offered",
                f"plan {plan!r} is offered {', '.join(sorted(target.prices))}, not {interval}",
            )
    seats = _int(body, "seats", 1, MAX_SEATS)
    role = body.get("requested_by_role")
    if role is None:
        raise InvalidInput("missing_requested_by_role", "requested_by_role is required")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidInput(
            "invalid_requested_by_role", f"requested_by_role must be one of {', '.join(sorted(ROLES))}"
        )
    member_count = _int(body, "member_count", 0, MAX_MEMBERS)
    storage = _int(body, "storage_used_bytes", 0, MAX_BYTES)
    has_pm = _bool(body, "has_payment_method")
    dry_run = bool(_bool(body, "dry_run"))
    return ChangeRequest(plan, interval, seats, role, member_count, storage, has_pm), dry_run


async def post_plan_change(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    workspace_id = workspace_id_of(request)
    request_id = request_id_of(request)
    body = await read_json_object(request)
    change_request, dry_run = parse_change_request(body, services.catalog)
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
    else:
        assert change is not None
        await enqueue_fire(services, change["change_id"], defer_until=outcome.defer_until, tag="due")
    return web.json_response(
        {"dry_run": False, "decision": decision_json(outcome.decision), "plan_change": change},
        status=status,
    )


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


CHANGE = obj(
    {
        "change_id": {"type": "string"},
        "workspace_id": {"type": "string"},
        "kind": {"type": "string", "enum": ["immediate", "at_period_end"]},
        "status": {
            "type": "string",
            "enum": ["pending", "waiting_payment", "firing", "applied", "failed", "superseded", "canceled"],
        },
        "idempotency_key": {"type": "string"},
        "created_at": TIME,
    },
    {"history": array(obj({"status": {"type": "string"}, "at": TIME}))},
)
ANSWER = obj(
    {"dry_run": {"type": "boolean"}, "decision": OBJ, "plan_change": {"oneOf": [{"type": "null"}, CHANGE]}}
)


def change_request_schema(catalog: Catalog | None) -> dict[str, Any]:
    """The body ``parse_change_request`` accepts, the catalog's plans and intervals included (an
    application built without a catalog, to list its routes, gets the plan as any string)."""
    per_plan: list[dict[str, Any]] = []
    plans = catalog.plans if catalog is not None else {}
    for key, plan in sorted(plans.items()):
        if plan.is_free:
            per_plan.append({"properties": {"plan": {"const": key}, "interval": {"type": "null"}}})
        else:
            offered = [i for i in INTERVALS if i in plan.prices]
            per_plan.append(
                {
                    "properties": {"plan": {"const": key}, "interval": {"enum": offered}},
                    "required": ["interval"],
                }
            )
    count = {"type": "integer", "minimum": 0}
    schema = obj(
        {
            "plan": {"type": "string", "enum": sorted(plans)} if plans else {"type": "string"},
            "seats": {"type": "integer", "minimum": 1, "maximum": MAX_SEATS},
            "requested_by_role": {"type": "string", "enum": sorted(ROLES)},
            "member_count": {**count, "maximum": MAX_MEMBERS},
            "storage_used_bytes": {**count, "maximum": MAX_BYTES},
        },
        {
            "interval": {"type": ["string", "null"], "enum": [*INTERVALS, None]},
            "has_payment_method": {"type": ["boolean", "null"]},
            "dry_run": {"type": ["boolean", "null"]},
        },
    )
    schema["additionalProperties"] = False
    return {**schema, "anyOf": per_plan} if per_plan else schema


def PATHS(services: Services) -> dict[str, dict[str, Any]]:
    """The path items; the body's plans and intervals are the running catalog's."""
    return {
        "/v1/workspaces/{workspace_id}/plan-changes": {
            "post": operation(
                "requestPlanChange",
                "Evaluate (dry_run) or request a plan change; immediate ones are sent to Stripe now",
                ANSWER,
                params=[WORKSPACE_PARAM, REQUEST_ID_PARAM],
                body=change_request_schema(services.catalog),
                errors=(400, 404, 409, 502, 503),
                **{"201": json_response(ANSWER, "pending"), "202": json_response(ANSWER, "not sent yet")},
            ),
            "get": operation(
                "getPlanChanges",
                "The workspace's pending plan change; with status=all every change, newest first",
                {"oneOf": [obj({"plan_change": CHANGE}), obj({"plan_changes": array(CHANGE)})]},
                params=[WORKSPACE_PARAM, query_param("status", {"type": "string", "enum": ["all"]})],
            ),
            "delete": operation(
                "cancelPlanChange",
                "Cancel the pending plan change",
                obj({"plan_change": CHANGE}),
                params=[WORKSPACE_PARAM, REQUEST_ID_PARAM],
                errors=(400, 404, 409),
            ),
        }
    }
