"""Reads a Stripe subscription object of any supported API version into a ``SubscriptionSnapshot``."""

from __future__ import annotations

from datetime import datetime

from handlers.events import SUBSCRIPTION_STATUSES, PendingUpdate, SubscriptionItem, SubscriptionSnapshot
from handlers.stripe_fields import FieldReader, malformed, workspace_of


def read_subscription(sub: FieldReader) -> SubscriptionSnapshot:
    """The snapshot of ``sub``: pre-basil items take the top-level period; on basil and later the
    subscription's period is the one all items share (None if they differ)."""
    top_start = sub.opt_ts("current_period_start")  # pre-basil only
    top_end = sub.opt_ts("current_period_end")
    items = tuple(
        _subscription_item(item, top_start, top_end) for item in sub.list_items("items", required=True)
    )
    if top_start is not None or top_end is not None:
        period_start, period_end = top_start, top_end
    else:
        period_start = _shared({i.period_start for i in items})
        period_end = _shared({i.period_end for i in items})
    metadata = sub.metadata("metadata")
    customer = sub.reader_or_none("customer")
    workspace_id = workspace_of(metadata) or (
        workspace_of(customer.metadata("metadata")) if customer else None
    )
    status = sub.enum("status", SUBSCRIPTION_STATUSES)  # an unknown one is kept and shown as it came
    return SubscriptionSnapshot(
        subscription_id=sub.req_str("id"),
        customer_id=sub.req_id("customer"),
        status=status,
        items=items,
        current_period_start=period_start,
        current_period_end=period_end,
        trial_end=sub.opt_ts("trial_end"),
        cancel_at_period_end=sub.opt_bool("cancel_at_period_end"),
        cancel_at=sub.opt_ts("cancel_at"),
        canceled_at=sub.opt_ts("canceled_at"),
        ended_at=sub.opt_ts("ended_at"),
        start_date=sub.opt_ts("start_date"),
        workspace_id=workspace_id,
        custom_contract=metadata.get("custom_contract", "").strip().lower() == "true",
        pending_update=_pending_update(sub),
    )


def _pending_update(sub: FieldReader) -> PendingUpdate | None:
    """``pending_update`` (nullable): its items are read around, since only the view shows them."""
    pending = sub.reader_or_none("pending_update")
    if pending is None:
        return None
    if pending.opt_raw("expires_at") is None:
        pending.note(pending.path("expires_at"), "expected a timestamp, got null")
    items = None
    if pending.opt_raw("subscription_items") is not None:
        items = []
        for item in pending.list_items("subscription_items", required=False, list_object=False):
            price_id = item.opt_id("price") or item.opt_id("plan")
            if price_id is None:
                item.note(item.path("price"), "expected a price, got none")
                continue
            quantity = item.opt_int("quantity", minimum=0)
            items.append(
                SubscriptionItem(item.opt_str("id") or "", price_id, 1 if quantity is None else quantity)
            )
    return PendingUpdate(
        expires_at=pending.opt_ts("expires_at"),
        items=None if items is None else tuple(items),
        trial_end=pending.opt_ts("trial_end"),
    )


def _subscription_item(
    item: FieldReader, sub_start: datetime | None, sub_end: datetime | None
) -> SubscriptionItem:
    price_id = item.opt_id("price") or item.opt_id("plan")
    if price_id is None:
        raise malformed(item.path("price"), "is required (a price id or an expanded price)")
    start = item.opt_ts("current_period_start")
    end = item.opt_ts("current_period_end")
    return SubscriptionItem(
        item_id=item.req_str("id"),
        price_id=price_id,
        quantity=item.opt_int("quantity", minimum=0) or 0,  # absent on metered items
        period_start=start if start is not None else sub_start,
        period_end=end if end is not None else sub_end,
    )


def _shared(values: set[datetime | None]) -> datetime | None:
    return next(iter(values)) if len(values) == 1 else None
