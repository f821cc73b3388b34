"""Every write of a batch of events in one statement, so a unit of work costs one round trip.

Workspace states, subscription and invoice observations, audit entries, inbox statuses and new
customer mappings go into one statement of data-modifying CTEs, one JSON document per table. The
single-row saves (reconcile, re-evaluation, plan changes) go through the same statement, so each
table has one upsert.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from handlers.state import InvoiceRecord, SubscriptionRecord, WorkspaceState, WorkspaceView
from worker.infra import json_codec
from worker.storage.audit import AuditEntry
from worker.storage.inbox import EventFinish
from worker.storage.workspaces import VIEW_COLUMNS, VIEW_COLUMNS_FROM_JSON

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
    + VIEW_COLUMNS
    + """) = ("""
    + VIEW_COLUMNS_FROM_JSON
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
    wss = _workspace_rows(workspaces)
    fins = _finish_rows(finishes)
    # The connection's json codec encodes each document (orjson: one call per table).
    rows = await conn.fetch(
        _WRITE_BATCH,
        _subscription_rows(subscriptions),
        _invoice_rows(invoices),
        wss,
        _audit_rows(audit),
        fins,
        now,
        [{"cus": c, "ws": w} for c, w in (customers or {}).items()],
        [w["id"] for w in wss],
        [f["id"] for f in fins],
    )
    return _waiting_by_customer(rows)


def _subscription_rows(subscriptions: Sequence[tuple[str, SubscriptionRecord]]) -> list[dict[str, Any]]:
    """One row per subscription, the later record of one written twice."""
    rows = {
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
    return list(rows.values())


def _invoice_rows(invoices: Sequence[tuple[str, InvoiceRecord]]) -> list[dict[str, Any]]:
    """One row per invoice, the later record of one written twice."""
    rows = {r.snapshot.invoice_id: _invoice_row(ws, r) for ws, r in invoices}
    return list(rows.values())


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


def _workspace_rows(
    workspaces: Sequence[tuple[WorkspaceState, WorkspaceView, Mapping[str, Any]]],
) -> list[dict[str, Any]]:
    """The view's JSON document (its columns are read from it in SQL), customer and version."""
    return [
        {"id": state.workspace_id, "v": encoded, "cus": state.customer_id, "version": state.version}
        for state, _, encoded in workspaces
    ]


def _audit_rows(audit: Sequence[AuditEntry]) -> list[dict[str, Any]]:
    """Numbered: the entries are inserted in the order given."""
    return [
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


def _finish_rows(finishes: Sequence[EventFinish]) -> list[dict[str, Any]]:
    return [
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


def _waiting_by_customer(rows: Sequence[asyncpg.Record]) -> dict[str, list[str]]:
    """Each customer the statement mapped, with the unmatched events that were waiting for it."""
    mapped: dict[str, list[str]] = {}
    for r in rows:
        waiting = mapped.setdefault(r["customer_id"], [])
        if r["event_id"] is not None:
            waiting.append(r["event_id"])
    return mapped


# ---------------------------------------------------------------- single rows, same statement


async def save_subscription(conn: asyncpg.Connection, workspace_id: str, record: SubscriptionRecord) -> None:
    """Upsert one observation (reconcile) through the batch's write statement."""
    await write_batch(conn, subscriptions=[(workspace_id, record)])


async def save_invoice(conn: asyncpg.Connection, workspace_id: str, record: InvoiceRecord) -> None:
    await write_batch(conn, invoices=[(workspace_id, record)])


async def save_workspace(
    conn: asyncpg.Connection,
    state: WorkspaceState,
    view: WorkspaceView,
    now: datetime,
) -> None:
    """Write one workspace's state and view through the batch's write statement."""
    await write_batch(conn, workspaces=[(state, view, json_codec.jsonable(view))], now=now)


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
