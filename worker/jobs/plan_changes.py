"""arq functions that fire pending plan changes: the deferred job and the sweep that backs it up.

arq's deferred jobs live only in Redis, so the cron sweep re-finds due changes in Postgres. Both
go through ``plan_changes.firing.fire``, whose row claim makes any number of attempts fire a change once.
"""

from __future__ import annotations

import asyncio
import time

from worker.infra.logging import get_logger
from worker.plan_changes.firing import fire
from worker.plan_changes.store import due_changes
from worker.processing.after_commit import after_plan_change
from worker.queue.enqueue import FIRE_PLAN_CHANGE
from worker.queue.retry import RetryLater, backoff_seconds
from worker.queue.worker import Job
from worker.services import Services

log = get_logger("plan_change_jobs")

# One sweep fires this many changes at once (each holds a pool connection only inside its two
# short transactions, never during the Stripe call) ...
SWEEP_CONCURRENCY = 8
# ... and starts no new batch after this long: under the cron period (10 s), so consecutive sweeps
# rarely overlap, and far under the job timeout.
SWEEP_BUDGET_SECONDS = 8.0


async def fire_plan_change(job: Job, change_id: str) -> str:
    """Fire one change if it is (still) due; a cancelled or superseded one is left alone."""
    services: Services = job.services
    job_try = job.attempt
    started = time.perf_counter()
    try:
        result = await fire(services, change_id, cause=("job", f"fire_plan_change:{change_id}"))
    except Exception as exc:
        # arq treats a plain exception as final; a claim left behind is re-tried by the sweep once
        # stale, with the same idempotency key.
        log.warning(
            "job_finished",
            job=FIRE_PLAN_CHANGE,
            change_id=change_id,
            outcome="retry" if job_try < services.settings.max_tries else "error",
            attempt=job_try,
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
        if job_try < services.settings.max_tries:
            raise RetryLater(backoff_seconds(job_try)) from exc
        return "error"
    await after_plan_change(services, result.committed, result.change_id)
    log.info(
        "job_finished",
        job=FIRE_PLAN_CHANGE,
        change_id=change_id,
        outcome=result.outcome,
        attempt=job_try,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )
    if result.outcome == "retry" and job_try < services.settings.max_tries:
        raise RetryLater(backoff_seconds(job_try))
    return result.outcome


async def sweep_plan_changes(job: Job) -> int:
    """Fire what is due now: missed deferred jobs, released waits, abandoned claims.

    Pages through everything due (not only the first batch), ``SWEEP_CONCURRENCY`` changes at a
    time, until nothing is left or ``SWEEP_BUDGET_SECONDS`` have passed; the next sweep (10 s
    later) continues from the start of what is still due."""
    services: Services = job.services
    deadline = time.monotonic() + min(SWEEP_BUDGET_SECONDS, services.settings.job_timeout_seconds / 2)
    limit = asyncio.Semaphore(SWEEP_CONCURRENCY)
    fired = 0
    after = None
    while time.monotonic() < deadline:
        batch = await due_changes(services.pool, services.settings, services.clock(), after=after)
        if not batch:
            break
        after = batch[-1]
        fired += sum(
            await asyncio.gather(*(_sweep_one(services, change_id, limit) for _, change_id in batch))
        )
    if fired:
        log.info("sweep_plan_changes", applied=fired)
    return fired


async def _sweep_one(services: Services, change_id: str, limit: asyncio.Semaphore) -> bool:
    async with limit:
        try:
            result = await fire(services, change_id, cause=("sweep", f"sweep_plan_changes:{change_id}"))
        except Exception as exc:  # one change must not stop the others; the next sweep retries
            log.warning(
                "sweep_plan_changes_error", change_id=change_id, error=f"{type(exc).__name__}: {exc}"[:500]
            )
            return False
        await after_plan_change(services, result.committed, result.change_id)
    return result.outcome == "applied"
