"""Validation of what the Billing page's routes receive (plan-change bodies, plan-option queries,
checkout bodies and headers): every field checked before anything is read or written, each bad
one a 400 with a code naming it."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from handlers.catalog import INTERVALS, Catalog
from handlers.codec import json_int
from handlers.plan_options import OptionsRequest
from handlers.plan_policy import ROLES, ChangeRequest
from worker.errors import InvalidInput

FIELDS = frozenset(
    {
        "plan",
        "interval",
        "seats",
        "requested_by_role",
        "member_count",
        "storage_used_bytes",
        "has_payment_method",
        "storage_addon_units",
        "proration_date",
        "dry_run",
        "preview",
    }
)
OPTION_PARAMS = frozenset(
    {"requested_by_role", "member_count", "storage_used_bytes", "has_payment_method", "seats"}
)
# Bounds that keep values inside their Postgres columns (seats: integer; bytes: bigint).
MAX_SEATS = 1_000_000
MAX_MEMBERS = 10**7
MAX_BYTES = 2**62
MAX_ADDON_UNITS = 10_000
MIN_TIMESTAMP, MAX_TIMESTAMP = 1_000_000_000, 10_000_000_000
MAX_URL = 2048
REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
DIGITS = re.compile(r"^[0-9]{1,19}$")


def request_id_of(request: web.Request) -> str:
    """The caller's ``X-Request-Id`` (kept in the audit log), or a fresh one."""
    given = request.headers.get("X-Request-Id")
    if given is None:
        return "req_" + secrets.token_hex(12)
    if not REQUEST_ID.fullmatch(given):
        raise InvalidInput("invalid_request_id", "X-Request-Id is 1-128 of A-Z a-z 0-9 _ . : -")
    return given


def idempotency_key_of(request: web.Request) -> str:
    """The required ``Idempotency-Key`` header: 1-200 of A-Z a-z 0-9 _ . : -."""
    given = request.headers.get("Idempotency-Key")
    if given is None:
        raise InvalidInput("missing_idempotency_key", "the Idempotency-Key header is required")
    if not IDEMPOTENCY_KEY.fullmatch(given):
        raise InvalidInput("invalid_idempotency_key", "Idempotency-Key is 1-200 of A-Z a-z 0-9 _ . : -")
    return given


def integer(
    body: Mapping[str, Any], name: str, minimum: int, maximum: int, *, required: bool = True
) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"missing_{name}", f"{name} is required")
        return None
    number = json_int(value)  # 3.0 is an integer to JSON Schema (and to the OpenAPI clients)
    if number is None:
        raise InvalidInput(f"invalid_{name}", f"{name} must be an integer, got {type(value).__name__}")
    if not minimum <= number <= maximum:
        raise InvalidInput(f"invalid_{name}", f"{name} must be from {minimum} to {maximum}, got {number}")
    return number


def boolean(body: Mapping[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"invalid_{name}", f"{name} must be true or false")
    return value


def plan_and_interval(body: Mapping[str, Any], catalog: Catalog) -> tuple[str, str | None]:
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
        return plan, None
    if interval is None:
        raise InvalidInput("missing_interval", f"plan {plan!r} needs an interval")
    if interval not in INTERVALS:
        raise InvalidInput("unknown_interval", f"interval must be one of {', '.join(INTERVALS)}")
    if interval not in target.prices:
        raise InvalidInput(
            "interval_not_offered",
            f"plan {plan!r} is offered {', '.join(sorted(target.prices))}, not {interval}",
        )
    return plan, interval


def role(body: Mapping[str, Any]) -> str:
    value = body.get("requested_by_role")
    if value is None:
        raise InvalidInput("missing_requested_by_role", "requested_by_role is required")
    if not isinstance(value, str) or value not in ROLES:
        raise InvalidInput(
            "invalid_requested_by_role", f"requested_by_role must be one of {', '.join(sorted(ROLES))}"
        )
    return value


def addon_units(body: Mapping[str, Any], catalog: Catalog, plan: str) -> int | None:
    units = integer(body, "storage_addon_units", 0, MAX_ADDON_UNITS, required=False)
    if units is None:
        return None
    if not catalog.storage_addons:
        raise InvalidInput("storage_addon_not_offered", "the catalog has no storage add-on")
    if catalog.plans[plan].is_free and units > 0:
        raise InvalidInput(
            "storage_addon_not_applicable", f"plan {plan!r} takes no add-ons: they end on Free"
        )
    return units


def parse_change_request(body: Any, catalog: Catalog) -> tuple[ChangeRequest, bool, bool]:
    """Validate a plan-change body; returns the request, ``dry_run`` and ``preview``."""
    if not isinstance(body, dict):
        raise InvalidInput("invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidInput("unknown_field", f"unknown field(s): {', '.join(unknown)}")
    plan, interval = plan_and_interval(body, catalog)
    seats = integer(body, "seats", 1, MAX_SEATS)
    requested_by = role(body)
    member_count = integer(body, "member_count", 0, MAX_MEMBERS)
    storage = integer(body, "storage_used_bytes", 0, MAX_BYTES)
    has_pm = boolean(body, "has_payment_method")
    units = addon_units(body, catalog, plan)
    proration_date = integer(body, "proration_date", MIN_TIMESTAMP, MAX_TIMESTAMP, required=False)
    dry_run = bool(boolean(body, "dry_run"))
    preview = bool(boolean(body, "preview"))
    if preview and not dry_run:
        raise InvalidInput(
            "preview_needs_dry_run", "preview is given with dry_run: true (nothing is acted on)"
        )
    assert seats is not None and member_count is not None and storage is not None
    request = ChangeRequest(
        plan, interval, seats, requested_by, member_count, storage, has_pm, units, proration_date
    )
    return request, dry_run, preview


def _query_int(query: Mapping[str, str], name: str, maximum: int, minimum: int = 0) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not DIGITS.fullmatch(raw):
        raise InvalidInput(f"invalid_{name}", f"{name} must be an integer from {minimum} to {maximum}")
    return int(raw)


def parse_options_query(query: Mapping[str, str]) -> OptionsRequest:
    """Validate ``GET …/plan-options``'s query: the codes of the plan-change body's fields."""
    unknown = sorted(set(query) - OPTION_PARAMS)
    if unknown:
        raise InvalidInput("unknown_parameter", f"unknown query parameter(s): {', '.join(unknown)}")
    values: dict[str, Any] = {"requested_by_role": query.get("requested_by_role")}
    for name, low, high in (
        ("member_count", 0, MAX_MEMBERS),
        ("storage_used_bytes", 0, MAX_BYTES),
        ("seats", 1, MAX_SEATS),
    ):
        values[name] = _query_int(query, name, high, low)
    pm = query.get("has_payment_method")
    if pm is not None and pm not in ("true", "false"):
        raise InvalidInput("invalid_has_payment_method", "has_payment_method must be true or false")
    requested_by = role(values)
    members = integer(values, "member_count", 0, MAX_MEMBERS)
    storage = integer(values, "storage_used_bytes", 0, MAX_BYTES)
    seats = integer(values, "seats", 1, MAX_SEATS, required=False)
    assert members is not None and storage is not None
    return OptionsRequest(requested_by, members, storage, None if pm is None else pm == "true", seats)


def http_url(body: Mapping[str, Any], name: str) -> str:
    """An absolute http(s) URL with a host, at most 2048 characters (Stripe's limit is higher)."""
    value = body.get(name)
    if value is None:
        raise InvalidInput(f"missing_{name}", f"{name} is required")
    if not isinstance(value, str) or len(value) > MAX_URL or any(c.isspace() for c in value):
        raise InvalidInput(
            f"invalid_{name}", f"{name} must be an http(s) URL of at most {MAX_URL} characters"
        )
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"invalid_{name}", f"{name} must be an absolute http(s) URL")
    return value
