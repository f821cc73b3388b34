"""The support desk's reads: a workspace's timeline, the event browser, an event's transitions,
a workspace's plan changes, and finding a workspace by a Stripe id.

Each page is ONE statement: the timeline is a UNION ALL of four index scans (audit_log,
webhook_events, plan_changes, ai_credit_ledger, each in (time, id) order from migration 0010),
each cut at the cursor and the page size, merged and cut again. The keyset is (time, kind, id)
descending: rows inserted while someone pages never shift the pages still to come.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from handlers.timeline import CREDIT, EVENT, NUMERIC_KINDS, PLAN_CHANGE, TRANSITION, Cursor
from worker.plan_changes.store import COLUMNS

Conn = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class Source:
    """One table of the timeline: its time column, its id column and the document of a row."""

    kind: str
    table: str
    at: str
    key: str
    data: str
    join: str = ""


SOURCES = (
    Source(
        TRANSITION,
        "audit_log a",
        "a.effective_at",
        "a.version",
        "jsonb_build_object('version', a.version, 'cause_kind', a.cause_kind, 'cause_id', a.cause_id, "
        "'changes', a.changes, 'recorded_at', a.recorded_at, 'event_type', e.type, "
        "'api_version', e.api_version)",
        "LEFT JOIN webhook_events e ON a.cause_kind = 'event' AND e.event_id = a.cause_id",
    ),
    Source(
        EVENT,
        "webhook_events a",
        "a.created",
        "a.event_id",
        "jsonb_build_object('event_id', a.event_id, 'type', a.type, 'status', a.status, "
        "'outcome', a.outcome, 'last_error', a.last_error, 'api_version', a.api_version, "
        "'attempts', a.attempts, 'received_at', a.received_at)",
    ),
    Source(
        PLAN_CHANGE,
        "plan_changes a",
        "a.created_at",
        "a.change_id",
        "jsonb_build_object('change_id', a.change_id, 'status', a.status, 'change_kind', a.kind, "
        "'history', a.history, 'idempotency_key', a.idempotency_key, "
        "'confirmed_event_id', a.confirmed_event_id, 'confirmed_at', a.confirmed_at, "
        "'request_id', a.request_id, 'last_error', a.last_error, 'superseded_by', a.superseded_by, "
        "'effective_at', a.effective_at, 'from_plan', a.from_plan, 'from_interval', a.from_interval, "
        "'from_seats', a.from_seats, 'to_plan', a.to_plan, 'to_interval', a.to_interval, "
        "'to_seats', a.to_seats)",
    ),
    Source(
        CREDIT,
        "ai_credit_ledger a",
        "a.recorded_at",
        "a.id",
        "jsonb_build_object('id', a.id, 'entry_kind', a.kind, 'amount', a.amount, "
        "'balance_after', a.balance_after, 'source_key', a.source_key, 'reason', a.reason, "
        "'reference', a.reference, 'cause_kind', a.cause_kind, 'cause_id', a.cause_id)",
    ),
)


def _after(source: Source, cursor: Cursor | None) -> str:
    """The keyset condition of one source: strictly older than the cursor in (time, kind, id).

    At the cursor's instant, a kind ordered below the cursor's comes entirely after it, one
    above entirely before; the cursor's own kind continues by id. Parameters: $3 time, $4 id.
    """
    if cursor is None:
        return ""
    if source.kind < cursor.kind:
        return f"AND {source.at} <= $3"
    if source.kind > cursor.kind:
        return f"AND {source.at} < $3"
    key = "$4::bigint" if source.kind in NUMERIC_KINDS else "$4::text"
    return f"AND ({source.at}, {source.key}) < ($3, {key})"


def timeline_sql(cursor: Cursor | None) -> str:
    parts = []
    for s in SOURCES:
        sort_key = f"lpad({s.key}::text, 20, '0')" if s.kind in NUMERIC_KINDS else s.key
        parts.append(
            f"(SELECT '{s.kind}'::text AS kind, {s.at} AS at, {sort_key} AS sort_key, {s.data} AS data "
            f"FROM {s.table} {s.join} WHERE a.workspace_id = $1 {_after(s, cursor)} "
            f"ORDER BY {s.at} DESC, {s.key} DESC LIMIT $2)"
        )
    return (
        "SELECT kind, at, data FROM (" + " UNION ALL ".join(parts) + ") t "
        "ORDER BY at DESC, kind DESC, sort_key DESC LIMIT $2"
    )


def _cursor_args(cursor: Cursor | None) -> list[Any]:
    if cursor is None:
        return []
    return [cursor.at, int(cursor.key) if cursor.kind in NUMERIC_KINDS else cursor.key]


async def timeline_page(conn: Conn, workspace_id: str, limit: int, cursor: Cursor | None) -> Sequence[Any]:
    """Up to ``limit`` rows (kind, at, data) newest first, strictly after ``cursor``."""
    return await conn.fetch(timeline_sql(cursor), workspace_id, limit, *_cursor_args(cursor))


async def workspace_exists(conn: Conn, workspace_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM workspaces WHERE workspace_id = $1", workspace_id))


# ------------------------------------------------------------------ event browser

EVENT_COLUMNS = (
    "event_id, type, status, outcome, workspace_id, customer_id, api_version, created, received_at, "
    "processed_at, attempts, last_error"
)


@dataclass(frozen=True)
class EventFilter:
    """The event browser's filters; None: any."""

    workspace_id: str | None = None
    event_type: str | None = None
    status: str | None = None  # a desk status (``handlers.timeline.EVENT_STATUSES``)
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before


def events_sql(f: EventFilter, cursor: Cursor | None) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if f.workspace_id is not None:
        where.append(f"workspace_id = {arg(f.workspace_id)}")
    if f.event_type is not None:
        where.append(f"type = {arg(f.event_type)}")
    if f.status == "stale":
        where.append("status = 'processed' AND outcome = 'stale'")
    elif f.status == "processed":
        where.append("status = 'processed' AND outcome IS DISTINCT FROM 'stale'")
    elif f.status is not None:
        where.append(f"status = {arg(f.status)}")
    if f.since is not None:
        where.append(f"created >= {arg(f.since)}")
    if f.until is not None:
        where.append(f"created < {arg(f.until)}")
    if cursor is not None:
        where.append(f"(created, event_id) < ({arg(cursor.at)}, {arg(cursor.key)}::text)")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {EVENT_COLUMNS} FROM webhook_events {clause} ORDER BY created DESC, event_id DESC", args


async def events_page(conn: Conn, f: EventFilter, limit: int, cursor: Cursor | None) -> Sequence[Any]:
    sql, args = events_sql(f, cursor)
    return await conn.fetch(f"{sql} LIMIT ${len(args) + 1}", *args, limit)


async def event_transitions(conn: Conn, event_id: str, workspace_id: str | None) -> Sequence[Any]:
    """The audit entries an event caused (one per workspace it changed: the one it mapped to)."""
    if workspace_id is None:
        return []
    return await conn.fetch(
        "SELECT workspace_id, version, changes, effective_at, recorded_at FROM audit_log "
        "WHERE workspace_id = $1 AND cause_kind = 'event' AND cause_id = $2 ORDER BY version",
        workspace_id,
        event_id,
    )


# ------------------------------------------------------------------ plan changes and lookup

MAX_PLAN_CHANGES = 1000


async def plan_changes(conn: Conn, workspace_id: str) -> Sequence[Any]:
    """Every change of the workspace, newest first (at most ``MAX_PLAN_CHANGES``), with its life."""
    return await conn.fetch(
        f"SELECT {COLUMNS}, history FROM plan_changes WHERE workspace_id = $1 "
        "ORDER BY created_at DESC, change_id DESC LIMIT $2",
        workspace_id,
        MAX_PLAN_CHANGES,
    )


async def lookup(conn: Conn, query: str) -> tuple[str, str] | None:
    """(workspace_id, what matched) for a workspace id, a Stripe customer id or subscription id."""
    row = await conn.fetchrow(
        """
        SELECT workspace_id, 'workspace' AS matched FROM workspaces WHERE workspace_id = $1
        UNION ALL SELECT workspace_id, 'customer' FROM customers WHERE customer_id = $1
        UNION ALL SELECT workspace_id, 'subscription' FROM subscriptions WHERE subscription_id = $1
        LIMIT 1
        """,
        query,
    )
    return None if row is None else (row["workspace_id"], row["matched"])
