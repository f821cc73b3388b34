"""Stripe Checkout for workspaces without a live subscription (Free, or one that ended) and for AI
credit packs (ALLO: "Available on: Free, trial, and paid workspaces"; "Moving from Free or Trial to
a paid plan … start the paid subscription now"; "Buy an AI credit pack: A one-time charge").

Pure: whether a session may be created (the plan policy still applies) and the
``checkout.sessions.create`` parameters, tagged so every webhook the session causes maps back to
the workspace (``metadata.workspace_id``, ``client_reference_id``, the subscription's metadata).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from handlers.catalog import Catalog
from handlers.plan_policy import (
    ADMIN_ROLES,
    BLOCKED,
    CONTACT_SALES,
    IMMEDIATE,
    LIVE_STATUSES,
    NOT_ADMIN,
    ChangeRequest,
    Decision,
    decide,
)
from handlers.state import WorkspaceView

SUBSCRIPTION = "subscription"
CREDIT_PACK = "credit_pack"
ALLOWED = "allowed"
SUBSCRIPTION_EXISTS = "subscription_exists"


@dataclass(frozen=True)
class CheckoutRequest:
    kind: str  # subscription | credit_pack
    success_url: str
    cancel_url: str
    requested_by_role: str
    plan: str | None = None
    interval: str | None = None
    seats: int = 1
    price: str | None = None  # credit packs
    quantity: int = 1
    member_count: int = 0
    storage_used_bytes: int = 0
    has_payment_method: bool | None = None


@dataclass(frozen=True)
class CheckoutDecision:
    kind: str  # allowed | blocked | contact_sales | subscription_exists
    reasons: tuple[str, ...] = ()
    plan_decision: Decision | None = None


def decide_checkout(
    view: WorkspaceView, request: CheckoutRequest, now: datetime, catalog: Catalog
) -> CheckoutDecision:
    """May this checkout start? Packs: an admin's purchase. Subscriptions: only without a live
    subscription (else the change goes through ``plan-changes``), and as the plan policy decides
    Free → paid (``not_admin``, ``contact_sales``, the other blockers); a payment method is what
    Checkout collects, so it is never a blocker here."""
    if request.kind == CREDIT_PACK:
        if request.requested_by_role not in ADMIN_ROLES:
            return CheckoutDecision(BLOCKED, (NOT_ADMIN,))
        return CheckoutDecision(ALLOWED)
    if view.subscription_id is not None and view.status in LIVE_STATUSES:
        return CheckoutDecision(SUBSCRIPTION_EXISTS, ("live_subscription",))
    assert request.plan is not None
    change = ChangeRequest(
        request.plan,
        request.interval,
        request.seats,
        request.requested_by_role,
        request.member_count,
        request.storage_used_bytes,
        has_payment_method=None,
    )
    decision = decide(view, change, now, catalog)
    if decision.kind == IMMEDIATE:
        return CheckoutDecision(ALLOWED, plan_decision=decision)
    kind = decision.kind if decision.kind in (BLOCKED, CONTACT_SALES) else BLOCKED
    return CheckoutDecision(kind, decision.reasons, decision)


def session_params(
    workspace_id: str, customer_id: str | None, request: CheckoutRequest, catalog: Catalog
) -> dict[str, Any]:
    """``checkout.sessions.create`` parameters: the catalog's price, the workspace on the session
    (metadata and ``client_reference_id``) and, for subscriptions, on the subscription it creates."""
    metadata = {"workspace_id": workspace_id}
    params: dict[str, Any] = {
        "success_url": request.success_url,
        "cancel_url": request.cancel_url,
        "client_reference_id": workspace_id,
        "metadata": metadata,
    }
    if request.kind == SUBSCRIPTION:
        assert request.plan is not None and request.interval is not None
        price = catalog.plans[request.plan].prices[request.interval]
        params["mode"] = "subscription"
        params["line_items"] = [{"price": price, "quantity": request.seats}]
        params["subscription_data"] = {"metadata": dict(metadata)}
    else:
        assert request.price is not None
        params["mode"] = "payment"
        params["line_items"] = [{"price": request.price, "quantity": request.quantity}]
        params["metadata"] = {**metadata, "price_id": request.price, "quantity": str(request.quantity)}
        params["invoice_creation"] = {"enabled": True, "invoice_data": {"metadata": dict(metadata)}}
    if customer_id is not None:
        params["customer"] = customer_id
    return params
