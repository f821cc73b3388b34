"""Plan-change policy (SPEC §5): what a requested plan/interval/seat change does, and when.

Pure: the current workspace view, the request, ``now`` and the catalog in; a ``Decision`` out.
Timing follows the Yoom matrix (upgrades within the same or a longer interval and monthly→annual
take effect at once; downgrades, shorter intervals and paid→free wait for the contract end); the
blockers follow ALLO's "Before you change the plan" and "If a plan change fails" tables. The
Stripe parameters a decision turns into are built here too, so every retry sends the same ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


def decide(view: WorkspaceView, request: ChangeRequest, now: datetime, catalog: Catalog) -> Decision:
    """The policy decision for ``request`` on a workspace whose state is ``view`` at ``now``."""
    current = catalog.plans.get(view.plan)
    target = catalog.plans[request.plan]
    current_free = current is None or current.is_free or view.subscription_id is None
    target_free = target.is_free
    direction = _direction(view, current, request, target, current_free)
    refusal = _refusal(view, request, current, target, direction)
    if refusal is not None:
        return refusal
    clears = view.cancel_at_period_end and not target_free
    if direction in IMMEDIATE_DIRECTIONS:
        return _immediate(view, request, now, catalog, direction, current_free=current_free, clears=clears)
    # At the end of the current contract; the current period stays billed at the old plan.
    return Decision(
        AT_PERIOD_END,
        effective_at=view.period_end or now,
        proration_behavior=NO_PRORATION,
        billing_cycle_anchor=None if view.interval == request.interval or target_free else "now",
        direction=direction,
        ends_subscription=target_free,
        clears_cancellation=clears,
        keeps_trial_end=False,
    )


def _refusal(
    view: WorkspaceView, request: ChangeRequest, current: Plan | None, target: Plan, direction: str
) -> Decision | None:
    """The NO_CHANGE, CONTACT_SALES or BLOCKED decision if the change cannot be made as asked."""
    if direction == "same":
        return Decision(NO_CHANGE, (CURRENT_PLAN,), direction=direction)
    if target.is_free and view.cancel_at_period_end:
        return Decision(NO_CHANGE, (CANCELLATION_SCHEDULED,), view.period_end, direction=direction)

    not_admin = request.requested_by_role not in ADMIN_ROLES
    if view.custom_contract or target.custom_contract or (current and current.custom_contract):
        # ALLO: "Upgrade is unavailable — not an admin, or a custom contract: ask an admin or use
        # Contact Sales". A non-admin is sent to an admin first.
        if not_admin:
            return Decision(BLOCKED, (NOT_ADMIN,), direction=direction)
        return Decision(CONTACT_SALES, (CUSTOM_CONTRACT,), direction=direction)

    reasons = _blocking_reasons(view, request, current, target, not_admin)
    if reasons:
        return Decision(BLOCKED, reasons, direction=direction)
    return None


def _blocking_reasons(
    view: WorkspaceView, request: ChangeRequest, current: Plan | None, target: Plan, not_admin: bool
) -> tuple[str, ...]:
    """SPEC §5's blocking reasons that apply, in the order they are reported."""
    reasons: list[str] = []
    if not_admin:
        reasons.append(NOT_ADMIN)
    if view.block is not None and "plan_changes" in view.block.blocks:
        reasons.append(OPEN_INVOICE)
    if not _seats_fit(request, target):
        reasons.append(SEATS)
    if request.storage_used_bytes > target_quota(view, current, target):
        reasons.append(STORAGE)
    if not target.is_free and request.has_payment_method is False:
        reasons.append(PAYMENT_METHOD_REQUIRED)
    return tuple(reasons)


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


IMMEDIATE_DIRECTIONS = frozenset({"from_free", "upgrade", "interval_longer", "seats_up"})


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
    return "same"


def _seats_fit(request: ChangeRequest, target: Plan) -> bool:
    """ALLO: members must fit the new seat limit, and paid seats must cover the members."""
    limit = target.seat_limit
    if limit is not None and (request.member_count > limit or (not target.is_free and request.seats > limit)):
        return False
    return target.is_free or request.seats >= request.member_count


def target_quota(view: WorkspaceView, current: Plan | None, target: Plan) -> int:
    """Storage the workspace would have: the target plan's quota plus the storage add-ons it keeps
    (add-ons are subscription items, so they end with the subscription on paid → free)."""
    if target.is_free:
        return target.storage_bytes
    addon_bytes = view.storage_quota_bytes - (current.storage_bytes if current else 0)
    return target.storage_bytes + max(addon_bytes, 0)


def stripe_update_params(
    decision: Decision,
    view: WorkspaceView,
    request: ChangeRequest,
    catalog: Catalog,
    plan_item_id: str | None,
    change_id: str,
) -> dict[str, Any]:
    """The ``subscriptions.update`` parameters of a change, built once and stored with it.

    Parameters equal to Stripe's defaults are left out (``proration_behavior=create_prorations``;
    ``billing_cycle_anchor`` when the price stays), which also keeps the request within what
    localstripe accepts. ``billing_cycle_anchor`` uses the object form of 2026-09-30.endive.
    """
    metadata = {"plan_change_id": change_id}
    if decision.ends_subscription:
        return {"cancel_at_period_end": True, "metadata": metadata}
    target = catalog.plans[request.plan]
    assert request.interval is not None
    item: dict[str, Any] = {"id": plan_item_id, "quantity": request.seats}
    if (view.plan, view.interval) != (request.plan, request.interval):
        item["price"] = target.prices[request.interval]
    params: dict[str, Any] = {"items": [item], "metadata": metadata}
    if decision.proration_behavior == NO_PRORATION:
        params["proration_behavior"] = NO_PRORATION
    if decision.billing_cycle_anchor is not None and "price" in item:
        params["billing_cycle_anchor"] = {"type": decision.billing_cycle_anchor}
    if decision.clears_cancellation:
        params["cancel_at_period_end"] = False
    return params


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
    )
