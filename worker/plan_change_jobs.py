"""arq functions that fire pending plan changes: the deferred job and the sweep that backs it up.

arq's deferred jobs live only in Redis, so the cron sweep re-finds due changes in Postgres. Both
go through ``plan_changes.fire``, whose row claim makes any number of attempts fire a change once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from arq import Retry

from handlers.reducer import BlockLifted, Effect
from worker import plan_changes
from worker.logging import get_logger
from worker.services import Services

log = get_logger("plan_change_jobs")

# One sweep fires this many changes at once (each holds a pool connection only inside its two
# short transactions, never during the Stripe call) ...
SWEEP_CONCURRENCY = 8
# ... and starts no new batch after this long: under the cron period (10 s), so consecutive sweeps
# rarely overlap, and far under the job timeout.
SWEEP_BUDGET_SECONDS = 8.0


async def fire_plan_change(ctx: dict[str, Any], change_id: str) -> str:
    """Fire one change if it is (still) due; a cancelled or superseded one is left alone."""
    from worker.jobs import backoff_seconds  # jobs imports this module for build_worker

    services: Services = ctx["services"]
    job_try: int = ctx.get("job_try", 1)
    started = time.perf_counter()
    try:
        result = await plan_changes.fire(services, change_id, cause=("job", f"fire_plan_change:{change_id}"))
    except Exception as exc:
        # arq treats a plain exception as final; a claim left behind is re-tried by the sweep once
        # stale, with the same idempotency key.
        log.warning(
            "job_finished",
            job=plan_changes.FIRE_JOB,
            change_id=change_id,
            outcome="retry" if job_try < services.settings.max_tries else "error",
            attempt=job_try,
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
        if job_try < services.settings.max_tries:
            raise Retry(defer=timedelta(seconds=backoff_seconds(job_try))) from exc
        return "error"
    await after_fire(services, result)
    log.info(
        "job_finished",
        job=plan_changes.FIRE_JOB,
        change_id=change_id,
        outcome=result.outcome,
        attempt=job_try,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )
    if result.outcome == "retry" and job_try < services.settings.max_tries:
        raise Retry(defer=timedelta(seconds=backoff_seconds(job_try)))
    return result.outcome


async def sweep_plan_changes(ctx: dict[str, Any]) -> int:
    """Fire what is due now: missed deferred jobs, released waits, abandoned claims.

    Pages through everything due (not only the first batch), ``SWEEP_CONCURRENCY`` changes at a
    time, until nothing is left or ``SWEEP_BUDGET_SECONDS`` have passed; the next sweep (10 s
    later) continues from the start of what is still due."""
    services: Services = ctx["services"]
    deadline = time.monotonic() + min(SWEEP_BUDGET_SECONDS, services.settings.job_timeout_seconds / 2)
    limit = asyncio.Semaphore(SWEEP_CONCURRENCY)
    fired = 0
    after = None
    while time.monotonic() < deadline:
        batch = await plan_changes.due_changes(services, after=after)
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
            result = await plan_changes.fire(
                services, change_id, cause=("sweep", f"sweep_plan_changes:{change_id}")
            )
        except Exception as exc:  # one change must not stop the others; the next sweep retries
            log.warning(
                "sweep_plan_changes_error", change_id=change_id, error=f"{type(exc).__name__}: {exc}"[:500]
            )
            return False
        await after_fire(services, result)
    return result.outcome == "applied"


async def release_waiting(
    services: Services, workspace_id: str, version: int, effects: Sequence[Effect]
) -> None:
    """A lifted open-invoice block releases the changes that were waiting for payment."""
    if not any(isinstance(e, BlockLifted) for e in effects):
        return
    for change_id in await plan_changes.waiting_changes(services, workspace_id):
        await plan_changes.enqueue_fire(services, change_id, defer_until=None, tag=f"v{version}")


async def after_fire(services: Services, result: plan_changes.FireResult) -> None:
    from worker.jobs import after_commit  # jobs imports this module for build_worker

    for c in result.committed:
        await after_commit(services, c.workspace_id, c.version, c.changes, (), result.change_id)
