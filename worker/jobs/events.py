"""The event job: process one inbox event (through the worker's batcher), and the inbox sweep.

arq treats a plain exception as final, so every failure here becomes ``Retry`` with backoff until
``BW_MAX_TRIES``, then a dead letter recorded in Postgres with its last error. Results are never
kept (``keep_result=0``) so a job id is free again once its job ends: replays always enqueue.
"""

from __future__ import annotations

import time
import traceback
from datetime import timedelta
from functools import cache

from prometheus_client import Histogram

from worker.infra import metrics
from worker.infra.logging import get_logger
from worker.processing.thin_fetch import with_related_object
from worker.processing.unit_of_work import NEEDS_FETCH
from worker.queue.enqueue import PROCESS_EVENT
from worker.queue.retry import RetryLater, backoff_seconds
from worker.queue.worker import Job
from worker.services import Services
from worker.storage import inbox
from worker.storage.db import is_transient

log = get_logger("jobs")


@cache
def _job_duration(handler: str, outcome: str) -> Histogram:
    """The histogram child of one (event type, outcome): ``labels()`` costs a lock and a lookup."""
    return metrics.JOB_DURATION.labels(handler=handler, outcome=outcome)


def _summary(exc: BaseException) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3)
    return "".join(lines)[-2000:]


async def process_event(job: Job, event_id: str) -> None:
    services: Services = job.services
    job_try = job.attempt
    started = time.perf_counter()
    if job_try == 1 and job.enqueued_at is not None:
        lag = (services.clock() - job.enqueued_at).total_seconds()
        metrics.INBOX_TO_JOB_LATENCY.observe(max(lag, 0.0))
    batcher = job.shared["batcher"]
    try:
        result = await batcher.process(event_id, job.score)
        if result.outcome == NEEDS_FETCH:  # a thin event: fetch its object, outside any transaction
            result = await with_related_object(services, batcher, result)
    except Exception as exc:
        dead = job_try >= services.settings.max_tries
        kind = "transient" if is_transient(exc) else "error"
        delay = None if dead else backoff_seconds(job_try)
        try:
            await services.processor.record_failure(
                event_id, f"{kind}: {_summary(exc)}", dead=dead, retry_in=delay
            )
        except Exception as record_exc:  # the database may be the thing that is down
            log.warning("failure_not_recorded", event_id=event_id, error=type(record_exc).__name__)
        outcome = "dead" if dead else "retry"
        metrics.JOB_DURATION.labels(handler=PROCESS_EVENT, outcome=outcome).observe(
            time.perf_counter() - started
        )
        log.warning(
            "job_finished",
            job=PROCESS_EVENT,
            event_id=event_id,
            outcome=outcome,
            attempt=job_try,
            error=f"{type(exc).__name__}: {exc}"[:500],
            retry_in_s=delay,
            duration_ms=_ms(started),
        )
        if dead:
            return
        raise RetryLater(delay or 1) from exc

    _job_duration(result.event_type or "unknown", result.outcome).observe(time.perf_counter() - started)
    log.info(
        "job_finished",
        job=PROCESS_EVENT,
        event_id=event_id,
        event_type=result.event_type,
        workspace_id=result.workspace_id,
        outcome=result.outcome,
        status=result.status,
        version=result.version,
        attempt=job_try,
        duration_ms=_ms(started),
    )


async def sweep_inbox(job: Job) -> int:
    """Re-enqueue what Redis may have lost (old ``received``) and what is due a retry."""
    services: Services = job.services
    now = services.clock()
    due = await inbox.due_for_sweep(
        services.pool,
        received_before=now - timedelta(seconds=services.settings.sweep_received_after_seconds),
        retry_due=now,
        limit=services.settings.sweep_batch_size,
    )
    count = 0
    for event_id in due:
        count += await services.queue.enqueue_event(event_id)
    if count:
        log.info("sweep_inbox", requeued=count)
    return count


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
