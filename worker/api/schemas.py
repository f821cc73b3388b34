"""OpenAPI schema pieces shared by the Billing page's route modules (plan changes, plan options,
checkout): the error body, the decision, the invoice preview, and the path parameter."""

from __future__ import annotations

from typing import Any

from handlers.catalog import INTERVALS, Catalog
from handlers.plan_policy import ROLES
from worker.api.change_params import (
    IDEMPOTENCY_KEY,
    MAX_ADDON_UNITS,
    MAX_BYTES,
    MAX_MEMBERS,
    MAX_SEATS,
    MAX_TIMESTAMP,
    MAX_URL,
    MIN_TIMESTAMP,
    REQUEST_ID,
)
from worker.api.openapi import ERROR_SCHEMA as ERROR_BODY
from worker.api.openapi import INT as INT  # re-exported: the route modules use sc.INT
from worker.api.openapi import TIME_OR_NULL
from worker.http.params import WORKSPACE_ID

JSON = "application/json"
STR_OR_NULL = {"type": ["string", "null"]}


def error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ERROR_BODY}}}


def ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


WORKSPACE_PARAM = {
    "name": "workspace_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": WORKSPACE_ID.pattern, "maxLength": 128},
}
REQUEST_ID_HEADER = {
    "name": "X-Request-Id",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": REQUEST_ID.pattern, "maxLength": 128},
}
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern, "maxLength": 200},
}

ROLE = {"type": "string", "enum": sorted(ROLES)}
PLAN = {"type": "string", "minLength": 1}
INTERVAL = {"type": ["string", "null"], "enum": [*INTERVALS, None]}
SEATS = {"type": "integer", "minimum": 1, "maximum": MAX_SEATS}
MEMBERS = {"type": "integer", "minimum": 0, "maximum": MAX_MEMBERS}
BYTES = {"type": "integer", "minimum": 0, "maximum": MAX_BYTES}
ADDON_UNITS = {"type": "integer", "minimum": 0, "maximum": MAX_ADDON_UNITS}
TIMESTAMP = {"type": "integer", "minimum": MIN_TIMESTAMP, "maximum": MAX_TIMESTAMP}
URL = {"type": "string", "format": "uri", "maxLength": MAX_URL, "pattern": "^https?://[A-Za-z0-9][^\\s]*$"}

DECISION: dict[str, Any] = {
    "type": "object",
    "required": ["kind", "reasons"],
    "properties": {
        "kind": {
            "type": "string",
            "enum": ["immediate", "at_period_end", "no_change", "blocked", "contact_sales"],
        },
        "reasons": {"type": "array", "items": {"type": "string"}},
        "effective_at": TIME_OR_NULL,
        "proration_behavior": STR_OR_NULL,
        "billing_cycle_anchor": STR_OR_NULL,
        "direction": {"type": "string"},
        "ends_subscription": {"type": "boolean"},
        "clears_cancellation": {"type": "boolean"},
        "keeps_trial_end": {"type": "boolean"},
        "requires_payment_method": {"type": "boolean"},
    },
}
PERIOD = {"type": "object", "properties": {"start": TIME_OR_NULL, "end": TIME_OR_NULL}}
INVOICE_PREVIEW: dict[str, Any] = {
    "type": ["object", "null"],
    "required": ["currency", "amount_due_now", "next_invoice", "lines", "proration_date"],
    "properties": {
        "currency": STR_OR_NULL,
        "amount_due_now": {"type": ["integer", "null"]},
        "next_invoice": {
            "type": ["object", "null"],
            "properties": {
                "amount_due": {"type": ["integer", "null"]},
                "period_start": TIME_OR_NULL,
                "period_end": TIME_OR_NULL,
            },
        },
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "description": STR_OR_NULL,
                    "price": STR_OR_NULL,
                    "quantity": {"type": ["integer", "null"]},
                    "amount": {"type": ["integer", "null"]},
                    "proration": {"type": "boolean"},
                    "period": PERIOD,
                },
            },
        },
        "proration_date": {"type": ["integer", "null"]},
    },
}
PLAN_CHANGE = {"type": ["object", "null"], "description": "the stored plan change (see docs/plan-changes.md)"}


def plan_branches(catalog: Catalog, *, paid_only: bool = False) -> list[dict[str, Any]]:
    """One ``anyOf`` branch per catalog plan: its name, the intervals it is offered in (Free: none,
    and no storage add-on units), so that every body the schema allows names a real choice."""
    branches: list[dict[str, Any]] = []
    for key, plan in sorted(catalog.plans.items()):
        if plan.is_free:
            if not paid_only:
                free = {
                    "plan": {"const": key},
                    "interval": {"type": "null"},
                    "storage_addon_units": {"maximum": 0},
                }
                branches.append({"properties": free})
            continue
        offered = [i for i in INTERVALS if i in plan.prices]
        branches.append(
            {"properties": {"plan": {"const": key}, "interval": {"enum": offered}}, "required": ["interval"]}
        )
    return branches
