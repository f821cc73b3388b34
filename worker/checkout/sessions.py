"""Creating a Stripe Checkout Session: load the workspace, let the policy decide, call Stripe.

Nothing is stored: the session's webhooks (``checkout.session.completed``, the subscription and
invoice events it causes) carry the workspace id and set the state like any other event. The
Stripe call carries an idempotency key derived from the caller's, so a retried request returns
the same session instead of a second one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from handlers.checkout import ALLOWED, SUBSCRIPTION_EXISTS, CheckoutRequest, decide_checkout, session_params
from handlers.codec import to_jsonable
from worker.errors import Conflict, Unavailable
from worker.infra.logging import get_logger
from worker.plan_changes.previews import load_view
from worker.services import Services

log = get_logger("checkout")


def checkout_key(workspace_id: str, key: str) -> str:
    """The Stripe idempotency key: the caller's, scoped to the workspace (at most 255 characters)."""
    return f"checkout:{workspace_id}:{key}"


async def create_session(
    services: Services, workspace_id: str, request: CheckoutRequest, key: str
) -> dict[str, Any]:
    """201's body ``{id, url, expires_at}``; 409 when the policy refuses, 502/503 from Stripe."""
    state, view = await load_view(services, workspace_id)
    decision = decide_checkout(view, request, services.clock(), services.catalog)
    if decision.kind == SUBSCRIPTION_EXISTS:
        raise Conflict(
            "subscription_exists",
            "the workspace has a live subscription: change it with POST "
            f"/v1/workspaces/{workspace_id}/plan-changes",
            plan_changes_path=f"/v1/workspaces/{workspace_id}/plan-changes",
        )
    if decision.kind != ALLOWED:
        code = "contact_sales_required" if decision.kind == "contact_sales" else "checkout_blocked"
        raise Conflict(
            code,
            f"checkout cannot start: {decision.kind} ({', '.join(decision.reasons)})",
            decision=to_jsonable(decision.plan_decision) if decision.plan_decision else None,
            reasons=list(decision.reasons),
        )
    if services.stripe is None:
        raise Unavailable("stripe_not_configured", "checkout needs STRIPE_API_KEY")
    params = session_params(workspace_id, state.customer_id, request, services.catalog)
    session = await services.stripe.create_checkout_session(params, checkout_key(workspace_id, key))
    log.info(
        "checkout_session_created", workspace_id=workspace_id, session_id=session.get("id"), kind=request.kind
    )
    return {"id": session["id"], "url": session.get("url"), "expires_at": _iso(session.get("expires_at"))}


def _iso(value: Any) -> str | None:
    return None if value is None else to_jsonable(datetime.fromtimestamp(int(value), UTC))
