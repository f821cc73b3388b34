"""The plan-change ledger in SQL: the rows, their audit entries and the webhook that confirms each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from handlers.codec import to_jsonable
from handlers.events import EventMeta
from handlers.plan_policy import Decision
from handlers.state import WorkspaceView
from worker.config import Settings
from worker.infra import json_codec
from worker.storage import workspaces, writer

ACTIVE = ("pending", "waiting_payment", "firing")
KEY_PREFIX = "plan-change:"
Cause = tuple[str, str]  # the audit log's (cause_kind, cause_id)

COLUMNS = (
    "change_id, workspace_id, kind, status, from_plan, from_interval, from_seats, to_plan, "
    "to_interval, to_seats, request, decision, effective_at, fire_at, subscription_id, "
    "idempotency_key, stripe_params, attempts, claimed_at, last_error, request_id, superseded_by, "
    "created_at, updated_at, applied_at, confirmed_event_id, confirmed_at"
)
_COLUMN_NAMES = tuple(name.strip() for name in COLUMNS.split(","))
_JSON_COLUMNS = frozenset({"request", "decision", "stripe_params"})

# The workspace row with its open invoices and active change in one statement: the API's most
# frequent read, one round trip instead of three. Nested rows come back as anonymous records
# (tuples, fields in column order); their jsonb fields as text, since asyncpg decodes a record's
# fields in binary and the pool's JSON codec is a text one.
_WORKSPACE_STATUS = (
    "SELECT workspace_id, customer_id, view, version, created_at, updated_at, "
    f"array(SELECT ROW({', '.join(workspaces.OPEN_INVOICE_COLUMNS)}) "
    f"FROM {workspaces.OPEN_INVOICES_OF.format('w.workspace_id')}) AS open_invoices, "
    "(SELECT ROW("
    + ", ".join(f"{c}::text" if c in _JSON_COLUMNS else c for c in _COLUMN_NAMES)
    + ") FROM plan_changes WHERE workspace_id = w.workspace_id AND status = ANY($2::text[])) AS pending "
    "FROM workspaces w WHERE workspace_id = $1"
)


@dataclass
class Committed:
    """What a transaction committed, for ``jobs.after_commit``."""

    workspace_id: str
    version: int | None = None
    changes: dict[str, Any] = field(default_factory=dict)


def idempotency_key(change_id: str) -> str:
    return f"{KEY_PREFIX}{change_id}"


def claim_timeout(settings: Settings) -> timedelta:
    """A claim older than this belongs to a worker that died (arq's job timeout has passed)."""
    return timedelta(seconds=max(2 * settings.job_timeout_seconds, 120))


def change_json(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = to_jsonable(dict(row))
    out.pop("stripe_params", None)  # internal: what the worker sends, not what the product shows
    return out


def decision_json(decision: Decision) -> dict[str, Any]:
    return to_jsonable(decision)


def life_step(status: str, at: datetime) -> list[dict[str, str]]:
    """One step of a change's life, to append to its ``history`` column (``requested``, then each
    status it enters, in order; what ``GET /v1/workspaces/{id}/timeline`` shows)."""
    return [{"status": status, "at": to_jsonable(at)}]


# ---------------------------------------------------------------- reads


async def active_change(conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM plan_changes WHERE workspace_id = $1 AND status = ANY($2::text[])",
        workspace_id,
        list(ACTIVE),
    )


async def workspace_status(
    conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str
) -> tuple[asyncpg.Record, list[dict[str, Any]], dict[str, Any] | None] | None:
    """The workspace row, its open invoices (``workspaces.open_invoices``) and its active change
    (``active_change``) as dicts, read in one statement; None when there is no such workspace."""
    row = await conn.fetchrow(_WORKSPACE_STATUS, workspace_id, list(ACTIVE))
    if row is None:
        return None
    invoices = [dict(zip(workspaces.OPEN_INVOICE_COLUMNS, r, strict=True)) for r in row["open_invoices"]]
    pending = None
    if row["pending"] is not None:
        pending = dict(zip(_COLUMN_NAMES, row["pending"], strict=True))
        for name in _JSON_COLUMNS:
            if pending[name] is not None:
                pending[name] = json_codec.loads(pending[name])
    return row, invoices, pending


async def get_change(conn: asyncpg.Connection | asyncpg.Pool, change_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {COLUMNS} FROM plan_changes WHERE change_id = $1", change_id)


# ---------------------------------------------------------------- audit


async def audit_change(
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
    await writer.append_audit(
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


def change_summary(row: asyncpg.Record | dict[str, Any] | None) -> dict[str, Any] | None:
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


async def set_status(
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
        "applied_at = CASE WHEN $2 = 'applied' THEN $5 ELSE applied_at END, "
        "history = history || $6::jsonb "
        f"WHERE change_id = $1 RETURNING {COLUMNS}",
        row["change_id"],
        status,
        error,
        superseded_by,
        now,
        life_step(status, now),
    )
    committed = await audit_change(
        conn,
        row["workspace_id"],
        stored_view,
        cause_kind=cause_kind,
        cause_id=cause_id,
        changes={f"plan_change.{row['change_id']}.status": (row["status"], status)},
        now=now,
    )
    return new, committed


async def due_changes(
    pool: asyncpg.Pool,
    settings: Settings,
    now: datetime,
    limit: int = 100,
    after: tuple[datetime, str] | None = None,
) -> list[tuple[datetime, str]]:
    """What the sweep must try: due pending changes, waiting ones whose block is gone, and firing
    ones without a live claim (a transient error, or a worker that died mid-call).

    ``(fire_at, change_id)`` pairs in that order, after the keyset ``after``: a sweep pages through
    the due set once, so what stays due (still blocked, a transient error) is not retried in a loop.
    """
    page = "AND (pc.fire_at, pc.change_id) > ($4, $5)" if after is not None else ""
    rows = await pool.fetch(
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
        now - claim_timeout(settings),
        limit,
        *(after or ()),
    )
    return [(r["fire_at"], r["change_id"]) for r in rows]


async def waiting_changes(pool: asyncpg.Pool, workspace_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT change_id FROM plan_changes WHERE workspace_id = $1 AND status = 'waiting_payment'",
        workspace_id,
    )
    return [r["change_id"] for r in rows]


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
