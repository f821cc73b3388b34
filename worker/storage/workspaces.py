"""Workspace rows, read with their observations (subscriptions, unpaid invoices) under one lock.

Create (``ensure``), lock and load a workspace's row with its subscriptions and unpaid invoices,
map Stripe customers to workspaces, and the API's reads. Writes go through
``worker.storage.writer`` (one statement per batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from handlers.catalog import Catalog
from handlers.codec import load
from handlers.events import InvoiceSnapshot, SubscriptionSnapshot
from handlers.state import (
    InvoiceRecord,
    SubscriptionRecord,
    Usage,
    WorkspaceState,
    WorkspaceView,
)
from handlers.view import derive_view
from worker.infra import json_codec

# ---------------------------------------------------------------- workspace mapping


async def workspaces_for_customers(conn: asyncpg.Connection, customer_ids: Sequence[str]) -> dict[str, str]:
    if not customer_ids:
        return {}
    rows = await conn.fetch(
        "SELECT customer_id, workspace_id FROM customers WHERE customer_id = ANY($1::text[])", customer_ids
    )
    return {r["customer_id"]: r["workspace_id"] for r in rows}


# ---------------------------------------------------------------- workspace state

VIEW_COLUMNS = (
    "plan, interval, seats, status, subscription_id, trial_end, period_start, period_end, "
    "cancel_at_period_end, custom_contract, storage_addon_units, storage_quota_bytes, blocked, "
    "dunning_level, view"
)
_WORKSPACE_COLUMNS = (
    "workspace_id, customer_id, version, view, members, storage_used_bytes, ai_credit_balance"
)


# The same columns, read in SQL from the view's JSON document ``v`` (the document is the one
# source: a batch sends one text per workspace instead of fifteen array elements).
VIEW_COLUMNS_FROM_JSON = (
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
    the insert, and with no observations yet: subscriptions and invoices reference the row).
    Rows are inserted in id order, and those that exist already cost an index probe: an event
    batch creates its missing workspaces this way before it locks any (see ``lock_workspaces``)."""
    # Every new workspace starts with the same view (no observations yet): derived once.
    view = derive_view(WorkspaceState.new(""), catalog, now)
    view_json = json_codec.jsonable(view)
    rows = await conn.fetch(
        f"INSERT INTO workspaces (workspace_id, {VIEW_COLUMNS}, created_at, updated_at) "
        f"SELECT id, {VIEW_COLUMNS_FROM_JSON}, $3, $3 "
        "FROM (SELECT id, $2::jsonb AS v FROM unnest($1::text[]) AS u(id) "
        "      WHERE NOT EXISTS (SELECT 1 FROM workspaces w WHERE w.workspace_id = u.id) "
        "      ORDER BY id) t "
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


# Workspaces whose level may move with time, by keyset pages over two partial indexes.
DUNNING_CANDIDATES = """
SELECT workspace_id FROM (
    (SELECT DISTINCT workspace_id FROM invoices
      WHERE status IN ('open', 'uncollectible') AND workspace_id > $1
      ORDER BY workspace_id LIMIT $2)
    UNION
    (SELECT workspace_id FROM workspaces WHERE blocked AND workspace_id > $1
      ORDER BY workspace_id LIMIT $2)
) candidates
ORDER BY workspace_id LIMIT $2
"""


async def dunning_candidates(conn: asyncpg.Connection | asyncpg.Pool, after: str, limit: int) -> list[str]:
    """The next ``limit`` workspaces after ``after`` (keyset cursor) whose dunning level may move."""
    return [r["workspace_id"] for r in await conn.fetch(DUNNING_CANDIDATES, after, limit)]
