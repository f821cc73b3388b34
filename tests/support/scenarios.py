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


def tied_updates(
    ids: dict[str, str], created: int, tag: str, stripe: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two updates of one subscription stamped with the same second and saying different things
    (7 seats active, 3 seats past_due), and Stripe (``stripe``: the local server) knowing the first
    as the truth: the deterministic tie-break (higher event id) would keep the other, so the
    worker must ask Stripe (SPEC §4)."""
    truth = reconcile_sub_event(ids, created, seats=7, status="active")
    truth["id"] = f"evt_{tag}_a_{ids['sub_id']}"
    other = reconcile_sub_event(ids, created, seats=3, status="past_due")
    other["id"] = f"evt_{tag}_z_{ids['sub_id']}"
    stripe.put({"id": ids["customer"], "object": "customer"})
    stripe.put(truth["data"]["object"])
    return truth, other
