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
from handlers.codec import load
from handlers.events import InvoiceSnapshot, SubscriptionSnapshot
from handlers.evolve import quick_init
from handlers.state import (
    InvoiceRecord,
    SubscriptionRecord,
    Usage,
    WorkspaceState,
    WorkspaceView,
)
from handlers.view import derive_view
from worker.infra import json_codec

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


async def lock_events(conn: asyncpg.Connection, event_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    """Row-lock inbox events in id order (two batches never wait on each other in a cycle)."""
    rows = await conn.fetch(
        "SELECT event_id, type, payload, status, attempts, created FROM webhook_events "
        "WHERE event_id = ANY($1::text[]) ORDER BY event_id FOR UPDATE",
        event_ids,
    )
    return {r["event_id"]: r for r in rows}


async def lock_fresh_events(conn: asyncpg.Connection, event_ids: Sequence[str]) -> dict[str, asyncpg.Record]:
    """Row-lock those of the events that are still ``received`` and not locked by anyone else,
    without waiting (read-ahead: an event another transaction holds is left to its own job)."""
    rows = await conn.fetch(
        "SELECT event_id, type, payload, status, attempts, created FROM webhook_events "
        "WHERE event_id = ANY($1::text[]) AND status = 'received' ORDER BY event_id "
        "FOR UPDATE SKIP LOCKED",
        event_ids,
    )
    return {r["event_id"]: r for r in rows}


@quick_init
@dataclass(frozen=True)
class EventFinish:
    """The inbox status an event ends its unit of work with."""

    event_id: str
    status: str
    outcome: str | None
    workspace_id: str | None
    customer_id: str | None
    error: str | None = None
    next_retry_at: datetime | None = None


async def get_event(conn: asyncpg.Connection | asyncpg.Pool, event_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT event_id, type, api_version, created, livemode, status, outcome, workspace_id, "
        "customer_id, attempts, last_error, received_at, processed_at, next_retry_at "
        "FROM webhook_events WHERE event_id = $1",
        event_id,
    )


# ---------------------------------------------------------------- workspace mapping


async def workspaces_for_customers(conn: asyncpg.Connection, customer_ids: Sequence[str]) -> dict[str, str]:
    if not customer_ids:
        return {}
    rows = await conn.fetch(
        "SELECT customer_id, workspace_id FROM customers WHERE customer_id = ANY($1::text[])", customer_ids
    )
    return {r["customer_id"]: r["workspace_id"] for r in rows}


# ---------------------------------------------------------------- workspace state

_VIEW_COLUMNS = (
    "plan, interval, seats, status, subscription_id, trial_end, period_start, period_end, "
    "cancel_at_period_end, custom_contract, storage_addon_units, storage_quota_bytes, blocked, "
    "dunning_level, view"
)
_WORKSPACE_COLUMNS = (
    "workspace_id, customer_id, version, view, members, storage_used_bytes, ai_credit_balance"
)


# The same columns, read in SQL from the view's JSON document ``v`` (the document is the one
# source: a batch sends one text per workspace instead of fifteen array elements).
_VIEW_COLUMNS_FROM_JSON = (
    "v->>'plan', v->>'interval', (v->>'seats')::integer, v->>'status', v->>'subscription_id', "
    "(v->>'trial_end')::timestamptz, (v->>'period_start')::timestamptz, "
    "(v->>'period_end')::timestamptz, (v->>'cancel_at_period_end')::boolean, "
    "(v->>'custom_contract')::boolean, (v->>'storage_addon_units')::integer, "
    "(v->>'storage_quota_bytes')::bigint, jsonb_typeof(v->'block') = 'object', "
    "v->'block'->>'level', v"
)


class LockedWorkspace:
    """A workspace row as read under its lock: state, the stored view and that view's JSON. The
    view is decoded from the JSON only when asked for (events compare views as JSON)."""

    __slots__ = ("_view", "state", "view_json")

    def __init__(
        self, state: WorkspaceState, view: WorkspaceView | None, view_json: Mapping[str, Any]
    ) -> None:
        self.state = state
        self._view = view
        self.view_json = view_json

    @property
    def view(self) -> WorkspaceView:
        if self._view is None:
            self._view = load(WorkspaceView, self.view_json)
        return self._view


async def ensure_workspace(
    conn: asyncpg.Connection, workspace_id: str, catalog: Catalog, now: datetime
) -> None:
    """Create the workspace row (free, version 0) if this is the first we hear of it."""
    await ensure_workspaces(conn, [workspace_id], catalog, now)


async def ensure_workspaces(
    conn: asyncpg.Connection, workspace_ids: Sequence[str], catalog: Catalog, now: datetime
) -> dict[str, LockedWorkspace]:
    """Create the rows that do not exist yet; returns those this transaction created (locked by
    the insert, and with no observations yet: subscriptions and invoices reference the row)."""
    # Every new workspace starts with the same view (no observations yet): derived once.
    view = derive_view(WorkspaceState.new(""), catalog, now)
    view_json = json_codec.jsonable(view)
    rows = await conn.fetch(
        f"INSERT INTO workspaces (workspace_id, {_VIEW_COLUMNS}, created_at, updated_at) "
        f"SELECT id, {_VIEW_COLUMNS_FROM_JSON}, $3, $3 "
        "FROM (SELECT id, $2::jsonb AS v FROM unnest($1::text[]) AS u(id)) t "
        "ON CONFLICT (workspace_id) DO NOTHING RETURNING workspace_id",
        sorted(workspace_ids),
        view_json,  # the connection's jsonb codec encodes it
        now,
    )
    # A new row holds the column defaults: version 0, no customer, no usage, no credits.
    return {
        r["workspace_id"]: LockedWorkspace(WorkspaceState.new(r["workspace_id"]), view, view_json)
        for r in rows
    }


async def lock_workspace(
    conn: asyncpg.Connection, workspace_id: str, touched_invoice: str | None = None
) -> tuple[WorkspaceState, WorkspaceView] | None:
    """Lock the workspace row and load its observations: every subscription, every unpaid invoice
    and the invoice the event touches. Returns the state and the stored view."""
    locked = await lock_workspaces(conn, [workspace_id], [touched_invoice] if touched_invoice else [])
    found = locked.get(workspace_id)
    return None if found is None else (found.state, found.view)


async def lock_workspaces(
    conn: asyncpg.Connection, workspace_ids: Sequence[str], touched_invoices: Sequence[str] = ()
) -> dict[str, LockedWorkspace]:
    """``lock_workspace`` for many rows in one round trip per table, locked in id order so that
    concurrent batches cannot deadlock on existing rows. Absent workspaces are absent."""
    rows = await conn.fetch(
        f"SELECT {_WORKSPACE_COLUMNS} FROM workspaces WHERE workspace_id = ANY($1::text[]) "
        "ORDER BY workspace_id FOR UPDATE",
        workspace_ids,
    )
    return await _load_states(conn, rows, touched_invoices)


async def load_workspace(
    conn: asyncpg.Connection, workspace_id: str
) -> tuple[WorkspaceState, WorkspaceView] | None:
    """Like ``lock_workspace`` without the lock: for reads that decide nothing durable (dry runs)."""
    row = await conn.fetchrow(
        f"SELECT {_WORKSPACE_COLUMNS} FROM workspaces WHERE workspace_id = $1", workspace_id
    )
    if row is None:
        return None
    loaded = (await _load_states(conn, [row], ()))[workspace_id]
    return loaded.state, loaded.view


async def _load_states(
    conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], touched_invoices: Sequence[str]
) -> dict[str, LockedWorkspace]:
    if not rows:
        return {}
    ids = [r["workspace_id"] for r in rows]
    subs: dict[str, dict[str, SubscriptionRecord]] = {i: {} for i in ids}
    invs: dict[str, dict[str, InvoiceRecord]] = {i: {} for i in ids}
    for r in await conn.fetch(
        "SELECT 's' AS kind, workspace_id, snapshot, observed_at, observed_event_id, "
        "NULL::timestamptz AS first_failed_at, NULL::timestamptz AS last_failed_at "
        "FROM subscriptions WHERE workspace_id = ANY($1::text[]) "
        "UNION ALL "
        "SELECT 'i', workspace_id, snapshot, observed_at, observed_event_id, first_failed_at, last_failed_at "
        "FROM invoices WHERE workspace_id = ANY($1::text[]) "
        "AND (status IN ('open', 'uncollectible') OR invoice_id = ANY($2::text[]))",
        ids,
        list(touched_invoices),
    ):
        if r["kind"] == "s":
            sub = _subscription_record(r)
            subs[r["workspace_id"]][sub.snapshot.subscription_id] = sub
        else:
            inv = _invoice_record(r)
            invs[r["workspace_id"]][inv.snapshot.invoice_id] = inv
    return {r["workspace_id"]: _locked(r, subs[r["workspace_id"]], invs[r["workspace_id"]]) for r in rows}


def _locked(
    row: asyncpg.Record, subscriptions: dict[str, SubscriptionRecord], invoices: dict[str, InvoiceRecord]
) -> LockedWorkspace:
    state = WorkspaceState(
        workspace_id=row["workspace_id"],
        customer_id=row["customer_id"],
        subscriptions=subscriptions,
        invoices=invoices,
        version=row["version"],
        usage=Usage(row["members"], row["storage_used_bytes"]),
        credit_balance=row["ai_credit_balance"],
    )
    return LockedWorkspace(state, None, row["view"])


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
    """Upsert one observation (reconcile) through the batch's write statement."""
    await write_batch(conn, subscriptions=[(workspace_id, record)])


async def save_invoice(conn: asyncpg.Connection, workspace_id: str, record: InvoiceRecord) -> None:
    await write_batch(conn, invoices=[(workspace_id, record)])


def _invoice_row(workspace_id: str, record: InvoiceRecord) -> dict[str, Any]:
    s = record.snapshot
    return {
        "id": s.invoice_id,
        "ws": workspace_id,
        "cus": s.customer_id,
        "sub": s.subscription_id,
        "st": s.status,
        "cur": s.currency,
        "due": s.amount_due,
        "paid": s.amount_paid,
        "rem": s.amount_remaining,
        "att": s.attempt_count,
        "nxt": s.next_payment_attempt,
        "reason": s.billing_reason,
        "created": s.created,
        "ff": record.first_failed_at,
        "lf": record.last_failed_at,
        "snap": json_codec.record_fragment(s),
        "obs": record.observed_at,
        "obs_ev": record.observed_event_id,
    }


async def save_workspace(
    conn: asyncpg.Connection,
    state: WorkspaceState,
    view: WorkspaceView,
    now: datetime,
) -> None:
    """Write one workspace's state and view through the batch's write statement."""
    await write_batch(conn, workspaces=[(state, view, json_codec.jsonable(view))], now=now)


@quick_init
@dataclass(frozen=True)
class AuditEntry:
    """One audit-log row; ``before`` and ``after`` are the views' JSON documents."""

    workspace_id: str
    version: int
    cause_kind: str
    cause_id: str
    changes: Mapping[str, Any]
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    effective_at: datetime


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
    entry = AuditEntry(
        workspace_id,
        version,
        cause_kind,
        cause_id,
        changes,
        json_codec.jsonable(before),
        json_codec.jsonable(after),
        effective_at,
    )
    await write_batch(conn, audit=[entry])


# ---------------------------------------------------------------- a batch's writes in one statement

# Each table's rows come as one JSON document (``jsonb_to_recordset``): asyncpg encodes an array
# parameter element by element, with abstract-class checks on each (~50 per event, ~10 % of a
# batch's worker CPU), while one document is one orjson call. The rows updated are also named
# by an id array: the planner guesses 100 rows for a document, and for a small table it would
# rather scan it than probe its primary key (the ``ANY`` is an index condition).
_WRITE_BATCH = (
    """
WITH subs AS (
    INSERT INTO subscriptions (subscription_id, workspace_id, customer_id, status, snapshot,
                               observed_at, observed_event_id, updated_at)
    SELECT id, ws, cus, st, snap, obs, obs_ev, now()
      FROM jsonb_to_recordset($1::jsonb)
           AS t(id text, ws text, cus text, st text, snap jsonb, obs timestamptz, obs_ev text)
    ON CONFLICT (subscription_id) DO UPDATE
       SET workspace_id = EXCLUDED.workspace_id, customer_id = EXCLUDED.customer_id,
           status = EXCLUDED.status, snapshot = EXCLUDED.snapshot,
           observed_at = EXCLUDED.observed_at, observed_event_id = EXCLUDED.observed_event_id,
           updated_at = now()
), invs AS (
    INSERT INTO invoices (invoice_id, workspace_id, customer_id, subscription_id, status, currency,
                          amount_due, amount_paid, amount_remaining, attempt_count,
                          next_payment_attempt, billing_reason, invoice_created, first_failed_at,
                          last_failed_at, snapshot, observed_at, observed_event_id, updated_at)
    SELECT id, ws, cus, sub, st, cur, due, paid, rem, att, nxt, reason, created, ff, lf, snap,
           obs, obs_ev, now()
      FROM jsonb_to_recordset($2::jsonb)
           AS t(id text, ws text, cus text, sub text, st text, cur text, due bigint, paid bigint,
                rem bigint, att integer, nxt timestamptz, reason text, created timestamptz,
                ff timestamptz, lf timestamptz, snap jsonb, obs timestamptz, obs_ev text)
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
), ws AS (
    UPDATE workspaces w
       SET ("""
    + _VIEW_COLUMNS
    + """) = ("""
    + _VIEW_COLUMNS_FROM_JSON
    + """),
           customer_id = t.cus, version = t.version, updated_at = $6
      FROM jsonb_to_recordset($3::jsonb) AS t(id text, v jsonb, cus text, version bigint)
     WHERE w.workspace_id = t.id AND w.workspace_id = ANY($8::text[])
), aud AS (
    INSERT INTO audit_log (workspace_id, version, cause_kind, cause_id, changes, before, after,
                           effective_at)
    SELECT ws, version, ck, ci, changes, before, after, eff
      FROM jsonb_to_recordset($4::jsonb)
           AS t(n integer, ws text, version bigint, ck text, ci text, changes jsonb, before jsonb,
                after jsonb, eff timestamptz)
     ORDER BY n
), fin AS (
    UPDATE webhook_events e
       SET status = t.st, outcome = t.outcome, workspace_id = COALESCE(t.ws, e.workspace_id),
           customer_id = COALESCE(t.cus, e.customer_id), attempts = e.attempts + 1,
           processed_at = CASE WHEN t.st IN ('processed', 'ignored') THEN $6 ELSE e.processed_at END,
           last_error = t.err, next_retry_at = t.nxt
      FROM jsonb_to_recordset($5::jsonb)
           AS t(id text, st text, outcome text, ws text, cus text, err text, nxt timestamptz)
     WHERE e.event_id = t.id AND e.event_id = ANY($9::text[])
), mapped AS (
    INSERT INTO customers (customer_id, workspace_id)
    SELECT cus, ws FROM jsonb_to_recordset($7::jsonb) AS t(cus text, ws text)
    ON CONFLICT (customer_id) DO NOTHING
    RETURNING customer_id
)
-- The customers mapped by this batch, with the events that were waiting for them (as of before
-- this statement: the caller adds the batch's own unmatched events).
SELECT m.customer_id, e.event_id
  FROM mapped m LEFT JOIN webhook_events e ON e.customer_id = m.customer_id AND e.status = 'unmatched'
"""
)


async def write_batch(
    conn: asyncpg.Connection,
    *,
    subscriptions: Sequence[tuple[str, SubscriptionRecord]] = (),
    invoices: Sequence[tuple[str, InvoiceRecord]] = (),
    workspaces: Sequence[tuple[WorkspaceState, WorkspaceView, Mapping[str, Any]]] = (),
    audit: Sequence[AuditEntry] = (),
    finishes: Sequence[EventFinish] = (),
    customers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> dict[str, list[str]]:
    """Every write of a batch of events in one statement (one round trip). Observations of one
    object written twice in the batch keep the later record, as sequential upserts would.
    ``customers`` maps new customers to workspaces (the first mapping stays); returns each customer
    this batch mapped, with the ids of the events that were unmatched waiting for it. ``now``
    (the processing time) is needed when workspaces or inbox statuses are written."""
    if now is None and (workspaces or finishes):
        raise ValueError("write_batch: now is required to write workspaces or inbox statuses")
    subs = {
        r.snapshot.subscription_id: {
            "id": r.snapshot.subscription_id,
            "ws": ws,
            "cus": r.snapshot.customer_id,
            "st": r.snapshot.status,
            "snap": json_codec.record_fragment(r.snapshot),
            "obs": r.observed_at,
            "obs_ev": r.observed_event_id,
        }
        for ws, r in subscriptions
    }
    invs = {r.snapshot.invoice_id: _invoice_row(ws, r) for ws, r in invoices}
    wss = [
        {"id": state.workspace_id, "v": encoded, "cus": state.customer_id, "version": state.version}
        for state, _, encoded in workspaces
    ]
    auds = [
        {
            "n": n,
            "ws": e.workspace_id,
            "version": e.version,
            "ck": e.cause_kind,
            "ci": e.cause_id,
            "changes": e.changes,
            "before": e.before,
            "after": e.after,
            "eff": e.effective_at,
        }
        for n, e in enumerate(audit)
    ]
    fins = [
        {
            "id": f.event_id,
            "st": f.status,
            "outcome": f.outcome,
            "ws": f.workspace_id,
            "cus": f.customer_id,
            "err": f.error,
            "nxt": f.next_retry_at,
        }
        for f in finishes
    ]
    mappings = [{"cus": c, "ws": w} for c, w in (customers or {}).items()]
    # The connection's json codec encodes each document (orjson: one call per table).
    rows = await conn.fetch(
        _WRITE_BATCH,
        list(subs.values()),
        list(invs.values()),
        wss,
        auds,
        fins,
        now,
        mappings,
        [w["id"] for w in wss],
        [f["id"] for f in fins],
    )
    mapped: dict[str, list[str]] = {}
    for r in rows:
        waiting = mapped.setdefault(r["customer_id"], [])
        if r["event_id"] is not None:
            waiting.append(r["event_id"])
    return mapped


# ---------------------------------------------------------------- reads for the API


async def get_workspace(conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT workspace_id, customer_id, view, version, created_at, updated_at FROM workspaces WHERE workspace_id = $1",
        workspace_id,
    )


# What the API shows of a workspace's unpaid invoices, oldest first.
OPEN_INVOICE_COLUMNS = (
    "invoice_id",
    "status",
    "currency",
    "amount_due",
    "amount_remaining",
    "attempt_count",
    "next_payment_attempt",
    "billing_reason",
    "invoice_created",
    "first_failed_at",
    "last_failed_at",
)
OPEN_INVOICES_OF = (
    "invoices WHERE workspace_id = {} AND status IN ('open', 'uncollectible') ORDER BY invoice_created"
)


async def open_invoices(
    conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str
) -> Sequence[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {', '.join(OPEN_INVOICE_COLUMNS)} FROM {OPEN_INVOICES_OF.format('$1')}", workspace_id
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
