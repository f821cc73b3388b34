"""arq jobs of the operations triggers: a backfill reads a bounded number of pages per job and
enqueues its own continuation, so no single job outlives ``BW_JOB_TIMEOUT_SECONDS`` and a run
survives worker restarts (its cursor is in Postgres)."""

from __future__ import annotations

from typing import Any

from arq.worker import func

from worker import backfill
from worker.logging import get_logger
from worker.services import Services

log = get_logger("ops_jobs")

BACKFILL = "backfill"
RECONCILE = "reconcile_workspace"
PAGES_PER_JOB = 10


async def backfill_job(ctx: dict[str, Any], run_id: int) -> str:
    services: Services = ctx["services"]
    try:
        run = await backfill.run_pages(services, services.require_stripe(), run_id, max_pages=PAGES_PER_JOB)
    except backfill.BackfillBusy:  # another job is on it and will continue it
        return "busy"
    except Exception:  # the run row holds the error; an operator resumes it (API or CLI)
        return "failed"
    if run["status"] == "running":
        await enqueue_backfill(services, run_id, f"page:{run['cursor']}")
    return str(run["status"])


async def enqueue_backfill(services: Services, run_id: int, step: str) -> None:
    """Queue (a continuation of) a run. The id is unique per step, so a resume is never refused
    because the previous job's keys are still being cleaned up."""
    await services.redis.enqueue_job(
        BACKFILL,
        run_id,
        _queue_name=services.settings.queue_name,
        _job_id=f"{services.settings.redis_prefix}:backfill:{run_id}:{step}",
    )


async def reconcile_job(ctx: dict[str, Any], workspace_id: str) -> str:
    """Re-fetch a workspace's objects from Stripe (asked for when two events tie on ``created``)."""
    from worker.reconcile import reconcile_workspace  # reconcile imports jobs, which imports this

    services: Services = ctx["services"]
    if services.stripe is None:
        return "not_configured"
    result = await reconcile_workspace(services, services.stripe, workspace_id, cause_kind="job")
    log.info("workspace_refetched", workspace_id=workspace_id, applied=len(result.get("applied", [])))
    return "done"


async def enqueue_reconcile(services: Services, workspace_id: str) -> None:
    """One queued refetch per workspace at a time: a second request while one waits adds nothing."""
    await services.redis.enqueue_job(
        RECONCILE,
        workspace_id,
        _queue_name=services.settings.queue_name,
        _job_id=f"{services.settings.redis_prefix}:reconcile:{workspace_id}",
    )


def ops_functions() -> list[Any]:
    # One try each: a failed backfill run is marked `failed` with its error and resumed by an
    # operator; a failed refetch leaves the deterministic tie-break's state (arq logs the error).
    return [
        func(backfill_job, name=BACKFILL, max_tries=1),
        func(reconcile_job, name=RECONCILE, max_tries=1),
    ]
