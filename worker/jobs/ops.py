"""arq jobs of the operations triggers: a backfill reads a bounded number of pages per job and
enqueues its own continuation, so no single job outlives ``BW_JOB_TIMEOUT_SECONDS`` and a run
survives worker restarts (its cursor is in Postgres)."""

from __future__ import annotations

from worker.infra import tracing
from worker.infra.logging import get_logger
from worker.ops import backfill
from worker.ops.reconcile import reconcile_workspace
from worker.queue.worker import Job
from worker.services import Services

log = get_logger("ops_jobs")

PAGES_PER_JOB = 10


async def backfill_job(job: Job, run_id: int) -> str:
    services: Services = job.services
    try:
        run = await backfill.run_pages(services, services.require_stripe(), run_id, max_pages=PAGES_PER_JOB)
    except backfill.BackfillBusy:  # another job is on it and will continue it
        return "busy"
    except Exception:  # the run row holds the error; an operator resumes it (API or CLI)
        return "failed"
    if run["status"] == "running":
        await services.queue.enqueue_backfill(run_id, f"page:{run['cursor']}")
    return str(run["status"])


async def reconcile_job(job: Job, workspace_id: str, traceparent: str | None = None) -> str:
    """Re-fetch a workspace's objects from Stripe (asked for when two events tie on ``created``);
    with tracing on, in the trace of the event that asked (``traceparent``)."""
    services: Services = job.services
    if services.stripe is None:
        return "not_configured"
    attributes = {"workspace_id": workspace_id, "attempt": job.attempt}
    with tracing.start_span(
        "reconcile_workspace", parent=traceparent, kind="consumer", attributes=attributes
    ):
        result = await reconcile_workspace(services, services.stripe, workspace_id, cause_kind="job")
    log.info("workspace_refetched", workspace_id=workspace_id, applied=len(result.get("applied", [])))
    return "done"
