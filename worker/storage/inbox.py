"""The inbox (``webhook_events``): every verified event is stored here before the receiver answers 2xx.

Inserts (one or many, idempotent on the event id), the row locks a unit of work takes, the status
it finishes an event with (written by ``worker.storage.writer``), and the reads of the API and the
inbox sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from handlers.evolve import quick_init


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
    traceparent: str | None = None  # the receiver's span (tracing on): the worker's continues it


_INSERT_EVENTS = """
    INSERT INTO webhook_events (event_id, type, api_version, created, livemode, payload)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bool[], $6::text[])
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, status
"""
# With tracing on: the same and each event's traceparent (off, the statement stays the one above).
_INSERT_TRACED_EVENTS = """
    INSERT INTO webhook_events (event_id, type, api_version, created, livemode, payload, traceparent)
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bool[], $6::text[], $7::text[]
    )
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, status
"""


async def insert_events(
    conn: asyncpg.Connection, rows: Sequence[InboxRow]
) -> dict[str, tuple[bool, str | None]]:
    """``insert_event`` for many events (distinct ids) in two statements; each id → (is_new, status).

    One multi-row INSERT … ON CONFLICT DO NOTHING, then the status of the ids that conflicted,
    read by a new statement so that it sees deliveries committed concurrently. Each statement
    commits on its own (no transaction): a returned row is durable.
    """
    columns = [
        [r.event_id for r in rows],
        [r.event_type for r in rows],
        [r.api_version for r in rows],
        [r.created for r in rows],
        [r.livemode for r in rows],
        [r.payload for r in rows],
    ]
    traceparents = [r.traceparent for r in rows]
    if any(traceparents):
        inserted = await conn.fetch(_INSERT_TRACED_EVENTS, *columns, traceparents)
    else:
        inserted = await conn.fetch(_INSERT_EVENTS, *columns)
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
        "SELECT event_id, type, payload, status, attempts, created, traceparent FROM webhook_events "
        "WHERE event_id = ANY($1::text[]) ORDER BY event_id FOR UPDATE",
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


async def due_for_sweep(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    received_before: datetime,
    retry_due: datetime,
    failed_due: datetime,
    limit: int,
) -> list[str]:
    """Ids of the events Redis may have lost (still ``received`` before ``received_before``),
    of the unmatched events due a retry at ``retry_due`` and of the failed events whose retry
    was due at ``failed_due`` (each failure queued a deferred job of its own: the sweep is the
    backstop for a lost one, so it waits a grace period past the retry time), oldest first."""
    rows = await conn.fetch(
        """
        SELECT event_id FROM webhook_events
         WHERE (status = 'received' AND received_at < $1)
            OR (status = 'unmatched' AND next_retry_at <= $2)
            OR (status = 'failed' AND next_retry_at <= $3)
         ORDER BY received_at LIMIT $4
        """,
        received_before,
        retry_due,
        failed_due,
        limit,
    )
    return [r["event_id"] for r in rows]


@quick_init
@dataclass(frozen=True)
class Failure:
    """A failure recorded on an event's row: ``dead`` once its tries are used up, else ``failed``
    and due again at ``next_retry_at``."""

    event_id: str
    status: str
    attempts: int
    next_retry_at: datetime | None


async def record_failures(
    conn: asyncpg.Connection | asyncpg.Pool,
    errors: dict[str, str],
    *,
    now: datetime,
    max_tries: int,
    max_backoff_seconds: int = 300,
) -> dict[str, Failure]:
    """Count one failed try of each event (``errors``: event id → error) on its row, in one
    statement: ``attempts`` + 1, ``last_error``; ``dead`` once ``attempts`` reaches ``max_tries``,
    else ``failed`` with ``next_retry_at`` = now + 2^(attempts-1) s (capped). The rows are locked
    in id order (as ``lock_events``). Events already finished (processed, ignored, dead) or
    missing are left alone and not returned."""
    rows = await conn.fetch(
        """
        WITH failed AS (
            SELECT f.event_id, f.error FROM unnest($1::text[], $2::text[]) AS f(event_id, error)
        ), locked AS (
            SELECT w.event_id FROM webhook_events w JOIN failed USING (event_id)
             WHERE w.status NOT IN ('processed', 'ignored', 'dead')
             ORDER BY w.event_id FOR UPDATE OF w
        )
        UPDATE webhook_events e
           SET attempts = e.attempts + 1,
               last_error = failed.error,
               status = CASE WHEN e.attempts + 1 >= $4::int THEN 'dead' ELSE 'failed' END,
               next_retry_at = CASE WHEN e.attempts + 1 >= $4::int THEN NULL
                   ELSE $3::timestamptz + make_interval(secs => least(power(2, e.attempts), $5::float8)) END
          FROM locked JOIN failed USING (event_id)
         WHERE e.event_id = locked.event_id
        RETURNING e.event_id, e.status, e.attempts, e.next_retry_at
        """,
        list(errors),
        [error[:4000] for error in errors.values()],
        now,
        max_tries,
        float(max_backoff_seconds),
    )
    return {
        r["event_id"]: Failure(r["event_id"], r["status"], r["attempts"], r["next_retry_at"]) for r in rows
    }


async def dead_letter(
    conn: asyncpg.Connection | asyncpg.Pool, event_id: str, outcome: str, error: str
) -> str | None:
    """Park an event that cannot succeed as it stands (kept for an operator's retry) with why;
    one already finished is left alone. Returns the event's status afterwards."""
    return await conn.fetchval(
        """
        WITH parked AS (
            UPDATE webhook_events
               SET status = 'dead', outcome = $2, attempts = attempts + 1, last_error = $3,
                   next_retry_at = NULL
             WHERE event_id = $1 AND status NOT IN ('processed', 'ignored', 'dead')
            RETURNING status
        )
        SELECT status FROM parked
        UNION ALL
        SELECT status FROM webhook_events WHERE event_id = $1
        LIMIT 1
        """,
        event_id,
        outcome,
        error[:4000],
    )
