"""Applying the events of one ``process_events`` job: one transaction for all of them, and what
keeps one bad event from failing the others.

A job carries the ids of one receiver flush (or one sweep chunk), so the batch is made when the
events are queued: no group commit across jobs, no reading ahead in arq's queue. The events go
through ``EventProcessor.process_batch`` in passes:

1. all of them in one transaction. When it fails on a database error (down, lock or statement
   timeout, deadlock: ``is_transient``) every event of the pass fails with it; on any other
   error (a bug, a constraint) they are applied again one at a time, so only the bad one fails;
2. thin events that came back ``NEEDS_FETCH`` get their related object fetched, outside any
   transaction (``thin_fetch``), ``FETCH_CONCURRENCY`` at a time;
3. the next pass holds those thin events and the unmatched events whose customer the pass just
   mapped (they go round again instead of waiting for their backoff).

A job's transactions go through the worker process's ``EventTransactions``
(``worker.processing.transactions``): a few at once (the burst fault test saw whole batches fail
past the lock timeout with 20 at once per process), and the jobs that wait for one are written
together.

Each committed transaction is handed to the after-commit bus once (its results, traced when
tracing is on). Every event ends with exactly one outcome, handed to ``report`` as soon as it is
final: its result, or the exception it failed with (the job counts the failure on its row and
queues it again alone).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from handlers.evolve import evolve
from handlers.thin import FetchedObject
from worker.infra import metrics, tracing
from worker.infra.logging import get_logger
from worker.processing.transactions import EventTransactions
from worker.processing.unit_of_work import NEEDS_FETCH, EventProcessor, ProcessResult
from worker.storage.db import is_transient

log = get_logger("event_batches")

AfterCommit = Callable[[Sequence[ProcessResult]], Awaitable[None]]
# A thin event's related object, or its final result when it cannot be fetched (dead-lettered).
Fetch = Callable[[ProcessResult], Awaitable[FetchedObject | ProcessResult]]
Outcome = ProcessResult | BaseException
Report = Callable[[str, Outcome], None]
# Passes of one job: the first, the thin events' and the requeued events', and a spare.
MAX_PASSES = 4
# Stripe calls one job makes at once for its thin events (a job may carry 100 of them).
FETCH_CONCURRENCY = 8


async def apply_events(
    processor: EventProcessor,
    after_commit: AfterCommit,
    fetch: Fetch,
    event_ids: Sequence[str],
    report: Report,
    transactions: EventTransactions | None = None,
) -> None:
    """Apply ``event_ids`` (a repeat of an id counts once) and ``report`` each one's final
    outcome. ``transactions``: the worker process's (shared by its jobs); by default this job's
    own. Never raises for an event's failure; cancellation propagates."""
    writer = transactions or EventTransactions(processor)
    pending = list(dict.fromkeys(event_ids))
    fetched: dict[str, FetchedObject] = {}
    for pass_no in range(MAX_PASSES):
        if not pending:
            return
        last = pass_no == MAX_PASSES - 1
        here = set(pending)
        outcomes = await _apply_batch(after_commit, pending, fetched, here, writer)
        # Unmatched events of this job whose customer this pass mapped go round again.
        again = {e for o in outcomes if isinstance(o, ProcessResult) for e in o.requeue if e in here}
        requeued: list[str] = []
        thin: list[ProcessResult] = []
        for event_id, outcome in zip(pending, outcomes, strict=True):
            if last:
                report(event_id, outcome)
            elif event_id in again:
                requeued.append(event_id)
            elif (
                isinstance(outcome, ProcessResult)
                and outcome.outcome == NEEDS_FETCH
                and event_id not in fetched
            ):
                thin.append(outcome)
            else:
                report(event_id, outcome)
        if thin:
            for pending_thin, related in zip(thin, await _fetch_all(fetch, thin), strict=True):
                if isinstance(related, FetchedObject):
                    fetched[pending_thin.event_id] = related
                    requeued.append(pending_thin.event_id)
                else:  # dead-lettered (a ProcessResult) or failed (an exception)
                    report(pending_thin.event_id, related)
        pending = requeued


async def _fetch_all(
    fetch: Fetch, thin: list[ProcessResult]
) -> list[FetchedObject | ProcessResult | BaseException]:
    """Each thin event's related object (or final result, or error), ``FETCH_CONCURRENCY`` at a time."""
    limit = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(pending: ProcessResult) -> FetchedObject | ProcessResult:
        async with limit:
            return await fetch(pending)

    return await asyncio.gather(*(one(p) for p in thin), return_exceptions=True)


async def _apply_batch(
    after_commit: AfterCommit,
    ids: list[str],
    fetched: dict[str, FetchedObject],
    here: set[str],
    transactions: EventTransactions,
) -> list[Outcome]:
    """One outcome per id: the batch in one transaction, or one at a time when it failed on an
    event; the committed results handed to ``after_commit`` once."""
    started_ns = time.time_ns() if tracing.enabled() else 0
    metrics.EVENT_BATCH_SIZE.observe(len(ids))
    outcomes: list[Outcome]
    try:
        outcomes = list(await transactions.apply(ids, _for(ids, fetched)))
    except Exception as exc:
        if is_transient(exc) or len(ids) == 1:
            # The database is down or busy: every event of the batch fails with it (and is
            # retried with backoff) rather than N slow retries now.
            return [exc] * len(ids)
        log.info("batch_retried_singly", size=len(ids), error=f"{type(exc).__name__}: {exc}"[:300])
        outcomes = [await _single(event_id, fetched, transactions) for event_id in ids]
    committed = [o for o in outcomes if isinstance(o, ProcessResult)]
    if started_ns and committed:
        spans = iter(traced(committed, started_ns, time.time_ns()))
        outcomes = [next(spans) if isinstance(o, ProcessResult) else o for o in outcomes]
        committed = [o for o in outcomes if isinstance(o, ProcessResult)]
    if committed:
        # The events this job takes round again are not queued again by the bus.
        notify = [
            evolve(r, requeue=tuple(e for e in r.requeue if e not in here)) if r.requeue else r
            for r in committed
        ]
        try:
            await after_commit(notify)
        except Exception as exc:  # the events are committed; the reactions are best effort
            log.warning("after_commit_failed", size=len(committed), error=repr(exc)[:300])
    return outcomes


async def _single(
    event_id: str, fetched: dict[str, FetchedObject], transactions: EventTransactions
) -> Outcome:
    try:
        return (await transactions.alone([event_id], _for([event_id], fetched)))[0]
    except Exception as exc:
        return exc


def _for(ids: list[str], fetched: dict[str, FetchedObject]) -> dict[str, FetchedObject] | None:
    """The fetched related objects of these ids, if any."""
    if not fetched:
        return None
    return {e: fetched[e] for e in ids if e in fetched} or None


def traced(committed: list[ProcessResult], start_ns: int, end_ns: int) -> list[ProcessResult]:
    """The spans of a committed batch; its results carry their event's span on (after-commit jobs).

    A batch holds events of many traces and a span has one parent, so the transaction is an
    ``event_batch`` span of its own trace, linked to the events' receiver spans, and each event
    gets a ``process_event`` span over the same transaction, a child of its receiver span (its
    webhook's trace goes on) and linked to the batch span."""
    batch = tracing.record_span(
        "event_batch",
        start_ns=start_ns,
        end_ns=end_ns,
        attributes={"batch.size": len(committed)},
        links=[r.traceparent for r in committed],
    )
    return [
        evolve(
            r,
            traceparent=tracing.record_span(
                "process_event",
                start_ns=start_ns,
                end_ns=end_ns,
                parent=r.traceparent,
                attributes={
                    "event_id": r.event_id,
                    "event_type": r.event_type,
                    "workspace_id": r.workspace_id,
                    "outcome": r.outcome,
                    "status": r.status,
                    "version": r.version,
                    "batch.size": len(committed),
                },
                links=[batch],
            ),
        )
        for r in committed
    ]
