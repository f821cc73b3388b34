"""Derive the workspace view from its observations: plan, seats, periods, storage, block."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from handlers.catalog import Catalog, PriceRef
from handlers.dunning import evaluate_block
from handlers.events import TERMINAL_SUBSCRIPTION_STATUSES, PendingUpdate, SubscriptionItem
from handlers.state import PendingUpdateView, SubscriptionRecord, WorkspaceState, WorkspaceView


def current_subscription(state: WorkspaceState) -> SubscriptionRecord | None:
    """The live subscription with the latest start; if none is live, the last one to end."""
    records = list(state.subscriptions.values())
    if len(records) <= 1:  # most workspaces: the one there is, live or not
        return records[0] if records else None
    live = [r for r in records if r.snapshot.status not in TERMINAL_SUBSCRIPTION_STATUSES]
    if live:
        return max(live, key=lambda r: (r.snapshot.start_date or r.observed_at, r.snapshot.subscription_id))
    if records:
        return max(
            records,
            key=lambda r: (
                r.snapshot.ended_at or r.snapshot.canceled_at or r.observed_at,
                r.snapshot.subscription_id,
            ),
        )
    return None


def plan_item(record: SubscriptionRecord, catalog: Catalog) -> SubscriptionItem | None:
    for item in record.snapshot.items:
        ref = catalog.price(item.price_id)
        if ref is not None and ref.kind == "plan":
            return item
    return None


def derive_view(state: WorkspaceState, catalog: Catalog, now: datetime) -> WorkspaceView:
    plan = _plan_fields(state, catalog, now)
    return WorkspaceView(**plan, **_usage_fields(state, plan["seats"], plan["storage_quota_bytes"]))


def _usage_fields(state: WorkspaceState, seats: int, quota: int) -> dict[str, Any]:
    """Usage warnings and the credit balance are derived like the rest of the view, never patched.
    ``seats`` is already the plan's seat limit on Free."""
    members, used = state.usage.members, state.usage.storage_used_bytes
    return {
        "members": members,
        "over_seat_limit": members is not None and members > seats,
        "storage_used_bytes": used,
        "over_storage_quota": used is not None and used > quota,
        "ai_credit_balance": state.credit_balance,
    }


def _plan_fields(state: WorkspaceState, catalog: Catalog, now: datetime) -> dict[str, Any]:
    """The view's fields that come from the subscription, the catalog and the invoices (one
    ``WorkspaceView`` is then built with the usage fields: a frozen dataclass is slow to make)."""
    block = evaluate_block(state.invoices.values(), catalog.policy, now)
    free = catalog.plans[catalog.free_plan]
    record = current_subscription(state)
    if record is None or record.snapshot.status in TERMINAL_SUBSCRIPTION_STATUSES:
        return dict(
            plan=free.key,
            interval=None,
            seats=free.seat_limit or 0,
            status=record.snapshot.status if record else "free",
            subscription_id=record.snapshot.subscription_id if record else None,
            trial_end=None,
            period_start=None,
            period_end=None,
            cancel_at_period_end=False,
            custom_contract=bool(record and record.snapshot.custom_contract),
            storage_addon_units=0,
            storage_quota_bytes=free.storage_bytes,
            block=block,
        )
    snap = record.snapshot
    item, ref, unknown, addon_units, addon_bytes = _read_items(snap.items, catalog)
    plan = catalog.plans[ref.plan] if ref and ref.plan else None
    plan_key, interval, seats = (
        plan.key if plan else "unknown",
        ref.interval if ref else None,
        item.quantity if item else 0,
    )
    period_start = snap.current_period_start or (item.period_start if item else None)
    period_end = snap.current_period_end or (item.period_end if item else None)
    return dict(
        plan=plan_key,
        interval=interval,
        seats=seats,
        status=snap.status,
        subscription_id=snap.subscription_id,
        trial_end=snap.trial_end,
        period_start=period_start,
        period_end=period_end,
        cancel_at_period_end=snap.cancel_at_period_end,
        custom_contract=snap.custom_contract or bool(plan and plan.custom_contract),
        storage_addon_units=addon_units,
        storage_quota_bytes=(plan.storage_bytes if plan else free.storage_bytes) + addon_bytes,
        block=block,
        unknown_price_ids=tuple(sorted(unknown)),
        pending_update=_pending_view(snap.pending_update, (plan_key, interval, seats), catalog, now),
    )


def _read_items(
    items: Sequence[SubscriptionItem], catalog: Catalog
) -> tuple[SubscriptionItem | None, PriceRef | None, list[str], int, int]:
    """The first item with a plan price (``plan_item``) and its price, the price ids the catalog
    does not know, and the storage add-on units and bytes; each price looked up once."""
    item: SubscriptionItem | None = None
    ref: PriceRef | None = None
    unknown: list[str] = []
    addon_units = 0
    addon_bytes = 0
    for i in items:
        price = catalog.price(i.price_id)
        if price is None:
            unknown.append(i.price_id)
        elif price.kind == "plan":
            if item is None:
                item, ref = i, price
        elif price.kind == "storage_addon" and (addon := catalog.storage_addon(i.price_id)) is not None:
            addon_units += i.quantity
            addon_bytes += i.quantity * addon.unit_bytes
    return item, ref, unknown, addon_units, addon_bytes


def _pending_view(
    pending: PendingUpdate | None, current: tuple[str, str | None, int], catalog: Catalog, now: datetime
) -> PendingUpdateView | None:
    """What a pending update will change the plan to: its first item with a plan price gives
    plan, interval and seats (none: they stay as they are). Hidden once it has expired."""
    if pending is None or (pending.expires_at is not None and pending.expires_at <= now):
        return None
    plan, interval, seats = current
    for i in pending.items or ():
        ref = catalog.price(i.price_id)
        if ref is not None and ref.kind == "plan":
            plan = catalog.plans[ref.plan].key if ref.plan else "unknown"
            interval, seats = ref.interval, i.quantity
            break
    return PendingUpdateView(plan, interval, seats, pending.expires_at, pending.trial_end)
