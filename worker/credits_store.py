"""SQL for the AI-credit ledger (append-only, unique source key; balance kept by a trigger).

Every function takes the caller's transaction, which holds the workspace row lock: a grant or a
consumption and the workspace view that shows its balance commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

import asyncpg

from handlers.credits import CreditEntry
from handlers.state import WorkspaceState


class LedgerConflict(RuntimeError):
    """A source key the reducer believed new was already in the ledger: roll the unit back."""


async def with_granted_keys(
    conn: asyncpg.Connection, state: WorkspaceState, candidates: Iterable[CreditEntry]
) -> WorkspaceState:
    """Tell the pure core which of the event's possible grants the ledger already holds."""
    keys = [e.source_key for e in candidates]
    if not keys:
        return state
    rows = await conn.fetch(
        "SELECT source_key FROM ai_credit_ledger WHERE source_key = ANY($1::text[])", keys
    )
    return replace(state, credit_keys=frozenset(r["source_key"] for r in rows))


async def append_entries(
    conn: asyncpg.Connection,
    workspace_id: str,
    entries: Sequence[CreditEntry],
    *,
    cause_kind: str,
    cause_id: str,
    now: datetime,
) -> None:
    for entry in entries:
        inserted = await conn.fetchval(
            """
            INSERT INTO ai_credit_ledger (workspace_id, source_key, kind, amount, balance_after,
                                          reference, reason, cause_kind, cause_id, recorded_at)
            VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8, $9)
            ON CONFLICT (source_key) DO NOTHING RETURNING id
            """,
            workspace_id,
            entry.source_key,
            entry.kind,
            entry.amount,
            entry.reference,
            entry.reason,
            cause_kind,
            cause_id,
            now,
        )
        if inserted is None:
            raise LedgerConflict(f"ledger source key {entry.source_key!r} is already granted")


_ENTRY_COLUMNS = (
    "id, source_key, kind, amount, balance_after, reference, reason, cause_kind, cause_id, recorded_at"
)


async def entry_by_key(conn: asyncpg.Connection | asyncpg.Pool, source_key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_ENTRY_COLUMNS} FROM ai_credit_ledger WHERE source_key = $1", source_key
    )


async def entries(
    conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str, *, limit: int, before_id: int | None
) -> Sequence[asyncpg.Record]:
    """Newest first; ``before_id`` is the keyset cursor of the previous page."""
    return await conn.fetch(
        f"SELECT {_ENTRY_COLUMNS} FROM ai_credit_ledger WHERE workspace_id = $1 "
        "AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        workspace_id,
        before_id,
        limit,
    )


async def balance(conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str) -> int | None:
    """The ledger sum (trigger-maintained column); None for an unknown workspace."""
    return await conn.fetchval(
        "SELECT ai_credit_balance FROM workspaces WHERE workspace_id = $1", workspace_id
    )
