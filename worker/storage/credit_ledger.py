"""SQL for the AI-credit ledger (append-only, unique source key; balance kept by a trigger).

Every function takes the caller's transaction, which holds the workspace row lock: a grant or a
consumption and the workspace view that shows its balance commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from handlers.credits import CreditEntry


class LedgerConflict(RuntimeError):
    """A source key the reducer believed new was already in the ledger: roll the unit back."""


async def granted_keys(conn: asyncpg.Connection, candidates: Iterable[str]) -> frozenset[str]:
    """Which of these source keys the ledger already holds (the pure core needs to know)."""
    keys = list(candidates)
    if not keys:
        return frozenset()
    rows = await conn.fetch(
        "SELECT source_key FROM ai_credit_ledger WHERE source_key = ANY($1::text[])", keys
    )
    return frozenset(r["source_key"] for r in rows)


@dataclass(frozen=True)
class LedgerAppend:
    workspace_id: str
    entry: CreditEntry
    cause_kind: str
    cause_id: str


async def append_entries(
    conn: asyncpg.Connection,
    workspace_id: str,
    entries: Sequence[CreditEntry],
    *,
    cause_kind: str,
    cause_id: str,
    now: datetime,
) -> None:
    await append_many(conn, [LedgerAppend(workspace_id, e, cause_kind, cause_id) for e in entries], now)


async def append_many(conn: asyncpg.Connection, appends: Sequence[LedgerAppend], now: datetime) -> None:
    """Insert ledger rows in order (the trigger moves each balance); a source key already present
    means the caller decided on stale knowledge, so the whole unit rolls back."""
    if not appends:
        return
    inserted = await conn.fetch(
        """
        INSERT INTO ai_credit_ledger (workspace_id, source_key, kind, amount, balance_after,
                                      reference, reason, cause_kind, cause_id, recorded_at)
        SELECT w, k, kd, a, 0, ref, rsn, ck, ci, $9
          FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                      $7::text[], $8::text[]) WITH ORDINALITY AS t(w, k, kd, a, ref, rsn, ck, ci, n)
         ORDER BY n
        ON CONFLICT (source_key) DO NOTHING RETURNING source_key
        """,
        [a.workspace_id for a in appends],
        [a.entry.source_key for a in appends],
        [a.entry.kind for a in appends],
        [a.entry.amount for a in appends],
        [a.entry.reference for a in appends],
        [a.entry.reason for a in appends],
        [a.cause_kind for a in appends],
        [a.cause_id for a in appends],
        now,
    )
    missing = {a.entry.source_key for a in appends} - {r["source_key"] for r in inserted}
    if missing or len(inserted) != len(appends):
        raise LedgerConflict(f"ledger source keys already granted: {sorted(missing)}")


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
