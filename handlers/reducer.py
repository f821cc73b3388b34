"""The pure reducer: (state, event, now, catalog) → outcome. No I/O, no clock, no globals."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from handlers.catalog import Catalog
from handlers.codec import to_jsonable
from handlers.credits import ASYNC_PAYMENT_FAILED, CreditEntry, checkout_packs, credit_grants, grant
from handlers.events import (
    BillingEvent,
    CheckoutCompleted,
    IgnoredEvent,
    InvoiceObserved,
    SubscriptionObserved,
)
from handlers.evolve import evolve, quick_init
from handlers.state import InvoiceRecord, SubscriptionRecord, WorkspaceState, WorkspaceView
from handlers.view import derive_view

APPLIED = "applied"  # state changed
STALE = "stale"  # an older or duplicate observation: nothing to change
IGNORED = "ignored"  # a type the worker does not act on


@dataclass(frozen=True)
class BlockApplied:
    level: str


@dataclass(frozen=True)
class BlockLifted:
    previous_level: str


@dataclass(frozen=True)
class BlockLevelChanged:
    previous_level: str
    level: str


@dataclass(frozen=True)
class RefetchRequested:
    """Two different snapshots of one object carry the same ``created``: which is newer cannot be
    told from the events, so the shell asks Stripe for the object itself (SPEC §4)."""

    kind: str  # "subscription" | "invoice"
    object_id: str


Effect = BlockApplied | BlockLifted | BlockLevelChanged | RefetchRequested


@quick_init
@dataclass(frozen=True)
class Outcome:
    result: str
    state: WorkspaceState
    view: WorkspaceView
    changes: Mapping[str, tuple[Any, Any]]  # field -> (before, after), JSON-able
    subscription: SubscriptionRecord | None = None  # record the shell must upsert
    invoice: InvoiceRecord | None = None
    effects: tuple[Effect, ...] = ()
    credit_entries: tuple[CreditEntry, ...] = ()  # new AI-credit ledger rows the shell must insert


def apply_event(state: WorkspaceState, event: BillingEvent, now: datetime, catalog: Catalog) -> Outcome:
    before = derive_view(state, catalog, now)
    if isinstance(event, SubscriptionObserved):
        return _subscription(state, before, event, now, catalog)
    if isinstance(event, InvoiceObserved):
        return _invoice(state, before, event, now, catalog)
    if isinstance(event, CheckoutCompleted):
        return _checkout(state, before, event, now, catalog)
    if isinstance(event, IgnoredEvent):
        return Outcome(IGNORED, state, before, {})
    raise TypeError(f"unhandled event {type(event).__name__}")


def reevaluate(state: WorkspaceState, stored: WorkspaceView, now: datetime, catalog: Catalog) -> Outcome:
    """Recompute the view at ``now`` (the dunning sweep): a time-driven change with no event."""
    view = derive_view(state, catalog, now)
    return _finish(state, stored, view, None, None)


def _checkout(
    state: WorkspaceState, before: WorkspaceView, event: CheckoutCompleted, now: datetime, catalog: Catalog
) -> Outcome:
    """A paid one-time Checkout may buy credit packs; anything else is for subscription events."""
    candidates = credit_grants(event, catalog)
    if not candidates:
        return _checkout_not_paid(state, before, event, now, catalog)
    state = evolve(state, customer_id=state.customer_id or event.customer_id)
    state, granted = grant(state, candidates)
    if not granted:
        return Outcome(STALE, state, before, {})
    outcome = _finish(state, before, derive_view(state, catalog, now), None, None)
    return evolve(outcome, credit_entries=granted)


def _checkout_not_paid(
    state: WorkspaceState, before: WorkspaceView, event: CheckoutCompleted, now: datetime, catalog: Catalog
) -> Outcome:
    """A delayed payment that failed, or a pack purchase completed before its payment is in, grants
    nothing but is recorded (the audit entry says so); other sessions are not ours to act on."""
    if event.meta.event_type == ASYNC_PAYMENT_FAILED:
        change: tuple[str | None, str] = ("unpaid", "failed")
    elif event.payment_status == "unpaid" and checkout_packs(event, catalog):
        change = (None, "unpaid")
    else:
        return Outcome(IGNORED, state, before, {})
    state = evolve(state, customer_id=state.customer_id or event.customer_id)
    changes = {f"checkout.{event.session_id}.payment_status": change}
    return _finish(state, before, derive_view(state, catalog, now), None, None, changes)


def _subscription(
    state: WorkspaceState, before: WorkspaceView, event: SubscriptionObserved, now: datetime, catalog: Catalog
) -> Outcome:
    snap = event.subscription
    record = SubscriptionRecord(snap, event.meta.created, event.meta.event_id)
    current = state.subscriptions.get(snap.subscription_id)
    tie = _tie(current, record, "subscription", snap.subscription_id)
    if current is not None and current.order_key >= record.order_key:
        return Outcome(STALE, state, before, {}, effects=tie)
    state = evolve(
        state,
        customer_id=state.customer_id or snap.customer_id,
        subscriptions={**state.subscriptions, snap.subscription_id: record},
    )
    changes = {f"subscription.{snap.subscription_id}.status": (_status(current), snap.status)}
    outcome = _finish(state, before, derive_view(state, catalog, now), record, None, changes)
    return evolve(outcome, effects=outcome.effects + tie)


def _invoice(
    state: WorkspaceState, before: WorkspaceView, event: InvoiceObserved, now: datetime, catalog: Catalog
) -> Outcome:
    snap = event.invoice
    happened = event.meta.occurred_at or event.meta.created
    failed_at = happened if (event.payment_failed or event.action_required) else None
    incoming = InvoiceRecord(snap, event.meta.created, event.meta.event_id, failed_at, failed_at)
    current = state.invoices.get(snap.invoice_id)
    merged = incoming if current is None else _merge_invoice(current, incoming)
    tie = (
        ()
        if current is None or current.status != incoming.status
        else _tie(current, incoming, "invoice", snap.invoice_id)
    )
    if merged == current:
        return Outcome(STALE, state, before, {}, effects=tie)
    state = evolve(
        state,
        customer_id=state.customer_id or snap.customer_id,
        invoices={**state.invoices, snap.invoice_id: merged},
    )
    changes: dict[str, tuple[Any, Any]] = {}
    old_status = current.status if current else None
    if old_status != merged.status:
        changes[f"invoice.{snap.invoice_id}.status"] = (old_status, merged.status)
    if (current and current.last_failed_at) != merged.last_failed_at:
        changes[f"invoice.{snap.invoice_id}.last_failed_at"] = (
            to_jsonable(current.last_failed_at if current else None),
            to_jsonable(merged.last_failed_at),
        )
    state, granted = grant(state, credit_grants(event, catalog))
    outcome = _finish(state, before, derive_view(state, catalog, now), None, merged, changes)
    return evolve(outcome, credit_entries=granted, effects=outcome.effects + tie)


def _tie(
    current: SubscriptionRecord | InvoiceRecord | None,
    incoming: SubscriptionRecord | InvoiceRecord,
    kind: str,
    object_id: str,
) -> tuple[Effect, ...]:
    """A refetch request when two different events say different things at the same instant."""
    if (
        current is not None
        and current.observed_at == incoming.observed_at
        and current.observed_event_id != incoming.observed_event_id
        and current.snapshot != incoming.snapshot
    ):
        return (RefetchRequested(kind, object_id),)
    return ()


def _merge_invoice(a: InvoiceRecord, b: InvoiceRecord) -> InvoiceRecord:
    """Join of two observations of one invoice: commutative, associative, idempotent."""
    latest = a if a.order_key >= b.order_key else b
    return evolve(
        latest,
        first_failed_at=_min(a.first_failed_at, b.first_failed_at),
        last_failed_at=_max(a.last_failed_at, b.last_failed_at),
    )


def _finish(
    state: WorkspaceState,
    before: WorkspaceView,
    after: WorkspaceView,
    subscription: SubscriptionRecord | None,
    invoice: InvoiceRecord | None,
    record_changes: Mapping[str, tuple[Any, Any]] | None = None,
) -> Outcome:
    changes = dict(record_changes or {})
    changes.update(view_diff(before, after))
    if not changes and subscription is None and invoice is None:
        return Outcome(STALE, state, after, {})
    state = evolve(state, version=state.version + 1)
    return Outcome(APPLIED, state, after, changes, subscription, invoice, _block_effects(before, after))


def view_diff(before: WorkspaceView, after: WorkspaceView) -> dict[str, tuple[Any, Any]]:
    """The fields that differ, as JSON-able (before, after) pairs. Values are compared before
    encoding: equal values encode equally, and most fields are equal."""
    b = after.__dict__
    return {
        name: (to_jsonable(value), to_jsonable(b[name]))
        for name, value in before.__dict__.items()
        if value != b[name]
    }


def view_json_diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``view_diff`` of two views given as their JSON (``to_jsonable``) documents: the stored view
    need not be decoded to be compared. A field the stored document lacks (written before the
    field existed) counts as its default, as decoding it would."""
    defaults = _view_json_defaults()
    diff = {}
    for name, value in after.items():
        old = before[name] if name in before else defaults.get(name)
        if old != value:
            diff[name] = (old, value)
    return diff


@cache
def _view_json_defaults() -> dict[str, Any]:
    return {
        f.name: to_jsonable(f.default)
        for f in dataclasses.fields(WorkspaceView)
        if f.default is not dataclasses.MISSING
    }


def _block_effects(before: WorkspaceView, after: WorkspaceView) -> tuple[Effect, ...]:
    old = before.block.level if before.block else None
    new = after.block.level if after.block else None
    if old == new:
        return ()
    if old is None and new is not None:
        return (BlockApplied(new),)
    if new is None and old is not None:
        return (BlockLifted(old),)
    assert old is not None and new is not None
    return (BlockLevelChanged(old, new),)


def _status(record: SubscriptionRecord | None) -> str | None:
    return record.snapshot.status if record else None


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


__all__ = ["APPLIED", "IGNORED", "STALE", "Outcome", "apply_event", "reevaluate"]
