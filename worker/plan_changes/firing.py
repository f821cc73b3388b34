"""Firing a plan change: claim the row, call Stripe with the change's idempotency key, record the outcome.

The row in ``plan_changes`` is the ledger. Firing is claim → Stripe call → record:
- the claim (workspace row lock, then the change row lock) fixes the Stripe parameters once and
  marks the row ``firing`` with ``claimed_at``; a second worker finds the live claim and does nothing;
- the Stripe call carries ``plan-change:<change_id>`` and the stored parameters, so any retry —
  after a transient error, or after a crash between the call and the commit (the claim goes stale
  and the sweep re-claims it) — is replayed by Stripe instead of applied twice;
- the outcome (``applied`` / ``failed``) is committed with an audit entry.
Cancelling or superseding only changes the row: deferred arq jobs are never aborted (arq runs an
aborted deferred job at once); the job re-reads the row and finds nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import asyncpg

from handlers.catalog import Catalog
from handlers.codec import load
from handlers.plan_policy import (
    AT_PERIOD_END,
    BLOCKED,
    IMMEDIATE,
    LIVE_STATUSES,
    OPEN_INVOICE,
    ChangeRequest,
    Decision,
    decide,
    request_from_json,
    stripe_update_params,
)
from handlers.state import WorkspaceState, WorkspaceView
from handlers.update_outcome import payment_wait
from handlers.view import current_subscription, derive_view, plan_item
from worker.infra.logging import get_logger
from worker.infra.stripe_gateway import is_transient
from worker.plan_changes.store import (
    ACTIVE,
    COLUMNS,
    Cause,
    Committed,
    claim_timeout,
    get_change,
    life_step,
    set_status,
)
from worker.services import Services
from worker.storage import db, workspaces

log = get_logger("plan_changes")


def stripe_params_for(
    state: WorkspaceState,
    view: WorkspaceView,
    decision: Decision,
    request: ChangeRequest,
    catalog: Catalog,
    change_id: str,
) -> dict[str, Any]:
    plan_item_id, addon_item_id = item_ids(state, catalog)
    return stripe_update_params(decision, view, request, catalog, plan_item_id, change_id, addon_item_id)


def item_ids(state: WorkspaceState, catalog: Catalog) -> tuple[str | None, str | None]:
    """The current subscription's plan item and storage add-on item (the catalog's first add-on)."""
    record = current_subscription(state)
    if record is None:
        return None, None
    item = plan_item(record, catalog)
    addon_price = catalog.storage_addons[0].price_id if catalog.storage_addons else None
    addon = next((i for i in record.snapshot.items if i.price_id == addon_price), None)
    return (item.item_id if item else None), (addon.item_id if addon else None)


# ---------------------------------------------------------------- firing


@dataclass
class FireResult:
    change_id: str
    outcome: str  # applied | failed | waiting_payment | not_due | not_active | claimed | retry | missing
    committed: list[Committed] = field(default_factory=list)
    error: str | None = None
    payment_pending: dict[str, Any] | None = None  # Stripe holds the update until its invoice is paid


async def fire(services: Services, change_id: str, *, cause: Cause) -> FireResult:
    """Fire one change if it is due and nobody else holds it. Safe to call any number of times.
    ``cause`` is the audit's (cause_kind, cause_id): ('job' | 'sweep', …)."""
    claimed = await _claim(services, change_id, cause)
    if claimed.outcome != "claimed_by_us":
        return claimed
    return await send(services, change_id, cause=cause)


async def _claim(services: Services, change_id: str, cause: Cause) -> FireResult:
    """Mark the change ``firing`` under both row locks, so exactly one caller sends it to Stripe."""
    now = services.clock()
    async with services.pool.acquire() as conn, conn.transaction():
        await db.begin_keyed(conn, services.settings.lock_timeout_ms)
        workspace_id = await conn.fetchval(
            "SELECT workspace_id FROM plan_changes WHERE change_id = $1", change_id
        )
        if workspace_id is None:
            return FireResult(change_id, "missing")
        # Lock order everywhere: the workspace row, then the change row.
        loaded = await workspaces.lock_workspace(conn, workspace_id)
        assert loaded is not None
        state, stored_view = loaded
        row = await conn.fetchrow(
            f"SELECT {COLUMNS} FROM plan_changes WHERE change_id = $1 FOR UPDATE", change_id
        )
        refused = _not_claimable(services, row, now)
        if refused is not None:
            return refused
        params = row["stripe_params"]
        subscription_id = row["subscription_id"]
        if params is None:
            fixed = await _fix_params(services, conn, state, stored_view, row, cause, now)
            if isinstance(fixed, FireResult):
                return fixed
            params, subscription_id = fixed
        await conn.execute(
            "UPDATE plan_changes SET status = 'firing', stripe_params = $2, subscription_id = $3, "
            "claimed_at = $4, attempts = attempts + 1, updated_at = $4, "
            "history = CASE WHEN status = 'firing' THEN history ELSE history || $5::jsonb END "
            "WHERE change_id = $1",
            change_id,
            params,
            subscription_id,
            now,
            life_step("firing", now),
        )
    return FireResult(change_id, "claimed_by_us")


def _not_claimable(services: Services, row: asyncpg.Record, now: datetime) -> FireResult | None:
    """Why this caller must not fire the locked row now (done, held by another, not due, no Stripe)."""
    change_id = row["change_id"]
    if row["status"] not in ACTIVE:
        return FireResult(change_id, "not_active")
    if (
        row["status"] == "firing"
        and row["claimed_at"] is not None
        and row["claimed_at"] > now - claim_timeout(services.settings)
    ):
        return FireResult(change_id, "claimed")
    if row["status"] == "pending" and row["fire_at"] > now:
        return FireResult(change_id, "not_due")
    if services.stripe is None:
        log.warning("plan_change_not_fired", change_id=change_id, reason="stripe_not_configured")
        return FireResult(change_id, "not_configured", error="stripe_not_configured")
    return None


async def _fix_params(
    services: Services,
    conn: asyncpg.Connection,
    state: WorkspaceState,
    stored_view: WorkspaceView,
    row: asyncpg.Record,
    cause: Cause,
    now: datetime,
) -> tuple[dict[str, Any], str | None] | FireResult:
    """First claim: re-check the policy now and fix the Stripe parameters for good, or park/fail the row."""
    catalog = services.catalog
    change_id = row["change_id"]
    view = derive_view(state, catalog, now)
    request = _with_reported_usage(request_from_json(row["request"]), state)
    recheck = decide(view, request, now, catalog)
    if recheck.kind == BLOCKED and set(recheck.reasons) == {OPEN_INVOICE}:
        if row["status"] == "waiting_payment":
            return FireResult(change_id, "waiting_payment")
        _new, c = await set_status(
            conn, row, stored_view, "waiting_payment", cause_kind=cause[0], cause_id=cause[1], now=now
        )
        return FireResult(change_id, "waiting_payment", [c])
    live = view.subscription_id is not None and view.status in LIVE_STATUSES
    if recheck.kind not in (IMMEDIATE, AT_PERIOD_END) or not live:
        reason = (
            f"{recheck.kind}: {', '.join(recheck.reasons)}"
            if live
            else f"no live subscription (status {view.status})"
        )
        _new, c = await set_status(
            conn, row, stored_view, "failed", cause_kind=cause[0], cause_id=cause[1], now=now, error=reason
        )
        return FireResult(change_id, "failed", [c], reason)
    decision = _decision_of(row["decision"])
    return stripe_params_for(state, view, decision, request, catalog, change_id), view.subscription_id


def _with_reported_usage(request: ChangeRequest, state: WorkspaceState) -> ChangeRequest:
    """At firing, seats and storage are checked against the latest usage the product reported
    (PUT /usage), falling back to the counts given with the request."""
    members, used = state.usage.members, state.usage.storage_used_bytes
    return replace(
        request,
        member_count=request.member_count if members is None else members,
        storage_used_bytes=request.storage_used_bytes if used is None else used,
    )


def _decision_of(data: dict[str, Any]) -> Decision:
    return load(Decision, data)


async def send(services: Services, change_id: str, *, cause: Cause) -> FireResult:
    """The Stripe call of a change this caller has claimed, then its outcome in one commit."""
    assert services.stripe is not None
    row = await get_change(services.pool, change_id)
    assert row is not None
    try:
        answer = await services.stripe.update_subscription(
            row["subscription_id"], row["stripe_params"], row["idempotency_key"]
        )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if is_transient(exc):
            # Give the claim back: the next attempt (job retry or sweep) sends the same request.
            await services.pool.execute(
                "UPDATE plan_changes SET claimed_at = NULL, last_error = $2, updated_at = $3 "
                "WHERE change_id = $1 AND status = 'firing'",
                change_id,
                error,
                services.clock(),
            )
            log.warning("plan_change_retry", change_id=change_id, error=error)
            return FireResult(change_id, "retry", error=error)
        result = await _finish(services, change_id, "failed", cause, error=error)
        log.warning("plan_change_failed", change_id=change_id, error=error)
        return result
    pending = payment_wait(answer)
    log.info(
        "plan_change_sent",
        change_id=change_id,
        subscription_id=answer.get("id"),
        waiting_for=pending["waiting_for"] if pending else None,
    )
    result = await _finish(services, change_id, "applied", cause)
    result.payment_pending = pending
    return result


async def _finish(
    services: Services, change_id: str, status: str, cause: Cause, *, error: str | None = None
) -> FireResult:
    now = services.clock()
    async with services.pool.acquire() as conn, conn.transaction():
        await db.begin_keyed(conn, services.settings.lock_timeout_ms)
        workspace_id = await conn.fetchval(
            "SELECT workspace_id FROM plan_changes WHERE change_id = $1", change_id
        )
        loaded = await workspaces.lock_workspace(conn, workspace_id)
        assert loaded is not None
        row = await conn.fetchrow(
            f"SELECT {COLUMNS} FROM plan_changes WHERE change_id = $1 FOR UPDATE", change_id
        )
        if row["status"] != "firing":
            return FireResult(change_id, "not_active")
        _new, c = await set_status(
            conn, row, loaded[1], status, cause_kind=cause[0], cause_id=cause[1], now=now, error=error
        )
    return FireResult(change_id, status, [c], error)
