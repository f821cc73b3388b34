"""Reconcile one workspace from Stripe: re-fetch its subscriptions and open invoices and apply them
as observations through the same pure reducer, in one transaction.

Ordering: a fetched object is Stripe's truth as of the fetch (``handlers.observation``, the rule
thin events share): dated just before the second the fetch started, so older events lose to it and
events of the fetch's own second or later win — such an event carries a real id and Stripe will
(re)deliver it, a reconcile can be run again.
Objects identical to what is stored are skipped, so reconciling a healthy workspace is a no-op.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from handlers.events import InvoiceObserved, SubscriptionObserved
from handlers.observation import as_observation, observation_time
from handlers.reducer import APPLIED, apply_event, view_diff
from worker.errors import Conflict, NotFound
from worker.infra.logging import get_logger
from worker.infra.stripe_gateway import StripeGateway
from worker.processing.after_commit import after_commit
from worker.services import Services
from worker.storage import workspaces, writer

log = get_logger("reconcile")


async def reconcile_workspace(
    services: Services, gateway: StripeGateway, workspace_id: str, *, cause_kind: str = "request"
) -> dict[str, Any]:
    """Apply Stripe's current objects to one workspace; returns what was applied."""
    customer_id = await _customer_of(services, workspace_id)
    fetched_at = services.clock()
    subs, invoices = await gateway.customer_objects(customer_id)
    observed_at = observation_time(fetched_at)
    events = [as_observation("customer.subscription", s, observed_at) for s in subs]
    events += [as_observation("invoice", i, observed_at) for i in invoices]
    cause_id = f"reconcile:{workspace_id}:{fetched_at.isoformat()}"
    now = services.clock()
    async with services.transaction() as conn:
        version, applied = await _apply_observations(
            conn, services, workspace_id, events, observed_at, now, cause_kind=cause_kind, cause_id=cause_id
        )
    for item in applied:
        await after_commit(
            services, workspace_id, item["version"], item["changes"], item["effects"], cause_id
        )
    log.info("workspace_reconciled", workspace_id=workspace_id, applied=len(applied), fetched=len(events))
    return {
        "workspace_id": workspace_id,
        "customer_id": customer_id,
        "fetched": {"subscriptions": len(subs), "open_invoices": len(invoices)},
        "applied": [{"object": a["object"], "version": a["version"]} for a in applied],
        "version": version,
    }


async def _customer_of(services: Services, workspace_id: str) -> str:
    """The Stripe customer to fetch from; a workspace without one cannot be reconciled yet."""
    customer_id = await services.pool.fetchval(
        "SELECT customer_id FROM workspaces WHERE workspace_id = $1", workspace_id
    )
    if customer_id is None:
        exists = await services.pool.fetchval(
            "SELECT true FROM workspaces WHERE workspace_id = $1", workspace_id
        )
        if exists:
            raise Conflict("no_stripe_customer", f"workspace {workspace_id!r} has no Stripe customer yet")
        raise NotFound("workspace_not_found", f"no billing state for workspace {workspace_id!r}")
    return customer_id


async def _apply_observations(
    conn: asyncpg.Connection,
    services: Services,
    workspace_id: str,
    events: list[Any],
    observed_at: datetime,
    now: datetime,
    *,
    cause_kind: str,
    cause_id: str,
) -> tuple[int, list[dict[str, Any]]]:
    """Reduce the observations in order under the row lock, one audit entry each; (version, applied)."""
    loaded = await workspaces.lock_workspace(conn, workspace_id)
    assert loaded is not None
    state, stored_view = loaded
    applied: list[dict[str, Any]] = []
    for event in events:
        if _unchanged(state, event):
            continue
        before = stored_view
        outcome = apply_event(state, event, now, services.catalog)
        if outcome.result != APPLIED:
            continue
        changes = {**outcome.changes, **view_diff(before, outcome.view)}
        if outcome.subscription is not None:
            await writer.save_subscription(conn, workspace_id, outcome.subscription)
        if outcome.invoice is not None:
            await writer.save_invoice(conn, workspace_id, outcome.invoice)
        await writer.append_audit(
            conn,
            workspace_id=workspace_id,
            version=outcome.state.version,
            cause_kind=cause_kind,
            cause_id=f"{cause_id}:{event.meta.event_id}",
            changes=changes,
            before=before,
            after=outcome.view,
            effective_at=observed_at,
        )
        state, stored_view = outcome.state, outcome.view
        applied.append(
            {
                "object": _object_id(event),
                "version": state.version,
                "changes": changes,
                "effects": outcome.effects,
            }
        )
    if applied:
        await writer.save_workspace(conn, state, stored_view, now)
    return state.version, applied


def _object_id(event: Any) -> str:
    if isinstance(event, SubscriptionObserved):
        return event.subscription.subscription_id
    return event.invoice.invoice_id


def _unchanged(state: Any, event: Any) -> bool:
    """Stored snapshot equals the fetched one: nothing to observe (keeps the audit log quiet)."""
    if isinstance(event, SubscriptionObserved):
        current = state.subscriptions.get(event.subscription.subscription_id)
        return current is not None and current.snapshot == event.subscription
    if isinstance(event, InvoiceObserved):
        current = state.invoices.get(event.invoice.invoice_id)
        return current is not None and current.snapshot == event.invoice
    return True
