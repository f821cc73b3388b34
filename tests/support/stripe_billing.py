"""The Billing page's Stripe endpoints for the local server that plays Stripe
(``tests/support/stripe_server.py``): invoice previews, Checkout Sessions, and the checks on a
subscription update's proration and payment parameters.

Each endpoint CHECKS what the SDK sends the way Stripe does (unknown parameters, unknown prices,
quantities, ``proration_behavior``/``proration_date``/``billing_cycle_anchor`` rules, URLs,
the metadata that maps a session to a workspace, the idempotency key) and answers Stripe's error
object when something is wrong, so a wrong call fails the test instead of passing silently.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from tests.support import stripe_factory as sf

PRORATIONS = ("create_prorations", "none", "always_invoice")
ANCHORS = ("now", "unchanged")
PAYMENT_BEHAVIORS = ("allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete")
# Stripe: "When you use pending_if_incomplete you can only pass the parameters supported by pending updates."
PENDING_ALLOWED = {
    "expand",
    "payment_behavior",
    "proration_behavior",
    "proration_date",
    "billing_cycle_anchor",
    "items",
    "metadata",
    "trial_end",
    "trial_from_plan",
    "add_invoice_items",
}
PREVIEW_DETAILS = {"items", "proration_behavior", "proration_date", "billing_cycle_anchor", "start_date"}
SESSION_FIELDS = {
    "mode",
    "line_items",
    "success_url",
    "cancel_url",
    "client_reference_id",
    "metadata",
    "subscription_data",
    "customer",
    "invoice_creation",
}


class StripeRefusal(Exception):
    """A 400 Stripe would answer: ``invalid_request_error`` with ``message`` (and ``param``)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


def _digits(value: Any, param: str, minimum: int = 0) -> int:
    if not isinstance(value, str) or not value.isdigit() or int(value) < minimum:
        raise StripeRefusal(f"Invalid integer: {value!r}", param)
    return int(value)


def _price(value: Any, param: str) -> sf.Price:
    if not isinstance(value, str) or value not in sf.PRICES:
        raise StripeRefusal(f"No such price: '{value}'", param)
    return sf.PRICES[value]


def _period(sub: dict[str, Any]) -> tuple[int, int]:
    first = sub["items"]["data"][0]
    start = first.get("current_period_start", sub.get("current_period_start"))
    end = first.get("current_period_end", sub.get("current_period_end"))
    return int(start), int(end)


def check_proration(params: dict[str, Any], sub: dict[str, Any]) -> None:
    """Stripe's rules on ``proration_behavior``, ``proration_date`` and ``billing_cycle_anchor``."""
    behavior = params.get("proration_behavior", "create_prorations")
    if behavior not in PRORATIONS:
        raise StripeRefusal(f"Invalid proration_behavior: {behavior}", "proration_behavior")
    if "proration_date" in params:
        if behavior == "none":
            raise StripeRefusal(
                "proration_date cannot be set when proration_behavior is none", "proration_date"
            )
        start, end = _period(sub)
        date = _digits(params["proration_date"], "proration_date")
        if not start <= date <= end:
            raise StripeRefusal("proration_date must be within the current period", "proration_date")
    anchor = params.get("billing_cycle_anchor")
    if anchor is not None and (not isinstance(anchor, dict) or anchor.get("type") not in ANCHORS):
        raise StripeRefusal(f"Invalid billing_cycle_anchor: {anchor!r}", "billing_cycle_anchor")


def check_update(params: dict[str, Any], sub: dict[str, Any]) -> str | None:
    """Checks of ``POST /v1/subscriptions/{id}``; returns the payment behavior sent."""
    check_proration(params, sub)
    behavior = params.get("payment_behavior")
    if behavior is not None and behavior not in PAYMENT_BEHAVIORS:
        raise StripeRefusal(f"Invalid payment_behavior: {behavior}", "payment_behavior")
    if behavior == "pending_if_incomplete":
        extra = sorted(set(params) - PENDING_ALLOWED)
        if extra:
            raise StripeRefusal(
                f"pending_if_incomplete does not support these parameters: {', '.join(extra)}", extra[0]
            )
    return behavior


def _new_items(sub: dict[str, Any], items: list[Any]) -> list[tuple[sf.Price, int, str | None]]:
    """The subscription's items after ``items`` are applied: (price, quantity, item id)."""
    current = {
        i["id"]: (sf.price_info(i["price"]["id"]), int(i.get("quantity", 1))) for i in sub["items"]["data"]
    }
    out = dict(current)
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise StripeRefusal("Invalid array", f"items[{n}]")
        unknown = sorted(set(item) - {"id", "price", "quantity", "deleted"})
        if unknown:
            raise StripeRefusal(f"Received unknown parameter: items[{n}][{unknown[0]}]", f"items[{n}]")
        item_id = item.get("id")
        if item_id is not None and item_id not in current:
            raise StripeRefusal(f"No such subscription item: '{item_id}'", f"items[{n}][id]")
        if item.get("deleted") == "true":
            out.pop(item_id, None)
            continue
        if item_id is None and "price" not in item:
            raise StripeRefusal("A new item needs a price", f"items[{n}][price]")
        price = _price(item["price"], f"items[{n}][price]") if "price" in item else out[item_id][0]
        quantity = _digits(item["quantity"], f"items[{n}][quantity]", 1) if "quantity" in item else 1
        out[item_id or f"new_{n}"] = (price, quantity)
    return [(p, q, None if k.startswith("new_") else k) for k, (p, q) in out.items()] + [
        (p, 0, k) for k, (p, _q) in current.items() if k not in out
    ]


def _line(
    price: sf.Price, quantity: int, amount: int, start: int, end: int, proration: bool, desc: str
) -> dict[str, Any]:
    return {
        "id": "il_" + secrets.token_hex(6),
        "object": "line_item",
        "amount": amount,
        "currency": price.currency,
        "description": desc,
        "quantity": quantity,
        "period": {"start": start, "end": end},
        "pricing": {"type": "price_details", "price_details": {"price": price.id, "product": price.product}},
        "parent": {
            "type": "subscription_item_details",
            "subscription_item_details": {"proration": proration},
        },
    }


def preview_invoice(objects: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/invoices/create_preview`` for an existing subscription's update."""
    unknown = sorted(set(params) - {"customer", "subscription", "subscription_details"})
    if unknown:
        raise StripeRefusal(f"Received unknown parameter: {unknown[0]}", unknown[0])
    sub = objects.get(params.get("subscription", ""))
    if sub is None:
        raise StripeRefusal(f"No such subscription: '{params.get('subscription')}'", "subscription", 404)
    if "customer" in params and params["customer"] != sub["customer"]:
        raise StripeRefusal("The subscription does not belong to that customer", "customer")
    details = params.get("subscription_details") or {}
    extra = sorted(set(details) - PREVIEW_DETAILS)
    if extra:
        raise StripeRefusal(
            f"Received unknown parameter: subscription_details[{extra[0]}]", "subscription_details"
        )
    check_proration(details, sub)
    start, end = _period(sub)
    date = int(details.get("proration_date", time.time()))
    before = {
        i["id"]: (sf.price_info(i["price"]["id"]), int(i.get("quantity", 1))) for i in sub["items"]["data"]
    }
    after = _new_items(sub, details.get("items", []))
    anchor_now = (details.get("billing_cycle_anchor") or {}).get("type") == "now"
    prorate = details.get("proration_behavior", "create_prorations") != "none"
    lines = []
    fraction = max(end - date, 0) / (end - start)
    for price, quantity, item_id in after:
        old = before.get(item_id) if item_id else None
        if prorate and old is not None and old != (price, quantity):
            lines.append(
                _line(
                    old[0],
                    old[1],
                    -round(old[0].unit_amount * old[1] * fraction),
                    date,
                    end,
                    True,
                    f"Unused time on {old[0].nickname}",
                )
            )
            if not anchor_now and quantity:
                lines.append(
                    _line(
                        price,
                        quantity,
                        round(price.unit_amount * quantity * fraction),
                        date,
                        end,
                        True,
                        f"Remaining time on {price.nickname}",
                    )
                )
        if quantity:
            p_start = date if anchor_now else end
            lines.append(
                _line(
                    price,
                    quantity,
                    price.unit_amount * quantity,
                    p_start,
                    sf.period_end_for(price.id, p_start),
                    False,
                    f"{quantity} x {price.nickname}",
                )
            )
    total = sum(line["amount"] for line in lines)
    return {
        "id": "upcoming_in_" + secrets.token_hex(6),
        "object": "invoice",
        "customer": sub["customer"],
        "currency": "usd",
        "amount_due": max(total, 0),
        "total": total,
        "period_start": start,
        "period_end": end,
        "lines": {"object": "list", "data": lines, "has_more": False},
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": sub["id"], "subscription_proration_date": date},
        },
    }


def _http_url(value: Any, param: str) -> None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise StripeRefusal(f"Not a valid URL: {value!r}", param)


def checkout_session(params: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    """``POST /v1/checkout/sessions``: what billing-worker must send for its webhooks to map back."""
    if not idempotency_key:
        raise StripeRefusal("billing-worker always sends an Idempotency-Key for a Checkout Session", None)
    unknown = sorted(set(params) - SESSION_FIELDS)
    if unknown:
        raise StripeRefusal(f"Received unknown parameter: {unknown[0]}", unknown[0])
    mode = params.get("mode")
    if mode not in ("subscription", "payment"):
        raise StripeRefusal(f"Invalid mode: {mode!r}", "mode")
    _http_url(params.get("success_url"), "success_url")
    _http_url(params.get("cancel_url"), "cancel_url")
    items = params.get("line_items")
    if not isinstance(items, list) or not items:
        raise StripeRefusal("line_items are required", "line_items")
    for n, item in enumerate(items):
        price = _price(item.get("price"), f"line_items[{n}][price]")
        _digits(item.get("quantity"), f"line_items[{n}][quantity]", 1)
        if (price.interval is None) == (mode == "subscription"):
            raise StripeRefusal(
                f"{mode} mode needs {'recurring' if mode == 'subscription' else 'one-time'} prices",
                f"line_items[{n}]",
            )
    workspace = (params.get("metadata") or {}).get("workspace_id")
    if not workspace or params.get("client_reference_id") != workspace:
        raise StripeRefusal(
            "metadata[workspace_id] and client_reference_id must name the workspace", "metadata"
        )
    if (
        mode == "subscription"
        and ((params.get("subscription_data") or {}).get("metadata") or {}).get("workspace_id") != workspace
    ):
        raise StripeRefusal(
            "subscription_data[metadata][workspace_id] must name the workspace", "subscription_data"
        )
    session_id = "cs_test_" + secrets.token_hex(12)
    return {
        "id": session_id,
        "object": "checkout.session",
        "mode": mode,
        "status": "open",
        "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        "expires_at": int(time.time()) + 24 * 3600,
        "metadata": params.get("metadata"),
        "client_reference_id": params.get("client_reference_id"),
        "customer": params.get("customer"),
    }
