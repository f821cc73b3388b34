"""What Stripe's answer to a subscription update says about the change: applied, or waiting for a
payment (``payment_behavior=pending_if_incomplete`` keeps it in ``pending_update`` until the
update's invoice is paid, or drops it when ``expires_at`` passes)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def payment_wait(subscription: Mapping[str, Any]) -> dict[str, Any] | None:
    """None when the update is applied; else why it waits (``payment`` or ``customer_action``, when
    the latest invoice's payment needs the customer), until when, and on which invoice."""
    pending = subscription.get("pending_update")
    if not pending:
        return None
    invoice = subscription.get("latest_invoice")
    invoice_id = invoice.get("id") if isinstance(invoice, Mapping) else invoice
    invoice_status = invoice.get("status") if isinstance(invoice, Mapping) else None
    needs_action = subscription.get("status") == "incomplete" or (
        isinstance(invoice, Mapping) and invoice.get("status") == "open" and invoice.get("attempted") is False
    )
    expires = pending.get("expires_at") if isinstance(pending, Mapping) else None
    return {
        "waiting_for": "customer_action" if needs_action else "payment",
        "expires_at": None
        if expires is None
        else datetime.fromtimestamp(int(expires), UTC).isoformat().replace("+00:00", "Z"),
        "latest_invoice": invoice_id,
        "invoice_status": invoice_status,
    }
