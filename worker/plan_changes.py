"""Plan changes in the shell: request, supersede, cancel, fire — each in its own transaction.

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

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
from redis.exceptions import RedisError

from handlers.codec import load, to_jsonable
from handlers.events import EventMeta
from handlers.plan_policy import (
    AT_PERIOD_END,
    BLOCKED,
    IMMEDIATE,
    OPEN_INVOICE,
    ChangeRequest,
    Decision,
    decide,
    request_from_json,
    stripe_update_params,
)
from handlers.state import WorkspaceState, WorkspaceView
from handlers.view import current_subscription, derive_view, plan_item
from worker import db, json_codec, store
from worker.logging import get_logger
from worker.stripe_gateway import is_transient

if TYPE_CHECKING:
    from worker.services import Services

log = get_logger("plan_changes")

ACTIVE = ("pending", "waiting_payment", "firing")
KEY_PREFIX = "plan-change:"
FIRE_JOB = "fire_plan_change"
LIVE_STATUSES = frozenset({"trialing", "active", "past_due", "unpaid", "paused", "incomplete"})
Cause = tuple[str, str]  # the audit log's (cause_kind, cause_id)

_COLUMNS = (
    "change_id, workspace_id, kind, status, from_plan, from_interval, from_seats, to_plan, "
    "to_interval, to_seats, request, decision, effective_at, fire_at, subscription_id, "
    "idempotency_key, stripe_params, attempts, claimed_at, last_error, request_id, superseded_by, "
    "created_at, updated_at, applied_at, confirmed_event_id, confirmed_at"
)
_COLUMN_NAMES = tuple(name.strip() for name in _COLUMNS.split(","))
_JSON_COLUMNS = frozenset({"request", "decision", "stripe_params"})

# The workspace row with its open invoices and active change in one statement: the API's most
# frequent read, one round trip instead of three. Nested rows come back as anonymous records
# (tuples, fields in column order); their jsonb fields as text, since asyncpg decodes a record's
# fields in binary and the pool's JSON codec is a text one.
_WORKSPACE_STATUS = (
    "SELECT workspace_id, customer_id, view, version, created_at, updated_at, "
    f"array(SELECT ROW({', '.join(store.OPEN_INVOICE_COLUMNS)}) "
    f"FROM {store.OPEN_INVOICES_OF.format('w.workspace_id')}) AS open_invoices, "
    "(SELECT ROW("
    + ", ".join(f"{c}::text" if c in _JSON_COLUMNS else c for c in _COLUMN_NAMES)
    + ") FROM plan_changes WHERE workspace_id = w.workspace_id AND status = ANY($2::text[])) AS pending "
    "FROM workspaces w WHERE workspace_id = $1"
)


class PlanChangeError(Exception):
    """A request that cannot proceed; the API turns it into ``{"error": {code, message}}``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


@dataclass
class Committed:
    """What a transaction committed, for ``jobs.after_commit``."""

    workspace_id: str
    version: int | None = None
    changes: dict[str, Any] = field(default_factory=dict)


def idempotency_key(change_id: str) -> str:
    return f"{KEY_PREFIX}{change_id}"


def claim_timeout(services: Services) -> timedelta:
    """A claim older than this belongs to a worker that died (arq's job timeout has passed)."""
    return timedelta(seconds=max(2 * services.settings.job_timeout_seconds, 120))


def change_json(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = to_jsonable(dict(row))
    out.pop("stripe_params", None)  # internal: what the worker sends, not what the product shows
    return out


def decision_json(decision: Decision) -> dict[str, Any]:
    return to_jsonable(decision)


# ---------------------------------------------------------------- reads


async def active_change(conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM plan_changes WHERE workspace_id = $1 AND status = ANY($2::text[])",
        workspace_id,
        list(ACTIVE),
    )


async def workspace_status(
    conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str
) -> tuple[asyncpg.Record, list[dict[str, Any]], dict[str, Any] | None] | None:
    """The workspace row, its open invoices (``store.open_invoices``) and its active change
    (``active_change``) as dicts, read in one statement; None when there is no such workspace."""
    row = await conn.fetchrow(_WORKSPACE_STATUS, workspace_id, list(ACTIVE))
    if row is None:
        return None
    invoices = [dict(zip(store.OPEN_INVOICE_COLUMNS, r, strict=True)) for r in row["open_invoices"]]
    pending = None
    if row["pending"] is not None:
        pending = dict(zip(_COLUMN_NAMES, row["pending"], strict=True))
        for name in _JSON_COLUMNS:
            if pending[name] is not None:
                pending[name] = json_codec.loads(pending[name])
    return row, invoices, pending


async def get_change(conn: asyncpg.Connection | asyncpg.Pool, change_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_COLUMNS} FROM plan_changes WHERE change_id = $1", change_id)


# ---------------------------------------------------------------- audit


async def _audit(
    conn: asyncpg.Connection,
    workspace_id: str,
    stored_view: WorkspaceView,
    *,
    cause_kind: str,
    cause_id: str,
    changes: dict[str, Any],
    now: datetime,
) -> Committed:
    """A change of pending state is a workspace state change: new version, audit entry."""
    version = await conn.fetchval(
        "UPDATE workspaces SET version = version + 1, updated_at = $2 WHERE workspace_id = $1 "
        "RETURNING version",
        workspace_id,
        now,
    )
    await store.append_audit(
        conn,
        workspace_id=workspace_id,
        version=version,
        cause_kind=cause_kind,
        cause_id=cause_id,
        changes=changes,
        before=stored_view,
        after=stored_view,
        effective_at=now,
    )
    return Committed(workspace_id, version, changes)


def _summary(row: asyncpg.Record | dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "change_id": row["change_id"],
        "status": row["status"],
        "to_plan": row["to_plan"],
        "to_interval": row["to_interval"],
        "to_seats": row["to_seats"],
        "effective_at": to_jsonable(row["effective_at"]),
    }


async def _set_status(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    stored_view: WorkspaceView,
    status: str,
    *,
    cause_kind: str,
    cause_id: str,
    now: datetime,
    error: str | None = None,
    superseded_by: str | None = None,
) -> tuple[asyncpg.Record, Committed]:
    new = await conn.fetchrow(
        f"UPDATE plan_changes SET status = $2, last_error = COALESCE($3, last_error), "
        "superseded_by = COALESCE($4, superseded_by), claimed_at = NULL, updated_at = $5, "
        "applied_at = CASE WHEN $2 = 'applied' THEN $5 ELSE applied_at END "
        f"WHERE change_id = $1 RETURNING {_COLUMNS}",
        row["change_id"],
        status,
        error,
        superseded_by,
        now,
    )
    committed = await _audit(
        conn,
        row["workspace_id"],
        stored_view,
        cause_kind=cause_kind,
        cause_id=cause_id,
        changes={f"plan_change.{row['change_id']}.status": (row["status"], status)},
        now=now,
    )
    return new, committed


# ---------------------------------------------------------------- requests (internal API)


async def _lock_workspace(
    services: Services, conn: asyncpg.Connection, workspace_id: str
) -> tuple[WorkspaceState, WorkspaceView]:
    """Lock the workspace row (always before any plan-change row: one lock order everywhere)."""
    await db.begin_keyed(conn, services.settings.lock_timeout_ms)
    loaded = await store.lock_workspace(conn, workspace_id)
    if loaded is None:
        raise PlanChangeError(404, "workspace_not_found", f"no billing state for workspace {workspace_id!r}")
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
        loaded = await store.load_workspace(conn, workspace_id)
    if loaded is None:
        raise PlanChangeError(404, "workspace_not_found", f"no billing state for workspace {workspace_id!r}")
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
        loaded = await _lock_workspace(services, conn, workspace_id)
        state, stored_view = loaded
        view = derive_view(state, catalog, now)
        decision = decide(view, request, now, catalog)
        if decision.kind not in (IMMEDIATE, AT_PERIOD_END):
            code = {"blocked": "plan_change_blocked", "contact_sales": "contact_sales_required"}.get(
                decision.kind, "no_change"
            )
            raise PlanChangeError(
                409,
                code,
                f"the change cannot be made: {decision.kind} ({', '.join(decision.reasons)})",
                decision=decision_json(decision),
            )
        if decision.kind == IMMEDIATE and (view.subscription_id is None or view.status not in LIVE_STATUSES):
            raise PlanChangeError(
                409,
                "checkout_required",
                "the workspace has no subscription to update: start a paid plan through Stripe Checkout",
                decision=decision_json(decision),
            )
        if services.stripe is None:
            raise PlanChangeError(
                503,
                "stripe_not_configured",
                "plan changes need STRIPE_API_KEY: no Stripe call can be made",
                decision=decision_json(decision),
            )
        previous = await active_change(conn, workspace_id)
        if previous is not None and previous["status"] == "firing":
            raise PlanChangeError(
                409,
                "change_in_progress",
                f"plan change {previous['change_id']} is being sent to Stripe; retry shortly",
            )
        change_id = "pc_" + secrets.token_hex(12)
        committed: list[Committed] = []
        if previous is not None:
            _row, c = await _set_status(
                conn,
                previous,
                stored_view,
                "superseded",
                cause_kind="request",
                cause_id=request_id,
                now=now,
                superseded_by=None,
            )
            committed.append(c)
        immediate = decision.kind == IMMEDIATE
        effective_at = decision.effective_at or now
        fire_at = (
            effective_at if immediate else effective_at - timedelta(seconds=catalog.policy.fire_lead_seconds)
        )
        params = None
        if immediate:
            params = _params(state, view, decision, request, catalog, change_id)
        row = await conn.fetchrow(
            f"""
            INSERT INTO plan_changes (change_id, workspace_id, kind, status, from_plan, from_interval,
                from_seats, to_plan, to_interval, to_seats, request, decision, effective_at, fire_at,
                subscription_id, idempotency_key, stripe_params, attempts, claimed_at, request_id,
                created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                    $18, $19, $20, $21, $21)
            RETURNING {_COLUMNS}
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
            effective_at,
            fire_at,
            view.subscription_id,
            idempotency_key(change_id),
            params,
            1 if immediate else 0,
            now if immediate else None,
            request_id,
            now,
        )
        if previous is not None:
            await conn.execute(
                "UPDATE plan_changes SET superseded_by = $2 WHERE change_id = $1",
                previous["change_id"],
                change_id,
            )
        committed.append(
            await _audit(
                conn,
                workspace_id,
                stored_view,
                cause_kind="request",
                cause_id=request_id,
                changes={"pending_plan_change": (_summary(previous), _summary(row))},
                now=now,
            )
        )
    return RequestOutcome(
        decision,
        change_json(row),
        committed,
        fire_now=change_id if immediate else None,
        defer_until=None if immediate else fire_at,
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
            raise PlanChangeError(
                404, "no_pending_plan_change", f"workspace {workspace_id!r} has no pending plan change"
            )
        if row["status"] == "firing":
            raise PlanChangeError(
                409, "change_in_progress", f"plan change {row['change_id']} is already being sent to Stripe"
            )
        new, committed = await _set_status(
            conn, row, stored_view, "canceled", cause_kind="request", cause_id=request_id, now=now
        )
    return change_json(new) or {}, committed


def _params(
    state: WorkspaceState,
    view: WorkspaceView,
    decision: Decision,
    request: ChangeRequest,
    catalog: Any,
    change_id: str,
) -> dict[str, Any]:
    record = current_subscription(state)
    item = plan_item(record, catalog) if record is not None else None
    return stripe_update_params(decision, view, request, catalog, item.item_id if item else None, change_id)


# ---------------------------------------------------------------- firing


@dataclass
class FireResult:
    change_id: str
    outcome: str  # applied | failed | waiting_payment | not_due | not_active | claimed | retry | missing
    committed: list[Committed] = field(default_factory=list)
    error: str | None = None


async def fire(services: Services, change_id: str, *, cause: Cause) -> FireResult:
    """Fire one change if it is due and nobody else holds it. Safe to call any number of times.
    ``cause`` is the audit's (cause_kind, cause_id): ('job' | 'sweep', …)."""
    claimed = await _claim(services, change_id, cause)
    if claimed.outcome != "claimed_by_us":
        return claimed
    return await send(services, change_id, cause=cause)


async def _claim(services: Services, change_id: str, cause: Cause) -> FireResult:
    now = services.clock()
    catalog = services.catalog
    async with services.pool.acquire() as conn, conn.transaction():
        await db.begin_keyed(conn, services.settings.lock_timeout_ms)
        workspace_id = await conn.fetchval(
            "SELECT workspace_id FROM plan_changes WHERE change_id = $1", change_id
        )
        if workspace_id is None:
            return FireResult(change_id, "missing")
        # Lock order everywhere: the workspace row, then the change row.
        loaded = await store.lock_workspace(conn, workspace_id)
        assert loaded is not None
        state, stored_view = loaded
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM plan_changes WHERE change_id = $1 FOR UPDATE", change_id
        )
        if row["status"] not in ACTIVE:
            return FireResult(change_id, "not_active")
        if (
            row["status"] == "firing"
            and row["claimed_at"] is not None
            and row["claimed_at"] > now - claim_timeout(services)
        ):
            return FireResult(change_id, "claimed")
        if row["status"] == "pending" and row["fire_at"] > now:
            return FireResult(change_id, "not_due")
        if services.stripe is None:
            log.warning("plan_change_not_fired", change_id=change_id, reason="stripe_not_configured")
            return FireResult(change_id, "not_configured", error="stripe_not_configured")
        params = row["stripe_params"]
        subscription_id = row["subscription_id"]
        if params is None:
            # First claim: re-check the policy against the state of now. Once parameters are fixed
            # (below) they are never recomputed: the call may already have reached Stripe.
            view = derive_view(state, catalog, now)
            request = _with_reported_usage(request_from_json(row["request"]), state)
            recheck = decide(view, request, now, catalog)
            if recheck.kind == BLOCKED and set(recheck.reasons) == {OPEN_INVOICE}:
                if row["status"] == "waiting_payment":
                    return FireResult(change_id, "waiting_payment")
                _new, c = await _set_status(
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
                _new, c = await _set_status(
                    conn,
                    row,
                    stored_view,
                    "failed",
                    cause_kind=cause[0],
                    cause_id=cause[1],
                    now=now,
                    error=reason,
                )
                return FireResult(change_id, "failed", [c], reason)
            decision = _decision_of(row["decision"])
            params = _params(state, view, decision, request, catalog, change_id)
            subscription_id = view.subscription_id
        await conn.execute(
            "UPDATE plan_changes SET status = 'firing', stripe_params = $2, subscription_id = $3, "
            "claimed_at = $4, attempts = attempts + 1, updated_at = $4 WHERE change_id = $1",
            change_id,
            params,
            subscription_id,
            now,
        )
    return FireResult(change_id, "claimed_by_us")


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
    log.info("plan_change_sent", change_id=change_id, subscription_id=answer.get("id"))
    return await _finish(services, change_id, "applied", cause)


async def _finish(
    services: Services, change_id: str, status: str, cause: Cause, *, error: str | None = None
) -> FireResult:
    now = services.clock()
    async with services.pool.acquire() as conn, conn.transaction():
        await db.begin_keyed(conn, services.settings.lock_timeout_ms)
        workspace_id = await conn.fetchval(
            "SELECT workspace_id FROM plan_changes WHERE change_id = $1", change_id
        )
        loaded = await store.lock_workspace(conn, workspace_id)
        assert loaded is not None
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM plan_changes WHERE change_id = $1 FOR UPDATE", change_id
        )
        if row["status"] != "firing":
            return FireResult(change_id, "not_active")
        _new, c = await _set_status(
            conn, row, loaded[1], status, cause_kind=cause[0], cause_id=cause[1], now=now, error=error
        )
    return FireResult(change_id, status, [c], error)


async def due_changes(
    services: Services, limit: int = 100, after: tuple[datetime, str] | None = None
) -> list[tuple[datetime, str]]:
    """What the sweep must try: due pending changes, waiting ones whose block is gone, and firing
    ones without a live claim (a transient error, or a worker that died mid-call).

    ``(fire_at, change_id)`` pairs in that order, after the keyset ``after``: a sweep pages through
    the due set once, so what stays due (still blocked, a transient error) is not retried in a loop.
    """
    now = services.clock()
    page = "AND (pc.fire_at, pc.change_id) > ($4, $5)" if after is not None else ""
    rows = await services.pool.fetch(
        f"""
        SELECT pc.fire_at, pc.change_id FROM plan_changes pc JOIN workspaces w USING (workspace_id)
         WHERE pc.status IN ('pending', 'waiting_payment', 'firing')  -- plan_changes_active_order
           AND ((pc.status = 'pending' AND pc.fire_at <= $1)
            OR (pc.status = 'waiting_payment' AND NOT w.blocked)
            OR (pc.status = 'firing' AND (pc.claimed_at IS NULL OR pc.claimed_at <= $2)))
           {page}
         ORDER BY pc.fire_at, pc.change_id LIMIT $3
        """,
        now,
        now - claim_timeout(services),
        limit,
        *(after or ()),
    )
    return [(r["fire_at"], r["change_id"]) for r in rows]


async def waiting_changes(services: Services, workspace_id: str) -> list[str]:
    rows = await services.pool.fetch(
        "SELECT change_id FROM plan_changes WHERE workspace_id = $1 AND status = 'waiting_payment'",
        workspace_id,
    )
    return [r["change_id"] for r in rows]


async def enqueue_fire(services: Services, change_id: str, *, defer_until: datetime | None, tag: str) -> None:
    """Queue a firing attempt. The job id carries ``tag`` so a release does not collide with the
    deferred job of the same change (which stays in Redis until its time and then finds nothing)."""
    try:
        await services.redis.enqueue_job(
            FIRE_JOB,
            change_id,
            _job_id=f"{services.settings.redis_prefix}:pc:{change_id}:{tag}",
            _queue_name=services.settings.queue_name,
            _defer_until=defer_until,
        )
    except (OSError, RedisError) as exc:
        # The change is durable in Postgres; the cron sweep fires it when it is due.
        log.warning("plan_change_not_enqueued", change_id=change_id, error=f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- confirmation by webhook


def confirms_a_change(meta: EventMeta) -> bool:
    """Whether this webhook answers a Stripe request we made (its idempotency key is ours)."""
    key = meta.idempotency_key
    return bool(key) and key.startswith(KEY_PREFIX) and meta.event_type.startswith("customer.subscription.")


async def record_confirmations(conn: asyncpg.Connection, metas: Sequence[EventMeta]) -> None:
    """Remember which webhook confirmed a change we made.

    The earliest event (by ``created``, then id) wins, so the result does not depend on the order
    in which Stripe's events arrive; the reducer never sees any of this.
    """
    confirming = [m for m in metas if confirms_a_change(m)]
    if not confirming:
        return
    await conn.executemany(
        """
        UPDATE plan_changes SET confirmed_event_id = $2, confirmed_at = $3
         WHERE idempotency_key = $1
           AND (confirmed_at IS NULL OR (confirmed_at, confirmed_event_id) > ($3, $2))
        """,
        [(m.idempotency_key, m.event_id, m.created) for m in confirming],
    )
