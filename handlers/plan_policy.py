"""Plan-change policy (SPEC §5): what a requested plan/interval/seat change does, and when.

Pure: the current workspace view, the request, ``now`` and the catalog in; a ``Decision`` out.
Timing follows the Yoom matrix (upgrades within the same or a longer interval and monthly→annual
take effect at once; downgrades, shorter intervals and paid→free wait for the contract end); the
blockers follow ALLO's "Before you change the plan" and "If a plan change fails" tables. The
Stripe parameters a decision turns into are built here too, so every retry sends the same ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from handlers.catalog import INTERVAL_MONTHS, Catalog, Plan
from handlers.state import WorkspaceView

IMMEDIATE = "immediate"
AT_PERIOD_END = "at_period_end"
NO_CHANGE = "no_change"
BLOCKED = "blocked"
CONTACT_SALES = "contact_sales"

# Blocking reasons (SPEC §5), in the order they are reported.
NOT_ADMIN = "not_admin"
OPEN_INVOICE = "open_invoice"
SEATS = "seats"
STORAGE = "storage"
PAYMENT_METHOD_REQUIRED = "payment_method_required"
# Reasons of the other kinds.
CURRENT_PLAN = "current_plan"  # ALLO: "The current plan is disabled — you are already on that plan"
CANCELLATION_SCHEDULED = "cancellation_scheduled"  # paid → free when the end is already scheduled
CUSTOM_CONTRACT = "custom_contract"

ADMIN_ROLES = frozenset({"workspace_admin", "billing_admin"})  # ALLO: "Who can change a plan"
ROLES = ADMIN_ROLES | frozenset({"member", "guest"})

CREATE_PRORATIONS = "create_prorations"
NO_PRORATION = "none"


@dataclass(frozen=True)
class ChangeRequest:
    plan: str
    interval: str | None  # None for the free plan
    seats: int
    requested_by_role: str
    member_count: int
    storage_used_bytes: int
    has_payment_method: bool | None = None  # None: the caller does not know; not checked
    storage_addon_units: int | None = None  # the total wanted; None: keep what the workspace has
    proration_date: int | None = None  # a preview's proration date, sent with a prorated update


@dataclass(frozen=True)
class Decision:
    kind: str
    reasons: tuple[str, ...] = ()
    effective_at: datetime | None = None
    proration_behavior: str | None = None  # what Stripe is told: create_prorations | none
    billing_cycle_anchor: str | None = None  # "unchanged" | "now" | None (Stripe's default)
    direction: str = "none"  # upgrade | downgrade | interval_longer | interval_shorter | seats_up | …
    ends_subscription: bool = False  # paid → free: the subscription ends with the contract
    clears_cancellation: bool = False  # a scheduled cancellation is withdrawn by this change
    keeps_trial_end: bool = False
    requires_payment_method: bool = False  # it starts paid billing or adds charges (ALLO)


LIVE_STATUSES = frozenset({"trialing", "active", "past_due", "unpaid", "paused", "incomplete"})
IMMEDIATE_DIRECTIONS = frozenset({"from_free", "upgrade", "interval_longer", "seats_up", "storage_addon"})
# Directions that lower what the workspace may hold: only these need the members to fit.
SHRINKING_DIRECTIONS = frozenset({"downgrade", "to_free", "seats_down"})


def decide(view: WorkspaceView, request: ChangeRequest, now: datetime, catalog: Catalog) -> Decision:
    """The policy decision for ``request`` on a workspace whose state is ``view`` at ``now``."""
    current = catalog.plans.get(view.plan)
    target = catalog.plans[request.plan]
    current_free = current is None or current.is_free or view.subscription_id is None
    direction = _direction(view, current, request, target, current_free)
    refusal = _refusal(view, request, current, target, direction)
    if refusal is not None:
        return refusal
    clears = view.cancel_at_period_end and not target.is_free
    if direction in IMMEDIATE_DIRECTIONS:
        decision = _immediate(
            view, request, now, catalog, direction, current_free=current_free, clears=clears
        )
    else:
        # At the end of the current contract; the current period stays billed at the old plan.
        decision = Decision(
            AT_PERIOD_END,
            effective_at=view.period_end or now,
            proration_behavior=NO_PRORATION,
            billing_cycle_anchor=None if view.interval == request.interval or target.is_free else "now",
            direction=direction,
            ends_subscription=target.is_free,
            clears_cancellation=clears,
            keeps_trial_end=False,
        )
    # ALLO: "Upgrades and some renewals need a valid payment method": a change that starts paid
    # billing or adds charges; downgrades, fewer seats and shorter intervals do not.
    needs_method = not target.is_free and (current_free or adds_charges(decision, view, request))
    decision = replace(decision, requires_payment_method=needs_method)
    reasons = blocking_reasons(view, request, current, target, catalog, decision)
    if reasons:
        return Decision(BLOCKED, reasons, direction=direction, requires_payment_method=needs_method)
    return decision


def _refusal(
    view: WorkspaceView, request: ChangeRequest, current: Plan | None, target: Plan, direction: str
) -> Decision | None:
    """The NO_CHANGE or CONTACT_SALES decision (or a non-admin's BLOCKED) if nothing can be made."""
    if direction == "same":
        return Decision(NO_CHANGE, (CURRENT_PLAN,), direction=direction)
    if target.is_free and view.cancel_at_period_end:
        return Decision(NO_CHANGE, (CANCELLATION_SCHEDULED,), view.period_end, direction=direction)
    if view.custom_contract or target.custom_contract or (current and current.custom_contract):
        # ALLO: "Upgrade is unavailable — not an admin, or a custom contract: ask an admin or use
        # Contact Sales". A non-admin is sent to an admin first.
        if request.requested_by_role not in ADMIN_ROLES:
            return Decision(BLOCKED, (NOT_ADMIN,), direction=direction)
        return Decision(CONTACT_SALES, (CUSTOM_CONTRACT,), direction=direction)
    return None


def blocking_reasons(
    view: WorkspaceView,
    request: ChangeRequest,
    current: Plan | None,
    target: Plan,
    catalog: Catalog,
    decision: Decision,
) -> tuple[str, ...]:
    """SPEC §5's blocking reasons that apply to a change decided ``decision``, in report order."""
    reasons: list[str] = []
    if request.requested_by_role not in ADMIN_ROLES:
        reasons.append(NOT_ADMIN)
    if view.block is not None and touched_blocks(view, request) & view.block.blocks:
        reasons.append(OPEN_INVOICE)
    if not seats_fit(view, request, target, decision.direction):
        reasons.append(SEATS)
    new_quota = target_quota(view, current, target, catalog, request.storage_addon_units)
    # Like seats: only a change that lowers the quota needs the files to fit; one that raises it
    # goes ahead even if the workspace stays over quota (the warning stays).
    if request.storage_used_bytes > new_quota and new_quota < view.storage_quota_bytes:
        reasons.append(STORAGE)
    if decision.requires_payment_method and request.has_payment_method is False:
        reasons.append(PAYMENT_METHOD_REQUIRED)
    return tuple(reasons)


def touched_blocks(view: WorkspaceView, request: ChangeRequest) -> frozenset[str]:
    """The dunning block names a change falls under: ``plan_changes`` for the plan, its interval
    and add-ons; ``seat_changes`` for the paid seat count. A combined change falls under both."""
    touched: set[str] = set()
    if (view.plan, view.interval) != (request.plan, request.interval) or addon_changes(view, request):
        touched.add("plan_changes")
    if request.interval is not None and view.interval is not None and request.seats != view.seats:
        touched.add("seat_changes")
    return frozenset(touched)


def addon_changes(view: WorkspaceView, request: ChangeRequest) -> bool:
    units = request.storage_addon_units
    return units is not None and units != view.storage_addon_units


def adds_charges(decision: Decision, view: WorkspaceView, request: ChangeRequest) -> bool:
    """Whether acting on ``decision`` makes the customer owe money: a new contract invoiced at once
    (anchor ``now``), or a prorated charge for more (a higher tier, longer interval, more seats or
    add-on units). Trials owe nothing until they end; period-end changes bill at renewal."""
    if decision.kind != IMMEDIATE or decision.keeps_trial_end:
        return False
    if invoices_now(decision):
        return True
    more_addons = (request.storage_addon_units or 0) > view.storage_addon_units and addon_changes(
        view, request
    )
    more = decision.direction in ("upgrade", "interval_longer", "seats_up") or more_addons
    return more and decision.proration_behavior == CREATE_PRORATIONS


def invoices_now(decision: Decision) -> bool:
    """Stripe invoices the update at once (a new billing cycle starts now): the change then waits
    for that payment when sent with ``payment_behavior=pending_if_incomplete``."""
    return (
        decision.kind == IMMEDIATE and decision.billing_cycle_anchor == "now" and not decision.keeps_trial_end
    )


def _immediate(
    view: WorkspaceView,
    request: ChangeRequest,
    now: datetime,
    catalog: Catalog,
    direction: str,
    *,
    current_free: bool,
    clears: bool,
) -> Decision:
    """The decision of a change that takes effect at ``now``."""
    trialing = view.status == "trialing"
    same_interval = view.interval == request.interval
    # Nothing was paid in a trial or on Free, so there is nothing to prorate.
    prorate = not trialing and not current_free and catalog.policy.proration == "provider"
    price_changes = (view.plan, view.interval) != (request.plan, request.interval)
    anchor = None
    if not current_free and price_changes:
        # Yoom: an upgrade within the same interval keeps the contract end date; a longer
        # interval starts its contract now.
        anchor = "unchanged" if same_interval else "now"
    return Decision(
        IMMEDIATE,
        effective_at=now,
        proration_behavior=CREATE_PRORATIONS if prorate else NO_PRORATION,
        billing_cycle_anchor=anchor,
        direction=direction,
        clears_cancellation=clears,
        keeps_trial_end=trialing,
    )


def _direction(
    view: WorkspaceView,
    current: Plan | None,
    request: ChangeRequest,
    target: Plan,
    current_free: bool,
) -> str:
    if current_free:
        return "same" if target.is_free else "from_free"
    if target.is_free:
        return "to_free"
    assert current is not None and view.interval is not None and request.interval is not None
    months_now, months_new = INTERVAL_MONTHS[view.interval], INTERVAL_MONTHS[request.interval]
    if target.tier > current.tier:
        # Yoom: Plus (Yearly) → Business (Monthly) waits for the contract end.
        return "upgrade" if months_new >= months_now else "upgrade_shorter_interval"
    if target.tier < current.tier:
        return "downgrade"
    if target.key != current.key:  # same tier, another plan: treat as a downgrade (safe side)
        return "downgrade"
    if months_new > months_now:
        return "interval_longer"
    if months_new < months_now:
        return "interval_shorter"
    if request.seats > view.seats:
        return "seats_up"
    if request.seats < view.seats:
        return "seats_down"
    # ALLO: "Buy or change a storage add-on: A prorated charge or credit for the recurring storage tier".
    return "storage_addon" if addon_changes(view, request) else "same"


def seats_fit(view: WorkspaceView, request: ChangeRequest, target: Plan, direction: str) -> bool:
    """Paid seats never exceed the plan's limit. ALLO: "A downgrade may not be possible until member
    count fits the new seat limit" — only a change that lowers the seats (a lower plan, Free, fewer
    seats) needs the members to fit; others go ahead and the over-seat warning stays ("If you
    change plans and the member count still exceeds the new seat limit, the warning may remain")."""
    limit = target.seat_limit
    if limit is not None and not target.is_free and request.seats > limit:
        return False
    fewer_seats = request.interval is not None and view.interval is not None and request.seats < view.seats
    if direction not in SHRINKING_DIRECTIONS and not fewer_seats:
        return True
    if limit is not None and request.member_count > limit:
        return False
    return target.is_free or request.seats >= request.member_count


def target_quota(
    view: WorkspaceView,
    current: Plan | None,
    target: Plan,
    catalog: Catalog | None = None,
    addon_units: int | None = None,
) -> int:
    """Storage the workspace would have: the target plan's quota plus its storage add-ons — the
    ones it keeps, or ``addon_units`` of the catalog's add-on when the change sets them (add-ons
    are subscription items, so they end with the subscription on paid → free)."""
    if target.is_free:
        return target.storage_bytes
    if addon_units is not None and catalog is not None and catalog.storage_addons:
        return target.storage_bytes + addon_units * catalog.storage_addons[0].unit_bytes
    addon_bytes = view.storage_quota_bytes - (current.storage_bytes if current else 0)
    return target.storage_bytes + max(addon_bytes, 0)


def stripe_update_params(
    decision: Decision,
    view: WorkspaceView,
    request: ChangeRequest,
    catalog: Catalog,
    plan_item_id: str | None,
    change_id: str,
    addon_item_id: str | None = None,
) -> dict[str, Any]:
    """The ``subscriptions.update`` parameters of a change, built once and stored with it.

    Parameters equal to Stripe's defaults are left out (``proration_behavior=create_prorations``;
    ``billing_cycle_anchor`` when the price stays), which also keeps the request within what
    localstripe accepts. ``billing_cycle_anchor`` uses the object form of 2026-09-30.endive. A
    change Stripe invoices at once is sent with ``payment_behavior=pending_if_incomplete``: it is
    applied only once that invoice is paid (Stripe keeps it in ``pending_update`` until then);
    that mode refuses ``cancel_at_period_end``, so a change that withdraws a cancellation is not.
    """
    metadata = {"plan_change_id": change_id}
    if decision.ends_subscription:
        return {"cancel_at_period_end": True, "metadata": metadata}
    items = subscription_items(decision, view, request, catalog, plan_item_id, addon_item_id)
    params: dict[str, Any] = {"items": items, "metadata": metadata}
    if decision.proration_behavior == NO_PRORATION:
        params["proration_behavior"] = NO_PRORATION
    elif request.proration_date is not None:
        params["proration_date"] = request.proration_date  # the preview's: the same amount
    price_changes = (view.plan, view.interval) != (request.plan, request.interval)
    if decision.billing_cycle_anchor is not None and price_changes:
        params["billing_cycle_anchor"] = {"type": decision.billing_cycle_anchor}
    if decision.clears_cancellation:
        params["cancel_at_period_end"] = False
    elif invoices_now(decision):
        params["payment_behavior"] = "pending_if_incomplete"
    return params


def subscription_items(
    decision: Decision,
    view: WorkspaceView,
    request: ChangeRequest,
    catalog: Catalog,
    plan_item_id: str | None,
    addon_item_id: str | None,
) -> list[dict[str, Any]]:
    """The subscription items a change sends: the plan item (unless only add-ons change), then the
    storage add-on item when its units change (``deleted`` at 0, a new item when there is none)."""
    items: list[dict[str, Any]] = []
    if decision.direction != "storage_addon":
        assert request.interval is not None
        item: dict[str, Any] = {"id": plan_item_id, "quantity": request.seats}
        if (view.plan, view.interval) != (request.plan, request.interval):
            item["price"] = catalog.plans[request.plan].prices[request.interval]
        items.append(item)
    units = request.storage_addon_units
    if addon_changes(view, request) and catalog.storage_addons and units is not None:
        if addon_item_id is None:
            items.append({"price": catalog.storage_addons[0].price_id, "quantity": units})
        elif units == 0:
            items.append({"id": addon_item_id, "deleted": True})
        else:
            items.append({"id": addon_item_id, "quantity": units})
    return items


def request_from_json(data: Mapping[str, Any]) -> ChangeRequest:
    """Rebuild a stored request (validated when it was made)."""
    return ChangeRequest(
        plan=data["plan"],
        interval=data.get("interval"),
        seats=int(data["seats"]),
        requested_by_role=data["requested_by_role"],
        member_count=int(data["member_count"]),
        storage_used_bytes=int(data["storage_used_bytes"]),
        has_payment_method=data.get("has_payment_method"),
        storage_addon_units=data.get("storage_addon_units"),
        proration_date=data.get("proration_date"),
    )
