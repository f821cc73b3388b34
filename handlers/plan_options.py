"""Available actions on the Billing page: every plan x offered interval, each decided by the same
policy as a requested change (ALLO: "Start in Billing so ALLO can show the current plan, available
actions, invoice preview, and any Contact Sales path"; "If monthly and annual intervals are
available, ALLO shows the options the workspace can use")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from handlers.catalog import INTERVALS, Catalog
from handlers.plan_policy import CONTACT_SALES, ChangeRequest, Decision, decide
from handlers.state import WorkspaceView


@dataclass(frozen=True)
class OptionsRequest:
    requested_by_role: str
    member_count: int
    storage_used_bytes: int
    has_payment_method: bool | None = None
    seats: int | None = None  # None: the current paid seats, or enough for the members


@dataclass(frozen=True)
class PlanOption:
    plan: str
    interval: str | None
    seats: int
    decision: Decision


@dataclass(frozen=True)
class PlanOptions:
    current: dict[str, object]
    contact_sales: bool
    options: tuple[PlanOption, ...]


def option_seats(view: WorkspaceView, request: OptionsRequest, catalog: Catalog, plan: str) -> int:
    """The seats an option is decided with: those asked for, else today's paid seats, else one per
    member (at least one). Free is offered with its seat limit."""
    target = catalog.plans[plan]
    if target.is_free:
        return target.seat_limit or 1
    if request.seats is not None:
        return request.seats
    if view.interval is not None and view.seats > 0:
        return view.seats
    return max(request.member_count, 1)


def plan_options(
    view: WorkspaceView, request: OptionsRequest, now: datetime, catalog: Catalog
) -> PlanOptions:
    """One option per catalog plan and offered interval (Free once, without one), in tier then
    interval order; the current one answers ``no_change``. Add-ons are kept as they are."""
    options: list[PlanOption] = []
    for plan in sorted(catalog.plans.values(), key=lambda p: p.tier):
        intervals: tuple[str | None, ...] = tuple(i for i in INTERVALS if i in plan.prices) or (None,)
        for interval in intervals:
            seats = option_seats(view, request, catalog, plan.key)
            change = ChangeRequest(
                plan.key,
                interval,
                seats,
                request.requested_by_role,
                request.member_count,
                request.storage_used_bytes,
                request.has_payment_method,
            )
            options.append(PlanOption(plan.key, interval, seats, decide(view, change, now, catalog)))
    current = {
        "plan": view.plan,
        "interval": view.interval,
        "seats": view.seats,
        "storage_addon_units": view.storage_addon_units,
    }
    contact_sales = view.custom_contract or any(o.decision.kind == CONTACT_SALES for o in options)
    return PlanOptions(current, contact_sales, tuple(options))
