"""Stripe events for AI-credit and add-on scenarios (raw dicts, as Stripe would POST them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.support import stripe_factory as sf

PACK_1000, PACK_5000 = "price_ai_pack_1000", "price_ai_pack_5000"
PLUS_MONTHLY, STORAGE_100GB = "price_plus_monthly", "price_storage_100gb"


def pack_checkout(
    *,
    workspace_id: str | None,
    customer: str,
    session_id: str,
    invoice_id: str | None = None,
    packs: Sequence[tuple[str, int]] = ((PACK_1000, 1),),
    created: int = sf.T0,
    mode: str = "payment",
    payment_status: str = "paid",
    expand_line_items: bool = False,
    kind: str = "completed",
) -> dict[str, Any]:
    """``checkout.session.completed`` for a pack; with ``invoice_id`` the session created an invoice
    (``invoice_creation.enabled``), whose own ``invoice.paid`` describes the same purchase.
    ``kind`` ``async_payment_succeeded`` / ``async_payment_failed``: the outcome of a delayed payment
    method (pass the ``payment_status`` Stripe sends with it: ``paid`` / ``unpaid``)."""
    event = sf.checkout_completed_event(
        api_version=sf.ENDIVE,
        created=created,
        session_id=session_id,
        customer=customer,
        workspace_id=workspace_id,
        price_quantities=packs,
        mode=mode,
        payment_status=payment_status,
        expand_line_items=expand_line_items,
        event_id=f"evt_co_{session_id}_{invoice_id or 'noinv'}_{mode}_{payment_status}_{kind}",
    )
    event["type"] = f"checkout.session.{kind}"
    session = event["data"]["object"]
    session["invoice"] = invoice_id
    session["invoice_creation"]["enabled"] = invoice_id is not None
    return event


def paid_invoice(
    *,
    workspace_id: str | None,
    customer: str,
    invoice_id: str,
    lines: Sequence[sf.LineSpec],
    billing_reason: str,
    sub_id: str | None = None,
    kind: str = "paid",
    created: int = sf.T0,
) -> dict[str, Any]:
    """``invoice.paid`` (or ``payment_succeeded``) of an invoice with the given lines."""
    amount = sum(sf._line(line).amount for line in lines)
    return sf.invoice_event(
        kind,
        api_version=sf.ENDIVE,
        created=created,
        invoice_id=invoice_id,
        customer=customer,
        sub_id=sub_id,
        workspace_id=workspace_id,
        status="paid",
        amount_due=amount,
        amount_paid=amount,
        billing_reason=billing_reason,
        lines=lines,
        event_id=f"evt_{kind}_{invoice_id}",
    )


def pack_invoice(*, workspace_id: str | None, customer: str, invoice_id: str, **kw: Any) -> dict[str, Any]:
    """A paid one-off invoice for one 1,000-credit pack (what Checkout's invoice looks like)."""
    return paid_invoice(
        workspace_id=workspace_id,
        customer=customer,
        invoice_id=invoice_id,
        lines=[(PACK_1000, 1, 1_000)],
        billing_reason="manual",
        **kw,
    )


def cycle_invoice(
    *, workspace_id: str | None, customer: str, invoice_id: str, sub_id: str, seats: int = 3, **kw: Any
) -> dict[str, Any]:
    """A paid renewal of Plus (500 AI credits per cycle) that also carries proration lines."""
    return paid_invoice(
        workspace_id=workspace_id,
        customer=customer,
        invoice_id=invoice_id,
        sub_id=sub_id,
        lines=[(PLUS_MONTHLY, seats, 1_000 * seats), (PLUS_MONTHLY, 1, -300, True), (PACK_1000, 1, 1, True)],
        billing_reason="subscription_cycle",
        **kw,
    )
