"""Plan-change requests of the internal API: evaluate, act (supersede, store, claim) and cancel."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from handlers.codec import to_jsonable
from handlers.plan_policy import AT_PERIOD_END, IMMEDIATE, LIVE_STATUSES, ChangeRequest, Decision, decide
from handlers.state import WorkspaceState, WorkspaceView
from handlers.view import derive_view
from worker.errors import Conflict, NotFound, Unavailable
from worker.plan_changes.firing import stripe_params_for
from worker.plan_changes.store import (
    COLUMNS,
    Committed,
    active_change,
    audit_change,
    change_json,
    change_summary,
    decision_json,
    idempotency_key,
    life_step,
    set_status,
)
from worker.services import Services
from worker.storage import db, workspaces

# ---------------------------------------------------------------- requests (internal API)


async def _lock_workspace(
    services: Services, conn: asyncpg.Connection, workspace_id: str
) -> tuple[WorkspaceState, WorkspaceView]:
    """Lock the workspace row (always before any plan-change row: one lock order everywhere)."""
    await db.begin_keyed(conn, services.settings.lock_timeout_ms)
    loaded = await workspaces.lock_workspace(conn, workspace_id)
    if loaded is None:
        raise NotFound("workspace_not_found", f"no billing state for workspace {workspace_id!r}")
    return loaded


@dataclass
class RequestOutcome:
    decision: Decision
    change: dict[str, Any] | None
    committed: list[Committed] = field(default_factory=list)
    fire_now: str | None = None  # an immediate change claimed for this request: call Stripe
    defer_until: datetime | None = None


async def evaluate(
    services: Services, workspace_id: str, request: ChangeRequest
) -> tuple[Decision, WorkspaceView]:
    """The decision without acting (dry run): no lock, nothing written."""
    now = services.clock()
    async with services.pool.acquire() as conn:
        loaded = await workspaces.load_workspace(conn, workspace_id)
    if loaded is None:
        raise NotFound("workspace_not_found", f"no billing state for workspace {workspace_id!r}")
    state, _stored = loaded
    view = derive_view(state, services.catalog, now)
    return decide(view, request, now, services.catalog), view


async def request_change(
    services: Services, workspace_id: str, request: ChangeRequest, request_id: str
) -> RequestOutcome:
    """Act on a request: supersede the active change, store the new one (claimed when immediate)."""
    now = services.clock()
    catalog = services.catalog
    async with services.pool.acquire() as conn, conn.transaction():
        state, stored_view = await _lock_workspace(services, conn, workspace_id)
        view = derive_view(state, catalog, now)
        decision = decide(view, request, now, catalog)
        _refuse_unless_actionable(services, workspace_id, view, decision)
        previous = await active_change(conn, workspace_id)
        if previous is not None and previous["status"] == "firing":
            raise Conflict(
                "change_in_progress",
                f"plan change {previous['change_id']} is being sent to Stripe; retry shortly",
            )
        change_id = "pc_" + secrets.token_hex(12)
        committed = await _supersede(conn, previous, stored_view, request_id, now)
        immediate = decision.kind == IMMEDIATE
        fire_at = _fire_at(decision, now, catalog.policy.fire_lead_seconds)
        params = stripe_params_for(state, view, decision, request, catalog, change_id) if immediate else None
        row = await _insert_change(
            conn,
            change_id,
            workspace_id,
            request,
            decision,
            view,
            fire_at=fire_at,
            params=params,
            request_id=request_id,
            now=now,
        )
        committed.append(
            await _link_and_audit(conn, workspace_id, stored_view, previous, row, request_id, now)
        )
    return RequestOutcome(
        decision,
        change_json(row),
        committed,
        fire_now=change_id if immediate else None,
        defer_until=None if immediate else fire_at,
    )


def _refuse_unless_actionable(
    services: Services, workspace_id: str, view: WorkspaceView, decision: Decision
) -> None:
    """Refuse before anything is written: a decision that changes nothing, no subscription, no Stripe."""
    if decision.kind not in (IMMEDIATE, AT_PERIOD_END):
        code = {"blocked": "plan_change_blocked", "contact_sales": "contact_sales_required"}.get(
            decision.kind, "no_change"
        )
        raise Conflict(
            code,
            f"the change cannot be made: {decision.kind} ({', '.join(decision.reasons)})",
            decision=decision_json(decision),
        )
    if decision.kind == IMMEDIATE and (view.subscription_id is None or view.status not in LIVE_STATUSES):
        raise Conflict(
            "checkout_required",
            "the workspace has no subscription to update: start a paid plan through Stripe Checkout "
            f"with POST /v1/workspaces/{workspace_id}/checkout-sessions",
            decision=decision_json(decision),
            checkout_path=f"/v1/workspaces/{workspace_id}/checkout-sessions",
        )
    if services.stripe is None:
        raise Unavailable(
            "stripe_not_configured",
            "plan changes need STRIPE_API_KEY: no Stripe call can be made",
            decision=decision_json(decision),
        )


async def _supersede(
    conn: asyncpg.Connection,
    previous: asyncpg.Record | None,
    stored_view: WorkspaceView,
    request_id: str,
    now: datetime,
) -> list[Committed]:
    """One active change per workspace: the previous one steps aside (linked once the new row exists)."""
    if previous is None:
        return []
    _row, committed = await set_status(
        conn,
        previous,
        stored_view,
        "superseded",
        cause_kind="request",
        cause_id=request_id,
        now=now,
        superseded_by=None,
    )
    return [committed]


def _fire_at(decision: Decision, now: datetime, lead_seconds: float) -> datetime:
    """Immediate changes fire now; period-end ones ``lead_seconds`` early, so Stripe has them in time."""
    effective_at = decision.effective_at or now
    return effective_at if decision.kind == IMMEDIATE else effective_at - timedelta(seconds=lead_seconds)


async def _insert_change(
    conn: asyncpg.Connection,
    change_id: str,
    workspace_id: str,
    request: ChangeRequest,
    decision: Decision,
    view: WorkspaceView,
    *,
    fire_at: datetime,
    params: dict[str, Any] | None,
    request_id: str,
    now: datetime,
) -> asyncpg.Record:
    """The new row: an immediate change is stored already claimed (``firing``) by this request."""
    immediate = decision.kind == IMMEDIATE
    return await conn.fetchrow(
        f"""
        INSERT INTO plan_changes (change_id, workspace_id, kind, status, from_plan, from_interval,
            from_seats, to_plan, to_interval, to_seats, request, decision, effective_at, fire_at,
            subscription_id, idempotency_key, stripe_params, attempts, claimed_at, request_id,
            created_at, updated_at, history)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18, $19, $20, $21, $21, $22)
        RETURNING {COLUMNS}
        """,
        change_id,
        workspace_id,
        decision.kind,
        "firing" if immediate else "pending",
        view.plan,
        view.interval,
        view.seats,
        request.plan,
        request.interval,
        request.seats,
        to_jsonable(request),
        decision_json(decision),
        decision.effective_at or now,
        fire_at,
        view.subscription_id,
        idempotency_key(change_id),
        params,
        1 if immediate else 0,
        now if immediate else None,
        request_id,
        now,
        life_step("requested", now) + life_step("firing" if immediate else "pending", now),
    )


async def _link_and_audit(
    conn: asyncpg.Connection,
    workspace_id: str,
    stored_view: WorkspaceView,
    previous: asyncpg.Record | None,
    row: asyncpg.Record,
    request_id: str,
    now: datetime,
) -> Committed:
    """Point the superseded change at its successor and audit the swap of the pending change."""
    if previous is not None:
        await conn.execute(
            "UPDATE plan_changes SET superseded_by = $2 WHERE change_id = $1",
            previous["change_id"],
            row["change_id"],
        )
    return await audit_change(
        conn,
        workspace_id,
        stored_view,
        cause_kind="request",
        cause_id=request_id,
        changes={"pending_plan_change": (change_summary(previous), change_summary(row))},
        now=now,
    )


async def cancel_change(
    services: Services, workspace_id: str, request_id: str
) -> tuple[dict[str, Any], Committed]:
    now = services.clock()
    async with services.pool.acquire() as conn, conn.transaction():
        loaded = await _lock_workspace(services, conn, workspace_id)
        _state, stored_view = loaded
        row = await active_change(conn, workspace_id)
        if row is None:
            raise NotFound("no_pending_plan_change", f"workspace {workspace_id!r} has no pending plan change")
        if row["status"] == "firing":
            raise Conflict(
                "change_in_progress", f"plan change {row['change_id']} is already being sent to Stripe"
            )
        new, committed = await set_status(
            conn, row, stored_view, "canceled", cause_kind="request", cause_id=request_id, now=now
        )
    return change_json(new) or {}, committed
