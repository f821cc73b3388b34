"""The repository: loads and saves workspace state, the inbox and the audit log (asyncpg).

Every function takes the connection of the caller's transaction; the unit of work that groups
them is ``worker.processor``. Rows map to the pure core's dataclasses through ``handlers.codec``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from handlers.catalog import Catalog
from handlers.codec import load, to_jsonable
from handlers.events import InvoiceSnapshot, SubscriptionSnapshot
from handlers.state import (
    InvoiceRecord,
    SubscriptionRecord,
    Usage,
    WorkspaceState,
    WorkspaceView,
)
from handlers.view import derive_view

# ---------------------------------------------------------------- inbox


async def insert_event(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    event_id: str,
    event_type: str,
    api_version: str | None,
    created: datetime,
    livemode: bool,
    payload: str,
) -> tuple[bool, str]:
    """Insert into the inbox, idempotent on the event id. Returns (is_new, current status)."""
    row = await conn.fetchrow(
        """
        WITH ins AS (
            INSERT INTO webhook_events (event_id, type, api_version, created, livemode, payload)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (event_id) DO NOTHING
            RETURNING status
        )
        SELECT true AS new, status FROM ins
        UNION ALL
        SELECT false AS new, status FROM webhook_events WHERE event_id = $1
        LIMIT 1
        """,
        event_id,
        event_type,
        api_version,
        created,
        livemode,
        payload,
    )
    if row is None:
        # A concurrent delivery of the same event committed after this statement's snapshot:
        # a new statement sees it.
        status = await conn.fetchval("SELECT status FROM webhook_events WHERE event_id = $1", event_id)
        return False, status
    return row["new"], row["status"]


@dataclass(frozen=True)
class InboxRow:
    """One verified event for ``insert_events``."""

    event_id: str
    event_type: str
    api_version: str | None
    created: datetime
    livemode: bool
    payload: str


async def insert_events(
    conn: asyncpg.Connection, rows: Sequence[InboxRow]
) -> dict[str, tuple[bool, str | None]]:
    """``insert_event`` for many events (distinct ids) in two statements; each id → (is_new, status).

    One multi-row INSERT … ON CONFLICT DO NOTHING, then the status of the ids that conflicted,
    read by a new statement so that it sees deliveries committed concurrently. Each statement
    commits on its own (no transaction): a returned row is durable.
    """
    inserted = await conn.fetch(
        """
        INSERT INTO webhook_events (event_id, type, api_version, created, livemode, payload)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bool[], $6::text[])
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id, status
        """,
        [r.event_id for r in rows],
        [r.event_type for r in rows],
        [r.api_version for r in rows],
        [r.created for r in rows],
        [r.livemode for r in rows],
        [r.payload for r in rows],
    )
    out: dict[str, tuple[bool, str | None]] = {r["event_id"]: (True, r["status"]) for r in inserted}
    conflicted = [r.event_id for r in rows if r.event_id not in out]
    if conflicted:
        existing = await conn.fetch(
            "SELECT event_id, status FROM webhook_events WHERE event_id = ANY($1::text[])", conflicted
        )
        found = {r["event_id"]: r["status"] for r in existing}
        out.update((event_id, (False, found.get(event_id))) for event_id in conflicted)
    return out


async def lock_event(conn: asyncpg.Connection, event_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT event_id, type, payload, status, attempts, created FROM webhook_events "
        "WHERE event_id = $1 FOR UPDATE",
        event_id,
    )


async def finish_event(
    conn: asyncpg.Connection,
    event_id: str,
    *,
    status: str,
    outcome: str | None,
    workspace_id: str | None,
    customer_id: str | None,
    now: datetime,
    error: str | None = None,
    next_retry_at: datetime | None = None,
) -> None:
    await conn.execute(
        """
        UPDATE webhook_events
           SET status = $2, outcome = $3, workspace_id = COALESCE($4, workspace_id),
               customer_id = COALESCE($5, customer_id), attempts = attempts + 1,
               processed_at = CASE WHEN $2 IN ('processed', 'ignored') THEN $6 ELSE processed_at END,
               last_error = $7, next_retry_at = $8
         WHERE event_id = $1
        """,
        event_id,
        status,
        outcome,
        workspace_id,
        customer_id,
        now,
        error,
        next_retry_at,
    )


async def get_event(conn: asyncpg.Connection | asyncpg.Pool, event_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT event_id, type, api_version, created, livemode, status, outcome, workspace_id, "
        "customer_id, attempts, last_error, received_at, processed_at, next_retry_at "
        "FROM webhook_events WHERE event_id = $1",
        event_id,
    )


async def unmatched_for_customer(conn: asyncpg.Connection | asyncpg.Pool, customer_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT event_id FROM webhook_events WHERE status = 'unmatched' AND customer_id = $1",
        customer_id,
    )
    return [r["event_id"] for r in rows]


# ---------------------------------------------------------------- workspace mapping


async def workspace_for_customer(conn: asyncpg.Connection, customer_id: str | None) -> str | None:
    if customer_id is None:
        return None
    return await conn.fetchval("SELECT workspace_id FROM customers WHERE customer_id = $1", customer_id)


async def remember_customer(conn: asyncpg.Connection, customer_id: str, workspace_id: str) -> bool:
    """Remember customer → workspace; True when the mapping is new."""
    inserted = await conn.fetchval(
        "INSERT INTO customers (customer_id, workspace_id) VALUES ($1, $2) "
        "ON CONFLICT (customer_id) DO NOTHING RETURNING true",
        customer_id,
        workspace_id,
    )
    return bool(inserted)


# ---------------------------------------------------------------- workspace state

_VIEW_COLUMNS = (
    "plan, interval, seats, status, subscription_id, trial_end, period_start, period_end, "
    "cancel_at_period_end, custom_contract, storage_addon_units, storage_quota_bytes, blocked, "
    "dunning_level, view"
)


def _view_values(view: WorkspaceView) -> tuple[Any, ...]:
    return (
        view.plan,
        view.interval,
        view.seats,
        view.status,
        view.subscription_id,
        view.trial_end,
        view.period_start,
        view.period_end,
        view.cancel_at_period_end,
        view.custom_contract,
        view.storage_addon_units,
        view.storage_quota_bytes,
        view.blocked,
        view.block.level if view.block else None,
        to_jsonable(view),
    )


async def ensure_workspace(
    conn: asyncpg.Connection, workspace_id: str, catalog: Catalog, now: datetime
) -> None:
    """Create the workspace row (free, version 0) if this is the first we hear of it."""
    view = derive_view(WorkspaceState.new(workspace_id), catalog, now)
    await conn.execute(
        f"INSERT INTO workspaces (workspace_id, {_VIEW_COLUMNS}, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17) "
        "ON CONFLICT (workspace_id) DO NOTHING",
        workspace_id,
        *_view_values(view),
        now,
    )


async def lock_workspace(
    conn: asyncpg.Connection, workspace_id: str, touched_invoice: str | None = None
) -> tuple[WorkspaceState, WorkspaceView] | None:
    """Lock the workspace row and load its observations: every subscription, every unpaid invoice
    and the invoice the event touches. Returns the state and the stored view."""
    row = await conn.fetchrow(
        "SELECT workspace_id, customer_id, version, view, members, storage_used_bytes, ai_credit_balance "
        "FROM workspaces WHERE workspace_id = $1 FOR UPDATE",
        workspace_id,
    )
    if row is None:
        return None
    return await _load_state(conn, row, touched_invoice)


async def load_workspace(
    conn: asyncpg.Connection, workspace_id: str
) -> tuple[WorkspaceState, WorkspaceView] | None:
    """Like ``lock_workspace`` without the lock: for reads that decide nothing durable (dry runs)."""
    row = await conn.fetchrow(
        "SELECT workspace_id, customer_id, version, view, members, storage_used_bytes, ai_credit_balance "
        "FROM workspaces WHERE workspace_id = $1",
        workspace_id,
    )
    return None if row is None else await _load_state(conn, row, None)


async def _load_state(
    conn: asyncpg.Connection, row: asyncpg.Record, touched_invoice: str | None
) -> tuple[WorkspaceState, WorkspaceView]:
    workspace_id = row["workspace_id"]
    subs = await conn.fetch(
        "SELECT snapshot, observed_at, observed_event_id FROM subscriptions WHERE workspace_id = $1",
        workspace_id,
    )
    invs = await conn.fetch(
        "SELECT snapshot, observed_at, observed_event_id, first_failed_at, last_failed_at "
        "FROM invoices WHERE workspace_id = $1 "
        "AND (status IN ('open', 'uncollectible') OR invoice_id = $2)",
        workspace_id,
        touched_invoice,
    )
    state = WorkspaceState(
        workspace_id=workspace_id,
        customer_id=row["customer_id"],
        subscriptions={r.snapshot.subscription_id: r for r in map(_subscription_record, subs)},
        invoices={r.snapshot.invoice_id: r for r in map(_invoice_record, invs)},
        version=row["version"],
        usage=Usage(row["members"], row["storage_used_bytes"]),
        credit_balance=row["ai_credit_balance"],
    )
    return state, load(WorkspaceView, row["view"])


def _subscription_record(row: asyncpg.Record) -> SubscriptionRecord:
    return SubscriptionRecord(
        load(SubscriptionSnapshot, row["snapshot"]), row["observed_at"], row["observed_event_id"]
    )


def _invoice_record(row: asyncpg.Record) -> InvoiceRecord:
    return InvoiceRecord(
        load(InvoiceSnapshot, row["snapshot"]),
        row["observed_at"],
        row["observed_event_id"],
        row["first_failed_at"],
        row["last_failed_at"],
    )


async def save_subscription(conn: asyncpg.Connection, workspace_id: str, record: SubscriptionRecord) -> None:
    snap = record.snapshot
    await conn.execute(
        """
        INSERT INTO subscriptions (subscription_id, workspace_id, customer_id, status, snapshot,
                                   observed_at, observed_event_id, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, now())
        ON CONFLICT (subscription_id) DO UPDATE
           SET workspace_id = EXCLUDED.workspace_id, customer_id = EXCLUDED.customer_id,
               status = EXCLUDED.status, snapshot = EXCLUDED.snapshot,
               observed_at = EXCLUDED.observed_at, observed_event_id = EXCLUDED.observed_event_id,
               updated_at = now()
        """,
        snap.subscription_id,
        workspace_id,
        snap.customer_id,
        snap.status,
        to_jsonable(snap),
        record.observed_at,
        record.observed_event_id,
    )


async def save_invoice(conn: asyncpg.Connection, workspace_id: str, record: InvoiceRecord) -> None:
    s = record.snapshot
    await conn.execute(
        """
        INSERT INTO invoices (invoice_id, workspace_id, customer_id, subscription_id, status, currency,
                              amount_due, amount_paid, amount_remaining, attempt_count,
                              next_payment_attempt, billing_reason, invoice_created, first_failed_at,
                              last_failed_at, snapshot, observed_at, observed_event_id, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, now())
        ON CONFLICT (invoice_id) DO UPDATE
           SET workspace_id = EXCLUDED.workspace_id, status = EXCLUDED.status,
               subscription_id = EXCLUDED.subscription_id, currency = EXCLUDED.currency,
               amount_due = EXCLUDED.amount_due, amount_paid = EXCLUDED.amount_paid,
               amount_remaining = EXCLUDED.amount_remaining, attempt_count = EXCLUDED.attempt_count,
               next_payment_attempt = EXCLUDED.next_payment_attempt,
               billing_reason = EXCLUDED.billing_reason, first_failed_at = EXCLUDED.first_failed_at,
               last_failed_at = EXCLUDED.last_failed_at, snapshot = EXCLUDED.snapshot,
               observed_at = EXCLUDED.observed_at, observed_event_id = EXCLUDED.observed_event_id,
               updated_at = now()
        """,
        s.invoice_id,
        workspace_id,
        s.customer_id,
        s.subscription_id,
        s.status,
        s.currency,
        s.amount_due,
        s.amount_paid,
        s.amount_remaining,
        s.attempt_count,
        s.next_payment_attempt,
        s.billing_reason,
        s.created,
        record.first_failed_at,
        record.last_failed_at,
        to_jsonable(s),
        record.observed_at,
        record.observed_event_id,
    )


async def save_workspace(
    conn: asyncpg.Connection,
    state: WorkspaceState,
    view: WorkspaceView,
    now: datetime,
) -> None:
    await conn.execute(
        f"UPDATE workspaces SET ({_VIEW_COLUMNS}, customer_id, version, updated_at) = "
        "($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) "
        "WHERE workspace_id = $1",
        state.workspace_id,
        *_view_values(view),
        state.customer_id,
        state.version,
        now,
    )


async def append_audit(
    conn: asyncpg.Connection,
    *,
    workspace_id: str,
    version: int,
    cause_kind: str,
    cause_id: str,
    changes: Mapping[str, Any],
    before: WorkspaceView,
    after: WorkspaceView,
    effective_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (workspace_id, version, cause_kind, cause_id, changes, before, after, effective_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        workspace_id,
        version,
        cause_kind,
        cause_id,
        {k: list(v) for k, v in changes.items()},
        to_jsonable(before),
        to_jsonable(after),
        effective_at,
    )


# ---------------------------------------------------------------- reads for the API


async def get_workspace(conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT workspace_id, customer_id, view, version, created_at, updated_at FROM workspaces WHERE workspace_id = $1",
        workspace_id,
    )


async def open_invoices(
    conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str
) -> Sequence[asyncpg.Record]:
    return await conn.fetch(
        "SELECT invoice_id, status, currency, amount_due, amount_remaining, attempt_count, "
        "next_payment_attempt, billing_reason, invoice_created, first_failed_at, last_failed_at "
        "FROM invoices WHERE workspace_id = $1 AND status IN ('open', 'uncollectible') "
        "ORDER BY invoice_created",
        workspace_id,
    )


async def audit_entries(
    conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str, limit: int = 100
) -> Sequence[asyncpg.Record]:
    return await conn.fetch(
        "SELECT version, cause_kind, cause_id, changes, effective_at, recorded_at FROM audit_log "
        "WHERE workspace_id = $1 ORDER BY version DESC LIMIT $2",
        workspace_id,
        limit,
    )
