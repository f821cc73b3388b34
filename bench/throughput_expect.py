"""What ``bench.throughput`` expects to read back: each workspace's final state implied by its events.

Derived from the posted bodies alone, by Stripe's own order (``created``), not the service's code:
a workspace's status, plan, seats and ``cancel_at_period_end`` are those of its last
subscription event; its open invoices are those whose last event left them ``open``. A service
that applied an out-of-order or duplicated delivery wrongly reads back something else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from handlers.events import TERMINAL_SUBSCRIPTION_STATUSES
from worker.services import load_catalog


def expected_states(bodies: Iterable[str]) -> dict[str, dict[str, Any]]:
    """workspace id → the fields ``GET /v1/workspaces/{id}`` must show after every event."""
    catalog = load_catalog(None)  # the service's default catalog (BW_CATALOG_PATH unset)
    last_sub: dict[str, tuple[int, dict[str, Any]]] = {}
    invoices: dict[str, dict[str, tuple[int, str]]] = {}
    for body in bodies:
        event = json.loads(body)
        obj = event["data"]["object"]
        if event["type"].startswith("customer.subscription."):
            ws = obj["metadata"]["workspace_id"]
            if ws not in last_sub or event["created"] >= last_sub[ws][0]:
                last_sub[ws] = (event["created"], obj)
        elif event["type"].startswith("invoice."):
            ws = _invoice_workspace(obj)
            seen = invoices.setdefault(ws, {}).get(obj["id"])
            if seen is None or event["created"] >= seen[0]:
                invoices[ws][obj["id"]] = (event["created"], obj["status"])
    out: dict[str, dict[str, Any]] = {}
    for ws, (_, sub) in last_sub.items():
        if sub["status"] in TERMINAL_SUBSCRIPTION_STATUSES:
            want: dict[str, Any] = {"status": sub["status"], "plan": catalog.free_plan}
        else:
            item = sub["items"]["data"][0]
            ref = catalog.price(item["price"]["id"])
            assert ref is not None and ref.plan, f"{item['price']['id']} is not a plan of the catalog"
            want = {
                "status": sub["status"],
                "plan": ref.plan,
                "seats": item["quantity"],
                "cancel_at_period_end": sub["cancel_at_period_end"],
            }
        want["open_invoices"] = sorted(
            i for i, (_, status) in invoices.get(ws, {}).items() if status in ("open", "uncollectible")
        )
        out[ws] = want
    return out


def _invoice_workspace(invoice: Mapping[str, Any]) -> str:
    """The workspace of an invoice: its subscription's metadata (basil's ``parent`` or older)."""
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or invoice.get("subscription_details") or {}
    return str(details["metadata"]["workspace_id"])


def mismatches(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, Any]:
    """The expected fields a workspace document does not show (empty: it matches)."""
    got = {k: actual.get(k) for k in expected}
    got["open_invoices"] = sorted(i["invoice_id"] for i in actual.get("open_invoices", []))
    return {k: {"want": v, "got": got[k]} for k, v in expected.items() if got[k] != v}
