"""The invoice preview of a plan, seat, interval or add-on change (ALLO: "ALLO prepares an invoice
preview before applying a plan, seat, billing interval, or recurring add-on change … the best
place to see … any immediate amount due before you confirm"; "The invoice preview is the source
of truth").

Pure: which ``invoices.create_preview`` parameters describe exactly the update acting would send
(``preview_params``), what Stripe's preview invoice says in our terms (``summarize``), and the
catalog's answer for Free → paid, where there is no subscription to preview (``catalog_preview``).
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from handlers.catalog import INTERVAL_MONTHS, Catalog
from handlers.plan_policy import (
    AT_PERIOD_END,
    CREATE_PRORATIONS,
    IMMEDIATE,
    NO_PRORATION,
    ChangeRequest,
    Decision,
    invoices_now,
    subscription_items,
)
from handlers.state import WorkspaceView


def preview_params(
    decision: Decision,
    view: WorkspaceView,
    request: ChangeRequest,
    catalog: Catalog,
    customer_id: str | None,
    item_ids: tuple[str | None, str | None],
    now: datetime,
) -> dict[str, Any] | None:
    """``create_preview`` parameters for the items, quantities, proration and anchor acting sends;
    None when Stripe has nothing to preview (Free → paid: no subscription; paid → Free: no invoice).

    Immediate and prorated: ``proration_date`` = ``now``, so acting with the same date charges the
    previewed amount (Stripe refuses a proration date with ``none``). Period-end changes preview the
    first invoice of the new contract: the new items at the renewal, without proration."""
    if decision.kind not in (IMMEDIATE, AT_PERIOD_END) or decision.ends_subscription:
        return None
    if view.subscription_id is None or decision.direction == "from_free":
        return None
    items = subscription_items(decision, view, request, catalog, *item_ids)
    details: dict[str, Any] = {"items": items}
    if decision.kind == AT_PERIOD_END:
        details["proration_behavior"] = NO_PRORATION
    else:
        details["proration_behavior"] = decision.proration_behavior or CREATE_PRORATIONS
        if details["proration_behavior"] == CREATE_PRORATIONS:
            details["proration_date"] = int(now.timestamp())
        if decision.billing_cycle_anchor is not None and (view.plan, view.interval) != (
            request.plan,
            request.interval,
        ):
            details["billing_cycle_anchor"] = {"type": decision.billing_cycle_anchor}
    params: dict[str, Any] = {"subscription": view.subscription_id, "subscription_details": details}
    if customer_id is not None:
        params["customer"] = customer_id
    return params


def _ts(value: Any) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(int(value), UTC).isoformat().replace("+00:00", "Z")


def _line(line: Mapping[str, Any]) -> dict[str, Any]:
    parent = line.get("parent") or {}
    details = parent.get("subscription_item_details") or parent.get("invoice_item_details") or {}
    pricing = (line.get("pricing") or {}).get("price_details") or {}
    price = pricing.get("price") or line.get("price") or (line.get("plan") or {})
    price_id = price.get("id") if isinstance(price, Mapping) else price
    period = line.get("period") or {}
    return {
        "description": line.get("description"),
        "price": price_id,
        "quantity": line.get("quantity"),
        "amount": int(line.get("amount") or 0),
        "proration": bool(details.get("proration", line.get("proration", False))),
        "period": {"start": _ts(period.get("start")), "end": _ts(period.get("end"))},
    }


def summarize(invoice: Mapping[str, Any], decision: Decision, proration_date: int | None) -> dict[str, Any]:
    """Stripe's preview invoice in the API's terms. ``next_invoice`` is the invoice Stripe
    previewed (its amount and the service period of its recurring lines); ``amount_due_now`` is
    that amount when Stripe issues it at the update (a new cycle starts now), else 0 — prorations
    of an unchanged cycle are billed with the next invoice."""
    raw_lines = (invoice.get("lines") or {}).get("data") or []
    lines = [_line(line) for line in raw_lines]
    recurring = [
        raw.get("period") or {} for raw, ln in zip(raw_lines, lines, strict=True) if not ln["proration"]
    ]
    starts = [int(p["start"]) for p in recurring if p.get("start") is not None]
    ends = [int(p["end"]) for p in recurring if p.get("end") is not None]
    amount_due = int(invoice.get("amount_due") or 0)
    return {
        "currency": invoice.get("currency"),
        "amount_due_now": amount_due if invoices_now(decision) else 0,
        "next_invoice": {
            "amount_due": amount_due,
            "period_start": _ts(min(starts) if starts else invoice.get("period_start")),
            "period_end": _ts(max(ends) if ends else invoice.get("period_end")),
        },
        "lines": lines,
        "proration_date": proration_date,
    }


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` plus whole calendar months, the day clamped to the month's length (as Stripe)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def catalog_preview(request: ChangeRequest, catalog: Catalog, now: datetime) -> dict[str, Any]:
    """Free → paid: the first invoice from the catalog's amounts (``amount`` is None where the
    catalog has none). The subscription starts now and renews after one interval."""
    assert request.interval is not None
    plan = catalog.plans[request.plan]
    months = INTERVAL_MONTHS[request.interval]
    end = add_months(now, months)
    unit = plan.amounts.get(request.interval)
    period = {"start": _iso(now), "end": _iso(end)}
    lines = [
        {
            "description": f"{plan.name} ({request.interval}) x {request.seats} seats",
            "price": plan.prices[request.interval],
            "quantity": request.seats,
            "amount": None if unit is None else unit * request.seats,
            "proration": False,
            "period": period,
        }
    ]
    units = request.storage_addon_units or 0
    if units and catalog.storage_addons:
        addon = catalog.storage_addons[0]
        lines.append(
            {
                "description": f"Storage add-on x {units}",
                "price": addon.price_id,
                "quantity": units,
                "amount": None if addon.amount is None else addon.amount * units * months,
                "proration": False,
                "period": period,
            }
        )
    amounts = [line["amount"] for line in lines]
    total = None if any(a is None for a in amounts) else sum(amounts)
    return {
        "currency": catalog.currency,
        "amount_due_now": total,
        "next_invoice": {
            "amount_due": total,
            "period_start": _iso(end),
            "period_end": _iso(add_months(end, months)),
        },
        "lines": lines,
        "proration_date": None,
    }


def ending_preview(catalog: Catalog) -> dict[str, Any]:
    """Paid → Free: nothing is due now and no invoice follows the contract end."""
    return {
        "currency": catalog.currency,
        "amount_due_now": 0,
        "next_invoice": None,
        "lines": [],
        "proration_date": None,
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
