"""The event job: apply the inbox events one job carries (``worker.processing.batches``), and
the inbox sweep.

Tries are counted per event, in Postgres: an event that fails gets ``attempts`` + 1 and its error
on its row (``inbox.record_failures``: ``dead`` once ``BW_MAX_TRIES`` tries failed, else
``failed`` with a backoff) and is queued again alone in a job deferred to its retry time, so the
other events of the job are not run again. Only when the failure cannot be recorded (the
database is down) does the whole job retry through arq (``RetryLater``); nothing is lost either
way, the rows stay ``received``/``failed`` for the sweep. Results are never kept
(``keep_result=0``).
"""

from __future__ import annotations

import time
import traceback
from datetime import datetime, timedelta
from functools import cache, partial

from prometheus_client import Histogram

from worker.infra import metrics
from worker.infra.logging import get_logger
from worker.processing.after_commit import after_events_committed
from worker.processing.batches import Outcome, apply_events
from worker.processing.thin_fetch import related_object
from worker.queue.enqueue import PROCESS_EVENTS
from worker.queue.retry import RetryLater, backoff_seconds
from worker.queue.worker import Job
from worker.services import Services
from worker.storage import inbox
from worker.storage.db import is_transient

log = get_logger("jobs")
# The worker's shared semaphore of event transactions (``worker.jobs.worker``).
EVENT_TRANSACTIONS_KEY = "event_transactions"


@cache
def _job_duration(handler: str, outcome: str) -> Histogram:
    """The histogram child of one (event type, outcome): ``labels()`` costs a lock and a lookup."""
    return metrics.JOB_DURATION.labels(handler=handler, outcome=outcome)


def _summary(exc: BaseException) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3)
    return "".join(lines)[-2000:]


async def process_events(job: Job, event_ids: list[str]) -> None:
    """Apply ``event_ids`` in one transaction (see ``worker.processing.batches``); one
    ``job_finished`` line and one duration observation per event."""
    services: Services = job.services
    started = time.perf_counter()
    if job.attempt == 1 and job.enqueued_at is not None:
        lag = max((services.clock() - job.enqueued_at).total_seconds(), 0.0)
        for _ in event_ids:
            metrics.INBOX_TO_JOB_LATENCY.observe(lag)
    size = len(event_ids)
    failed: dict[str, BaseException] = {}

    def report(event_id: str, outcome: Outcome) -> None:
        if isinstance(outcome, BaseException):
            failed[event_id] = outcome
            return
        _job_duration(outcome.event_type or "unknown", outcome.outcome).observe(time.perf_counter() - started)
        log.info(
            "job_finished",
            job=PROCESS_EVENTS,
            job_id=job.id,
            job_size=size,
            event_id=event_id,
            event_type=outcome.event_type,
            workspace_id=outcome.workspace_id,
            outcome=outcome.outcome,
            status=outcome.status,
            version=outcome.version,
            attempt=outcome.attempt,
            duration_ms=_ms(started),
        )

    await apply_events(
        services.processor,
        partial(after_events_committed, services),
        partial(related_object, services),
        event_ids,
        report,
        job.shared.get(EVENT_TRANSACTIONS_KEY),
    )
    if failed:
        await _failed(job, failed, started)


async def process_event(job: Job, event_id: str) -> None:
    """The one-event job of earlier releases (still queued at an upgrade): ``process_events``."""
    await process_events(job, [event_id])


async def _failed(job: Job, failed: dict[str, BaseException], started: float) -> None:
    """Count each failure on its event's row and queue the events that still have tries, alone,
    at their retry time; when the database cannot record them, the job retries through arq."""
    services: Services = job.services
    errors = {
        e: f"{'transient' if is_transient(exc) else 'error'}: {_summary(exc)}" for e, exc in failed.items()
    }
    try:
        recorded = await inbox.record_failures(
            services.pool, errors, now=services.clock(), max_tries=services.settings.max_tries
        )
    except Exception as record_exc:  # the database may be the thing that is down
        log.warning("failure_not_recorded", count=len(failed), error=type(record_exc).__name__)
        # arq allows max_tries + 1 runs of a job: the last one leaves the rows to the sweep.
        retry_in = backoff_seconds(job.attempt) if job.attempt <= services.settings.max_tries else None
        for event_id, exc in failed.items():
            _log_failure(job, event_id, exc, "retry", job.attempt, retry_in, started)
        if retry_in is not None:
            raise RetryLater(retry_in) from next(iter(failed.values()))
        return
    now = services.clock()
    due: dict[datetime, list[str]] = {}
    for failure in recorded.values():
        if failure.status == "failed" and failure.next_retry_at is not None:
            due.setdefault(failure.next_retry_at, []).append(failure.event_id)
    for when, ids in due.items():
        try:
            await services.queue.enqueue_events(ids, defer_until=when)
        except Exception as exc:  # the row is `failed`: the sweep queues it after its retry time
            log.warning("retry_not_enqueued", count=len(ids), error=type(exc).__name__)
    for event_id, exc in failed.items():
        failure = recorded.get(event_id)
        if failure is None:  # finished meanwhile (another job applied it) or gone
            _log_failure(job, event_id, exc, "error", None, None, started)
            continue
        retry_in = None
        if failure.next_retry_at is not None:
            retry_in = round(max((failure.next_retry_at - now).total_seconds(), 0.0), 3)
        outcome = "dead" if failure.status == "dead" else "retry"
        _log_failure(job, event_id, exc, outcome, failure.attempts, retry_in, started)


def _log_failure(
    job: Job,
    event_id: str,
    exc: BaseException,
    outcome: str,
    attempt: int | None,
    retry_in: float | None,
    started: float,
) -> None:
    metrics.JOB_DURATION.labels(handler=PROCESS_EVENTS, outcome=outcome).observe(
        time.perf_counter() - started
    )
    log.warning(
        "job_finished",
        job=PROCESS_EVENTS,
        job_id=job.id,
        event_id=event_id,
        outcome=outcome,
        attempt=attempt,
        error=f"{type(exc).__name__}: {exc}"[:500],
        retry_in_s=retry_in,
        duration_ms=_ms(started),
    )


async def sweep_inbox(job: Job) -> int:
    """Re-enqueue what Redis may have lost (old ``received``, ``failed`` past its retry time by
    the same grace) and the unmatched events due a retry, several ids a job."""
    services: Services = job.services
    now = services.clock()
    grace = timedelta(seconds=services.settings.sweep_received_after_seconds)
    due = await inbox.due_for_sweep(
        services.pool,
        received_before=now - grace,
        retry_due=now,
        failed_due=now - grace,
        limit=services.settings.sweep_batch_size,
    )
    if due:
        await services.queue.enqueue_events(due)
        log.info("sweep_inbox", requeued=len(due))
    return len(due)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
