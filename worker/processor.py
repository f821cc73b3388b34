"""The unit of work for one inbox event: one transaction from lock to "processed" mark.

Load the event (row-locked), normalise it, map it to a workspace, lock the workspace row, run the
pure reducer, then write state + observations + audit entry + inbox status and commit — all or
nothing. A retry after a crash finds the event processed and does nothing (Postgres is the ledger).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from handlers.catalog import Catalog
from handlers.credits import credit_grants
from handlers.events import IgnoredEvent, InvoiceObserved, customer_of, workspace_hint
from handlers.normalize import PayloadError, normalize
from handlers.reducer import APPLIED, Effect, apply_event, view_diff
from worker import credits_store, plan_changes, store

# Inbox statuses after which an event is never applied again.
FINAL_STATUSES = frozenset({"processed", "ignored", "dead"})


@dataclass(frozen=True)
class ProcessResult:
    event_id: str
    status: str  # the inbox status written (or found): processed, ignored, unmatched, dead, …
    outcome: str  # applied, stale, ignored, unmatched, duplicate, missing, malformed
    event_type: str | None = None
    workspace_id: str | None = None
    version: int | None = None
    effects: tuple[Effect, ...] = ()
    newly_mapped_customer: str | None = None
    changes: dict[str, object] = field(default_factory=dict)


@dataclass
class EventProcessor:
    pool: asyncpg.Pool
    catalog: Catalog
    clock: Callable[[], datetime]
    lock_timeout_ms: int = 5000
    unmatched_backoff: tuple[int, ...] = (5, 30, 120, 600, 3600)

    async def process(self, event_id: str) -> ProcessResult:
        now = self.clock()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {int(self.lock_timeout_ms)}")
            row = await store.lock_event(conn, event_id)
            if row is None:
                return ProcessResult(event_id, "missing", "missing")
            if row["status"] in FINAL_STATUSES:
                return ProcessResult(event_id, row["status"], "duplicate", row["type"])
            try:
                event = normalize(json.loads(row["payload"]))
            except (PayloadError, ValueError) as exc:
                # A payload that cannot be understood will not get better with retries.
                await store.finish_event(
                    conn,
                    event_id,
                    status="dead",
                    outcome="malformed",
                    workspace_id=None,
                    customer_id=None,
                    now=now,
                    error=f"malformed payload: {exc}",
                )
                return ProcessResult(event_id, "dead", "malformed", row["type"])
            if isinstance(event, IgnoredEvent):
                await store.finish_event(
                    conn,
                    event_id,
                    status="ignored",
                    outcome="ignored",
                    workspace_id=None,
                    customer_id=None,
                    now=now,
                )
                return ProcessResult(event_id, "ignored", "ignored", row["type"])

            customer_id = customer_of(event)
            workspace_id = workspace_hint(event) or await store.workspace_for_customer(conn, customer_id)
            if workspace_id is None:
                attempt = row["attempts"]
                reason = "no workspace: no metadata.workspace_id and the customer is not mapped yet"
                # Once the backoff is used up the event is parked where operators look, with why.
                exhausted = attempt >= len(self.unmatched_backoff)
                status = "dead" if exhausted else "unmatched"
                await store.finish_event(
                    conn,
                    event_id,
                    status=status,
                    outcome="unmatched",
                    workspace_id=None,
                    customer_id=customer_id,
                    now=now,
                    error=f"unmatched after {attempt + 1} tries: {reason}" if exhausted else reason,
                    next_retry_at=None
                    if exhausted
                    else now + timedelta(seconds=self.unmatched_backoff[attempt]),
                )
                return ProcessResult(event_id, status, "unmatched", row["type"])

            touched = event.invoice.invoice_id if isinstance(event, InvoiceObserved) else None
            loaded = await store.lock_workspace(conn, workspace_id, touched)
            if loaded is None:  # the first event of this workspace: create its row, then lock it
                await store.ensure_workspace(conn, workspace_id, self.catalog, now)
                loaded = await store.lock_workspace(conn, workspace_id, touched)
                assert loaded is not None  # ensured just above, in this transaction
            new_mapping = None
            if customer_id is not None and await store.remember_customer(conn, customer_id, workspace_id):
                new_mapping = customer_id
            state, stored_view = loaded
            state = await credits_store.with_granted_keys(conn, state, credit_grants(event, self.catalog))
            outcome = apply_event(state, event, now, self.catalog)
            # The audit diff is against what was stored, which may predate a time-driven change.
            changes = {**outcome.changes, **view_diff(stored_view, outcome.view)}
            if outcome.result == APPLIED:
                if outcome.subscription is not None:
                    await store.save_subscription(conn, workspace_id, outcome.subscription)
                if outcome.invoice is not None:
                    await store.save_invoice(conn, workspace_id, outcome.invoice)
                await credits_store.append_entries(
                    conn, workspace_id, outcome.credit_entries, cause_kind="event", cause_id=event_id, now=now
                )
                await store.save_workspace(conn, outcome.state, outcome.view, now)
                await store.append_audit(
                    conn,
                    workspace_id=workspace_id,
                    version=outcome.state.version,
                    cause_kind="event",
                    cause_id=event_id,
                    changes=changes,
                    before=stored_view,
                    after=outcome.view,
                    effective_at=event.meta.created,
                )
            await plan_changes.record_confirmation(conn, event.meta)
            await store.finish_event(
                conn,
                event_id,
                status="processed",
                outcome=outcome.result,
                workspace_id=workspace_id,
                customer_id=customer_id,
                now=now,
            )
            return ProcessResult(
                event_id,
                "processed",
                outcome.result,
                row["type"],
                workspace_id,
                outcome.state.version,
                outcome.effects,
                new_mapping,
                changes if outcome.result == APPLIED else {},
            )

    async def record_failure(self, event_id: str, error: str, *, dead: bool, retry_in: float | None) -> None:
        """Outside the failed transaction: remember the error (and dead-letter after max tries)."""
        now = self.clock()
        async with self.pool.acquire() as conn:
            await conn.execute(
                """
                UPDATE webhook_events
                   SET status = $2, attempts = attempts + 1, last_error = $3, next_retry_at = $4
                 WHERE event_id = $1 AND status NOT IN ('processed', 'ignored')
                """,
                event_id,
                "dead" if dead else "failed",
                error[:4000],
                None if retry_in is None else now + timedelta(seconds=retry_in),
            )
