"""The unit of work for inbox events: one transaction from lock to "processed" mark.

``process_many`` applies a batch of events (the ids one ``process_events`` job carries, see
``worker.processing.batches``) exactly as if they were processed one after the other, in
one transaction and a fixed number of round trips: lock the events, normalise them, map them to
workspaces, lock those workspaces (in id order), run the pure reducer over each event in turn,
then write states, observations, audit entries and inbox statuses and commit — all or nothing.
A retry after a crash finds the events processed and does nothing (Postgres is the ledger).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from handlers.catalog import Catalog
from handlers.credits import credit_grants
from handlers.events import BillingEvent, IgnoredEvent, InvoiceObserved, customer_of, workspace_hint
from handlers.evolve import evolve, quick_init
from handlers.normalize import PayloadError
from handlers.reducer import APPLIED, Effect, Outcome, apply_event, view_json_diff
from handlers.state import UNPAID_INVOICE_STATUSES, InvoiceRecord, SubscriptionRecord, WorkspaceState
from handlers.thin import FetchedObject, is_thin, parse_thin, thin_event
from worker.infra import json_codec, tracing
from worker.plan_changes.store import record_confirmations
from worker.processing.reading import malformed_error, read_payload
from worker.storage import credit_ledger as credits_store
from worker.storage import db, inbox, workspaces, writer
from worker.storage.audit import AuditEntry
from worker.storage.inbox import EventFinish
from worker.storage.workspaces import LockedWorkspace

# Inbox statuses after which an event is never applied again.
FINAL_STATUSES = frozenset({"processed", "ignored", "dead"})
# The outcome of a thin event that can be applied only once its related object is fetched: its
# row is left ``received`` and the job fetches outside any transaction, then hands it back.
NEEDS_FETCH = "needs_fetch"


@quick_init
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
    # Unmatched events that waited for the customer this event mapped: queue them now.
    requeue: tuple[str, ...] = ()
    # Tracing on: the trace the event belongs to (the receiver's span, stored with the event; once
    # its batch is traced, the event's own span), which the jobs it causes continue.
    traceparent: str | None = None
    # NEEDS_FETCH: the stored thin notification whose related object the job must fetch.
    thin_payload: str | None = None
    # The event's try this was (its row's ``attempts`` once this unit of work is written); None
    # for an event that was missing or already finished.
    attempt: int | None = None


@quick_init
@dataclass(frozen=True)
class _Routed:
    """A normalised event and the workspace it belongs to."""

    event_id: str
    event_type: str
    event: BillingEvent
    workspace_id: str
    customer_id: str | None
    attempt: int


@dataclass
class _Writes:
    """What one batch writes, in the order it is written."""

    credit_entries: list[credits_store.LedgerAppend] = field(default_factory=list)
    subscriptions: list[tuple[str, SubscriptionRecord]] = field(default_factory=list)
    invoices: list[tuple[str, InvoiceRecord]] = field(default_factory=list)
    workspaces: dict[str, LockedWorkspace] = field(default_factory=dict)
    audit: list[AuditEntry] = field(default_factory=list)
    finishes: list[EventFinish] = field(default_factory=list)


@dataclass
class EventProcessor:
    pool: asyncpg.Pool
    catalog: Catalog
    clock: Callable[[], datetime]
    lock_timeout_ms: int = 5000
    unmatched_backoff: tuple[int, ...] = (5, 30, 120, 600, 3600)

    async def process(self, event_id: str) -> ProcessResult:
        return (await self.process_many([event_id]))[0]

    async def process_many(self, event_ids: Sequence[str]) -> list[ProcessResult]:
        """Apply the events as if one after the other, in one transaction; one result per id, in
        order. Any error rolls the whole batch back (``worker.processing.batches`` then retries its
        events one by one)."""
        return await self.process_batch(event_ids)

    async def process_batch(
        self, event_ids: Sequence[str], fetched: Mapping[str, FetchedObject] | None = None
    ) -> list[ProcessResult]:
        """``process_many``; ``fetched``: the related objects of thin events, by event id; a thin
        event the worker acts on without one ends ``NEEDS_FETCH`` (its row untouched).

        Two batches holding the same events or workspaces never deadlock: the events are locked
        in id order, the missing workspaces are created in id order, then every workspace is
        locked in id order (a deadlock, should one still happen, is a transient error: the
        batch's events are retried)."""
        now = self.clock()
        ids = list(dict.fromkeys(event_ids))
        writes = _Writes()
        results: dict[str, ProcessResult] = {}
        async with self.pool.acquire() as conn, conn.transaction():
            await db.begin_keyed(conn, self.lock_timeout_ms)
            rows = await inbox.lock_events(conn, ids)
            parsed: list[tuple[asyncpg.Record, BillingEvent]] = []
            for event_id in ids:
                row = rows.get(event_id)
                if row is None:
                    results[event_id] = ProcessResult(event_id, "missing", "missing")
                elif row["status"] in FINAL_STATUSES:
                    results[event_id] = ProcessResult(event_id, row["status"], "duplicate", row["type"])
                else:
                    event = self._decode(row, writes, results, (fetched or {}).get(event_id))
                    if event is not None:
                        parsed.append((row, event))
            routed, new_mappings = await self._route(conn, parsed, writes, results, now)
            if routed:
                await self._apply(conn, routed, writes, results, now)
            await credits_store.append_many(conn, writes.credit_entries, now)
            await record_confirmations(conn, [r.event.meta for r in routed])
            mapped = await writer.write_batch(
                conn,
                subscriptions=writes.subscriptions,
                invoices=writes.invoices,
                workspaces=[(w.state, w.view, w.view_json) for w in writes.workspaces.values()],
                audit=writes.audit,
                finishes=writes.finishes,
                customers=new_mappings,
                now=now,
            )
        _credit_mappings(routed, mapped, writes.finishes, results)
        if tracing.enabled():
            _carry_traceparents(rows, results)
        return _in_request_order(event_ids, results)

    def _decode(
        self,
        row: asyncpg.Record,
        writes: _Writes,
        results: dict[str, ProcessResult],
        fetched: FetchedObject | None,
    ) -> BillingEvent | None:
        """The normalised event, or None once a malformed or ignored event is finished (or a thin
        one is left for its job to fetch)."""
        event_id = row["event_id"]
        try:
            raw = json_codec.loads(row["payload"])
            if is_thin(raw):
                event = thin_event(parse_thin(raw), fetched)
                if event is None:
                    results[event_id] = ProcessResult(
                        event_id,
                        "received",
                        NEEDS_FETCH,
                        row["type"],
                        thin_payload=row["payload"],
                        attempt=row["attempts"] + 1,
                    )
                    return None
            else:
                event = read_payload(raw, event_id, row["type"])
        except (PayloadError, ValueError) as exc:
            # A payload without what the reducer needs will not get better with retries.
            writes.finishes.append(
                EventFinish(event_id, "dead", "malformed", None, None, error=malformed_error(exc))
            )
            results[event_id] = ProcessResult(
                event_id, "dead", "malformed", row["type"], attempt=row["attempts"] + 1
            )
            return None
        if isinstance(event, IgnoredEvent):
            writes.finishes.append(EventFinish(event_id, "ignored", "ignored", None, None))
            results[event_id] = ProcessResult(
                event_id, "ignored", "ignored", row["type"], attempt=row["attempts"] + 1
            )
            return None
        return event

    async def _route(
        self,
        conn: asyncpg.Connection,
        parsed: list[tuple[asyncpg.Record, BillingEvent]],
        writes: _Writes,
        results: dict[str, ProcessResult],
        now: datetime,
    ) -> tuple[list[_Routed], dict[str, str]]:
        """Map each event to its workspace: the payload's metadata, else a remembered customer —
        including one an earlier event of this batch maps (as sequential processing would)."""
        customers = sorted({c for _, e in parsed if (c := customer_of(e)) is not None})
        known = await workspaces.workspaces_for_customers(conn, customers)
        new_mappings: dict[str, str] = {}
        routed = []
        for row, event in parsed:
            event_id, customer_id = row["event_id"], customer_of(event)
            workspace_id = workspace_hint(event) or (known.get(customer_id) if customer_id else None)
            if workspace_id is None:
                self._unmatched(row, customer_id, writes, results, now)
                continue
            if customer_id is not None and customer_id not in known:
                known[customer_id] = new_mappings[customer_id] = workspace_id
            routed.append(
                _Routed(event_id, row["type"], event, workspace_id, customer_id, row["attempts"] + 1)
            )
        return routed, new_mappings

    def _unmatched(
        self,
        row: asyncpg.Record,
        customer_id: str | None,
        writes: _Writes,
        results: dict[str, ProcessResult],
        now: datetime,
    ) -> None:
        event_id, attempt = row["event_id"], row["attempts"]
        reason = "no workspace: no metadata.workspace_id and the customer is not mapped yet"
        # Once the backoff is used up the event is parked where operators look, with why.
        exhausted = attempt >= len(self.unmatched_backoff)
        status = "dead" if exhausted else "unmatched"
        writes.finishes.append(
            EventFinish(
                event_id,
                status,
                "unmatched",
                None,
                customer_id,
                error=f"unmatched after {attempt + 1} tries: {reason}" if exhausted else reason,
                next_retry_at=None if exhausted else now + timedelta(seconds=self.unmatched_backoff[attempt]),
            )
        )
        results[event_id] = ProcessResult(event_id, status, "unmatched", row["type"], attempt=attempt + 1)

    async def _apply(
        self,
        conn: asyncpg.Connection,
        routed: list[_Routed],
        writes: _Writes,
        results: dict[str, ProcessResult],
        now: datetime,
    ) -> None:
        touched = sorted({r.event.invoice.invoice_id for r in routed if isinstance(r.event, InvoiceObserved)})
        workspace_ids = sorted({r.workspace_id for r in routed})
        # The rows of first-seen workspaces are created (in id order) before any row is locked,
        # then every row is locked in id order: locking the existing rows first and creating the
        # others after took locks out of order, and two batches deadlocked when a third created
        # one of their workspaces in between (seen in the burst fault test).
        await workspaces.ensure_workspaces(conn, workspace_ids, self.catalog, now)
        locked = await workspaces.lock_workspaces(conn, workspace_ids, touched)
        grants = {r.event_id: credit_grants(r.event, self.catalog) for r in routed}
        granted = set(
            await credits_store.granted_keys(conn, (g.source_key for gs in grants.values() for g in gs))
        )
        for r in routed:
            current = locked[r.workspace_id]
            state = _as_loaded(current.state, r.event)
            state = evolve(
                state,
                credit_keys=frozenset(g.source_key for g in grants[r.event_id] if g.source_key in granted),
            )
            outcome = apply_event(state, r.event, now, self.catalog)
            changes: dict[str, Any] = {}
            if outcome.result == APPLIED:
                after = json_codec.jsonable(outcome.view)
                # The audit diff is against what was stored, which may predate a time-driven change.
                changes = {**outcome.changes, **view_json_diff(current.view_json, after)}
                self._record(r, current, outcome, after, changes, writes, granted, locked)
            writes.finishes.append(
                EventFinish(r.event_id, "processed", outcome.result, r.workspace_id, r.customer_id)
            )
            results[r.event_id] = ProcessResult(
                r.event_id,
                "processed",
                outcome.result,
                r.event_type,
                r.workspace_id,
                outcome.state.version,
                outcome.effects,
                None,
                changes,
                attempt=r.attempt,
            )

    @staticmethod
    def _record(
        r: _Routed,
        current: LockedWorkspace,
        outcome: Outcome,
        view_json: dict[str, Any],
        changes: dict[str, Any],
        writes: _Writes,
        granted: set[str],
        locked: dict[str, LockedWorkspace],
    ) -> None:
        """Queue an applied outcome's writes and make it the state the next event sees."""
        if outcome.subscription is not None:
            writes.subscriptions.append((r.workspace_id, outcome.subscription))
        if outcome.invoice is not None:
            writes.invoices.append((r.workspace_id, outcome.invoice))
        for entry in outcome.credit_entries:
            writes.credit_entries.append(
                credits_store.LedgerAppend(r.workspace_id, entry, "event", r.event_id)
            )
            granted.add(entry.source_key)
        # The reducer saw only the invoices a fresh load would read; the next event may touch others.
        state = evolve(outcome.state, invoices={**current.state.invoices, **outcome.state.invoices})
        after = LockedWorkspace(state, outcome.view, view_json)
        writes.audit.append(
            AuditEntry(
                r.workspace_id,
                outcome.state.version,
                "event",
                r.event_id,
                changes,
                current.view_json,
                after.view_json,
                r.event.meta.created,
            )
        )
        locked[r.workspace_id] = writes.workspaces[r.workspace_id] = after


def _carry_traceparents(rows: dict[str, asyncpg.Record], results: dict[str, ProcessResult]) -> None:
    """Each result carries its event's stored ``traceparent`` (the receiver's span)."""
    for event_id, row in rows.items():
        if row["traceparent"] is not None and event_id in results:
            results[event_id] = evolve(results[event_id], traceparent=row["traceparent"])


def _credit_mappings(
    routed: list[_Routed],
    mapped: dict[str, list[str]],
    finishes: list[EventFinish],
    results: dict[str, ProcessResult],
) -> None:
    """The first event of each customer this batch mapped carries the mapping and the events
    left unmatched waiting for it: those stored before, and those of this very batch."""
    if not mapped:
        return
    in_batch = {f.event_id for f in finishes}
    unmatched_here: dict[str, list[str]] = {}  # by customer: one pass, not one per mapped customer
    for f in finishes:
        if f.outcome == "unmatched" and f.customer_id is not None:
            unmatched_here.setdefault(f.customer_id, []).append(f.event_id)
    for r in routed:
        customer = r.customer_id
        if not customer or (waiting := mapped.pop(customer, None)) is None:
            continue
        stored = [e for e in waiting if e not in in_batch]
        here = unmatched_here.get(customer, [])
        results[r.event_id] = evolve(
            results[r.event_id], newly_mapped_customer=customer, requeue=tuple(stored + here)
        )


def _in_request_order(event_ids: Sequence[str], results: dict[str, ProcessResult]) -> list[ProcessResult]:
    """One result per requested id; a repeat of an id within the batch is a duplicate, as it would
    be processed after the first."""
    seen: set[str] = set()
    ordered = []
    for event_id in event_ids:
        first = results[event_id]
        if event_id in seen:
            first = ProcessResult(event_id, first.status, "duplicate", first.event_type)
        seen.add(event_id)
        ordered.append(first)
    return ordered


def _as_loaded(state: WorkspaceState, event: BillingEvent) -> WorkspaceState:
    """The state as a fresh load for this event would read it: every subscription, the unpaid
    invoices and the invoice the event touches (a batch loads the touched invoices of all its
    events, and earlier events may have paid some)."""
    touched = event.invoice.invoice_id if isinstance(event, InvoiceObserved) else None
    invoices = {
        i: r for i, r in state.invoices.items() if r.status in UNPAID_INVOICE_STATUSES or i == touched
    }
    return state if len(invoices) == len(state.invoices) else evolve(state, invoices=invoices)
