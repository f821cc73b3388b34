"""The worker's settings: which job functions and crons it runs, and the objects they share."""

from __future__ import annotations

from collections.abc import Callable

from worker.infra.heap import settle_heap
from worker.jobs.dunning import sweep_dunning
from worker.jobs.events import EVENT_TRANSACTIONS_KEY, process_event, process_events, sweep_inbox
from worker.jobs.ops import backfill_job, reconcile_job
from worker.jobs.plan_changes import fire_plan_change, sweep_plan_changes
from worker.processing.transactions import EventTransactions
from worker.queue.enqueue import BACKFILL, FIRE_PLAN_CHANGE, PROCESS_EVENT, PROCESS_EVENTS, RECONCILE
from worker.queue.worker import CronSpec, JobSpec, Worker, WorkerSpec, build_arq_worker
from worker.services import Services


def worker_spec(services: Services, on_started: Callable[[], None] | None = None) -> WorkerSpec:
    """``on_started``: called once arq is connected and about to take jobs (a worker process's
    readiness, told to its main process)."""
    settings = services.settings
    transactions = EventTransactions(services.processor)

    async def started() -> None:
        settle_heap()
        if on_started is not None:
            on_started()

    prefix = settings.redis_prefix  # cron ids are global in arq: the prefix keeps deployments apart
    # arq sizes every in-progress key by the longest timeout: keep the crons' short.
    timeout = settings.job_timeout_seconds
    return WorkerSpec(
        redis_url=settings.redis_url or "",
        queue_name=settings.queue_name,
        max_jobs=settings.max_jobs,
        job_timeout=settings.job_timeout_seconds,
        poll_delay=settings.poll_delay_seconds,
        jobs=[
            # max_tries + 1: an event's own tries are counted in Postgres; arq's count only the
            # retries of a whole job whose failures could not be recorded (the database down).
            JobSpec(PROCESS_EVENTS, process_events, max_tries=settings.max_tries + 1),
            JobSpec(PROCESS_EVENT, process_event, max_tries=settings.max_tries + 1),
            JobSpec(FIRE_PLAN_CHANGE, fire_plan_change, max_tries=settings.max_tries + 1),
            # One try each: a failed backfill run is marked `failed` with its error and resumed by
            # an operator; a failed refetch leaves the deterministic tie-break's state.
            JobSpec(BACKFILL, backfill_job, max_tries=1),
            JobSpec(RECONCILE, reconcile_job, max_tries=1),
        ],
        crons=[
            CronSpec(
                f"{prefix}:sweep_inbox",
                sweep_inbox,
                second=set(range(0, 60, settings.sweep_interval_seconds)),
                timeout=timeout,
            ),
            CronSpec(
                f"{prefix}:sweep_dunning",
                sweep_dunning,
                minute=set(range(0, 60, 5)),
                second=20,
                timeout=timeout,
            ),
            CronSpec(
                f"{prefix}:sweep_plan_changes",
                sweep_plan_changes,
                second=set(range(5, 60, 10)),
                timeout=timeout,
            ),
        ],
        # Shared by the event jobs of this process: a few transactions at once, waiting jobs combined.
        shared={EVENT_TRANSACTIONS_KEY: transactions},
        on_startup=started,
        on_shutdown=transactions.close,
    )


def build_worker(
    services: Services,
    *,
    handle_signals: bool = True,
    burst: bool = False,
    on_started: Callable[[], None] | None = None,
) -> Worker:
    spec = worker_spec(services, on_started)
    return build_arq_worker(spec, services, handle_signals=handle_signals, burst=burst)
