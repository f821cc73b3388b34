"""Reads a Stripe invoice object of any supported API version into an ``InvoiceSnapshot``."""

from __future__ import annotations

from handlers.events import BILLING_REASONS, INVOICE_STATUSES, InvoiceLine, InvoiceSnapshot
from handlers.stripe_fields import FieldReader, workspace_of


def read_invoice(inv: FieldReader) -> InvoiceSnapshot:
    """The snapshot of ``inv``, taking the subscription, workspace and line prices from the basil
    (``parent`` / ``pricing``) or the pre-basil fields, whichever the payload has."""
    parent = inv.reader_or_none("parent")  # basil and later
    details = parent.reader_or_none("subscription_details") if parent else None
    legacy_details = inv.reader_or_none("subscription_details")  # before basil
    subscription_id = (details.opt_id("subscription") if details else None) or inv.opt_id("subscription")
    expanded_sub = inv.reader_or_none("subscription")
    customer = inv.reader_or_none("customer")
    workspace_id = (
        (workspace_of(details.metadata("metadata")) if details else None)
        or (workspace_of(legacy_details.metadata("metadata")) if legacy_details else None)
        or (workspace_of(expanded_sub.metadata("metadata")) if expanded_sub else None)
        or workspace_of(inv.metadata("metadata"))
        or (workspace_of(customer.metadata("metadata")) if customer else None)
    )
    status = inv.enum("status", INVOICE_STATUSES)  # an unknown one is kept (see INVOICE_STATUS_RANK)
    billing_reason = inv.opt_str("billing_reason")
    if billing_reason is not None and billing_reason not in BILLING_REASONS:
        inv.note(inv.path("billing_reason"), f"unknown value {billing_reason!r}")
    amount_due = inv.req_int("amount_due")
    amount_paid = inv.req_int("amount_paid")
    remaining = inv.opt_int("amount_remaining")
    return InvoiceSnapshot(
        invoice_id=inv.req_str("id"),
        customer_id=inv.req_id("customer"),
        subscription_id=subscription_id,
        status=status,
        currency=inv.req_str("currency"),
        amount_due=amount_due,
        amount_paid=amount_paid,
        amount_remaining=remaining if remaining is not None else max(amount_due - amount_paid, 0),
        attempt_count=inv.opt_int("attempt_count", minimum=0) or 0,
        next_payment_attempt=inv.opt_ts("next_payment_attempt"),
        billing_reason=billing_reason,
        created=inv.req_ts("created"),
        due_date=inv.opt_ts("due_date"),
        period_start=inv.opt_ts("period_start"),
        period_end=inv.opt_ts("period_end"),
        lines=tuple(_invoice_line(line) for line in inv.list_items("lines", required=False)),
        workspace_id=workspace_id,
    )


def _invoice_line(line: FieldReader) -> InvoiceLine:
    pricing = line.reader_or_none("pricing")  # basil and later
    price_details = pricing.reader_or_none("price_details") if pricing else None
    price_id = (
        (price_details.opt_id("price") if price_details else None)
        or line.opt_id("price")
        or line.opt_id("plan")
    )
    parent = line.reader_or_none("parent")
    if parent is not None:
        proration = False
        for key in ("subscription_item_details", "invoice_item_details"):
            details = parent.reader_or_none(key)
            if details is not None:
                proration = proration or details.opt_bool("proration")
    else:
        proration = line.opt_bool("proration")
    return InvoiceLine(
        price_id=price_id,
        quantity=line.opt_int("quantity", minimum=0) or 0,
        amount=line.req_int("amount"),
        proration=proration,
    )
