"""Events of the recovery, reconciliation and CLI tests (integration and system alike)."""

from __future__ import annotations

import json
from typing import Any

from tests.support import stripe_factory as sf

DAY = 86_400


def orphan_invoice(ids: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A failed-payment event whose metadata does not name the workspace (its customer is unknown)."""
    events = sf.history_payment_failure(**ids, invoice_id=f"in_{ids['sub_id']}", outcome=None)
    failed = next(e for e in events if e["type"] == "invoice.payment_failed")
    orphan = json.loads(json.dumps(failed))
    orphan["data"]["object"]["parent"]["subscription_details"]["metadata"] = {}
    return orphan, events


def reconcile_sub_event(
    ids: dict[str, str], created: int, *, seats: int, status: str = "active", n: int = 0
) -> dict[str, Any]:
    """``customer.subscription.updated`` of Plus (monthly) with ``seats``, its period started 5 days before."""
    start = created - 5 * DAY
    return sf.subscription_event(
        "updated",
        api_version=sf.ENDIVE,
        created=created,
        event_id=f"evt_rc{n}_{ids['sub_id']}",
        sub_id=ids["sub_id"],
        customer=ids["customer"],
        workspace_id=ids["workspace_id"],
        status=status,
        items=[("price_plus_monthly", seats)],
        period_start=start,
        period_end=sf.period_end_for("price_plus_monthly", start),
    )
