"""Internal API: ``POST /v1/workspaces/{id}/checkout-sessions`` — a Stripe Checkout Session for a
workspace without a live subscription (Free or ended → paid) or for an AI credit pack.

The body is validated (400 with a code per field), the ``Idempotency-Key`` header is required, the
policy decides (409), then Stripe creates the session (201 ``{id, url, expires_at}``). Nothing is
stored here: the session's webhooks carry the workspace id and set the state.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handlers.catalog import Catalog
from handlers.checkout import CREDIT_PACK, SUBSCRIPTION, CheckoutRequest
from worker.api import schemas as sc
from worker.api.change_params import (
    MAX_BYTES,
    MAX_MEMBERS,
    MAX_SEATS,
    http_url,
    idempotency_key_of,
    integer,
    plan_and_interval,
    role,
)
from worker.checkout.sessions import create_session
from worker.errors import InvalidInput
from worker.http.errors import read_json_object
from worker.http.params import workspace_id_of
from worker.services import SERVICES, Services

COMMON = {"kind", "success_url", "cancel_url", "requested_by_role"}
SUBSCRIPTION_FIELDS = frozenset(COMMON | {"plan", "interval", "seats", "member_count", "storage_used_bytes"})
PACK_FIELDS = frozenset(COMMON | {"price", "quantity"})
MAX_PACKS = 100


def parse_checkout(body: dict[str, Any], catalog: Catalog) -> CheckoutRequest:
    kind = body.get("kind")
    if kind is None:
        raise InvalidInput("missing_kind", "kind is required: subscription or credit_pack")
    if kind not in (SUBSCRIPTION, CREDIT_PACK):
        raise InvalidInput("invalid_kind", "kind must be subscription or credit_pack")
    allowed = SUBSCRIPTION_FIELDS if kind == SUBSCRIPTION else PACK_FIELDS
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(
            "unknown_field", f"unknown field(s) for {kind}: {', '.join(unknown)}", fields=unknown
        )
    urls = {"success_url": http_url(body, "success_url"), "cancel_url": http_url(body, "cancel_url")}
    requested_by = role(body)
    if kind == CREDIT_PACK:
        price = body.get("price")
        if price is None:
            raise InvalidInput("missing_price", "price is required")
        if not isinstance(price, str) or catalog.credit_pack(price) is None:
            known = ", ".join(p.price_id for p in catalog.credit_packs)
            raise InvalidInput("unknown_price", f"price must be a credit pack of the catalog: {known}")
        quantity = integer(body, "quantity", 1, MAX_PACKS, required=False) or 1
        return CheckoutRequest(kind, requested_by_role=requested_by, price=price, quantity=quantity, **urls)
    plan, interval = plan_and_interval(body, catalog)
    if catalog.plans[plan].is_free:
        raise InvalidInput("plan_not_purchasable", f"plan {plan!r} is free: there is nothing to check out")
    seats = integer(body, "seats", 1, MAX_SEATS)
    assert seats is not None
    return CheckoutRequest(
        kind,
        requested_by_role=requested_by,
        plan=plan,
        interval=interval,
        seats=seats,
        member_count=integer(body, "member_count", 0, MAX_MEMBERS, required=False) or 0,
        storage_used_bytes=integer(body, "storage_used_bytes", 0, MAX_BYTES, required=False) or 0,
        **urls,
    )


async def post_checkout_session(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    workspace_id = workspace_id_of(request)
    key = idempotency_key_of(request)
    body = await read_json_object(request)
    checkout = parse_checkout(body, services.catalog)
    session = await create_session(services, workspace_id, checkout, key)
    return web.json_response(session, status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/workspaces/{workspace_id}/checkout-sessions", post_checkout_session)


_URLS = {"success_url": sc.URL, "cancel_url": sc.URL}
_SUBSCRIPTION_BODY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "plan", "interval", "seats", "success_url", "cancel_url", "requested_by_role"],
    "properties": {
        "kind": {"const": SUBSCRIPTION},
        "plan": sc.PLAN,
        "interval": {"type": "string", "enum": list(sc.INTERVAL["enum"][:-1])},
        "seats": sc.SEATS,
        "requested_by_role": sc.ROLE,
        "member_count": sc.MEMBERS,
        "storage_used_bytes": sc.BYTES,
        **_URLS,
    },
}
_PACK_BODY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "price", "success_url", "cancel_url", "requested_by_role"],
    "properties": {
        "kind": {"const": CREDIT_PACK},
        "price": {"type": "string", "minLength": 1},
        "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_PACKS},
        "requested_by_role": sc.ROLE,
        **_URLS,
    },
}
_SESSION = {
    "type": "object",
    "required": ["id", "url", "expires_at"],
    "properties": {"id": {"type": "string"}, "url": sc.STR_OR_NULL, "expires_at": sc.TIME_OR_NULL},
}


def PATHS(services: Services) -> dict[str, dict[str, Any]]:
    """The path items; the plans, intervals and credit packs are the running catalog's."""
    return {"/v1/workspaces/{workspace_id}/checkout-sessions": _checkout_item(services.catalog)}


def _bodies(catalog: Catalog | None) -> list[dict[str, Any]]:
    if catalog is None:  # an application built only to list its routes
        return [_SUBSCRIPTION_BODY, _PACK_BODY]
    subscription = {
        **_SUBSCRIPTION_BODY,
        "properties": {
            **_SUBSCRIPTION_BODY["properties"],
            "plan": {"type": "string", "enum": sorted(k for k, p in catalog.plans.items() if not p.is_free)},
        },
        "anyOf": sc.plan_branches(catalog, paid_only=True),
    }
    pack = {
        **_PACK_BODY,
        "properties": {
            **_PACK_BODY["properties"],
            "price": {"type": "string", "enum": [p.price_id for p in catalog.credit_packs]},
        },
    }
    return [subscription, pack]


def _checkout_item(catalog: Catalog | None) -> dict[str, Any]:
    return {
        "post": {
            "operationId": "createCheckoutSession",
            "summary": "A Stripe Checkout Session: Free or ended → paid subscription, or an AI credit pack",
            "parameters": [sc.WORKSPACE_PARAM, sc.IDEMPOTENCY_HEADER],
            "requestBody": {
                "required": True,
                "content": {sc.JSON: {"schema": {"oneOf": _bodies(catalog)}}},
            },
            "responses": {
                "201": sc.ok("the session: redirect the customer to url", _SESSION),
                "400": sc.error("a field or the Idempotency-Key is invalid (code names it)"),
                "401": sc.error("missing or wrong bearer token"),
                "404": sc.error("workspace_not_found"),
                "409": sc.error("subscription_exists, checkout_blocked, contact_sales_required"),
                "502": sc.error("stripe_rejected"),
                "503": sc.error("stripe_not_configured, stripe_unavailable"),
            },
        }
    }
