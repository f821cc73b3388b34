"""The arq worker, built from plain job and cron descriptions: arq's ``Worker``, ``func``, ``cron``
and ``Retry`` and its ``ctx`` dict stay behind this door; job functions see a typed ``Job``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import wraps
from typing import Any

from arq import Retry, cron
from arq.constants import in_progress_key_prefix
from arq.worker import Worker, func

from worker.queue.redis import redis_settings
from worker.queue.retry import RetryLater


@dataclass(frozen=True)
class Job:
    """One run of a job as its function sees it: the worker's shared objects and arq's facts."""

    services: Any  # worker.services.Services (typed loosely: the services module imports the queue)
    attempt: int = 1
    enqueued_at: datetime | None = None
    score: int | None = None  # the queue score of this enqueueing or retry
    shared: Mapping[str, Any] = field(default_factory=dict)  # worker-lifetime objects
    id: str | None = None  # arq's job id


JobFunction = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class JobSpec:
    name: str
    function: JobFunction
    max_tries: int


@dataclass(frozen=True)
class CronSpec:
    """A periodic job; ``name`` must be unique per deployment (arq's cron ids are global)."""

    name: str
    function: JobFunction
    second: set[int] | int | None = None
    minute: set[int] | int | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class WorkerSpec:
    redis_url: str
    queue_name: str
    max_jobs: int
    job_timeout: float
    poll_delay: float
    jobs: Sequence[JobSpec]
    crons: Sequence[CronSpec]
    shared: Mapping[str, Any]
    on_startup: Callable[[], Awaitable[None]] | None = None
    on_shutdown: Callable[[], Awaitable[None]] | None = None


class ClaimingWorker(Worker):
    """arq's ``Worker``, asking Redis less before it claims a job.

    Every poll (``poll_delay``) arq reads the due jobs of the queue, and a running job stays there
    until it ends; for each, arq spends three or four round trips (WATCH, EXISTS of its
    in-progress key, ZSCORE, UNWATCH) only to find it running. Under load that was 13 % of a worker
    process's CPU (py-spy, ``bench/README.md``). Here the jobs this worker runs are skipped without
    asking, and the in-progress keys of the others are read in one round trip; arq's own claim
    (WATCH, MULTI) then runs only for jobs nobody runs, so two workers still never start one job
    twice. Relies on arq's ``start_jobs(job_ids)``, ``tasks`` (job id → task) and in-progress key
    names: ``tests/integration/test_arq_contract.py`` pins them."""

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        mine = {job_id for job_id, task in self.tasks.items() if not task.done()}
        candidates = [job_id for job_id in job_ids if job_id.decode() not in mine]
        if candidates:
            async with self.pool.pipeline(transaction=False) as pipe:
                for job_id in candidates:
                    pipe.exists(in_progress_key_prefix + job_id.decode())
                running = await pipe.execute()
            candidates = [job_id for job_id, busy in zip(candidates, running, strict=True) if not busy]
        await super().start_jobs(candidates)


def _job_of(ctx: dict[str, Any]) -> Job:
    return Job(
        services=ctx["services"],
        attempt=ctx.get("job_try", 1),
        enqueued_at=ctx.get("enqueue_time"),
        score=ctx.get("score"),
        shared=ctx.get("shared", {}),
        id=ctx.get("job_id"),
    )


def _as_arq(function: JobFunction) -> JobFunction:
    """arq's calling convention around ours: ``ctx`` becomes a ``Job``, ``RetryLater`` becomes
    arq's ``Retry`` (arq treats any other exception as final)."""

    @wraps(function)
    async def run(ctx: dict[str, Any], *args: Any) -> Any:
        try:
            return await function(_job_of(ctx), *args)
        except RetryLater as later:
            raise Retry(defer=timedelta(seconds=later.defer_seconds)) from later.__cause__

    return run


def _hook(
    callback: Callable[[], Awaitable[None]] | None,
) -> Callable[[dict[str, Any]], Awaitable[None]] | None:
    if callback is None:
        return None

    async def run(ctx: dict[str, Any]) -> None:
        await callback()

    return run


def build_arq_worker(spec: WorkerSpec, services: Any, *, handle_signals: bool, burst: bool) -> Worker:
    """An arq ``Worker`` for ``spec``. Results are never kept (``keep_result=0``), so a job id is
    free again once its job ends: replays always enqueue."""
    return ClaimingWorker(
        functions=[func(_as_arq(j.function), name=j.name, max_tries=j.max_tries) for j in spec.jobs],
        cron_jobs=[
            cron(_as_arq(c.function), name=c.name, second=c.second, minute=c.minute, timeout=c.timeout)
            for c in spec.crons
        ],
        # Its own pool: Worker.close() closes the pool it runs on.
        redis_settings=redis_settings(spec.redis_url),
        queue_name=spec.queue_name,
        max_jobs=spec.max_jobs,
        job_timeout=spec.job_timeout,
        keep_result=0,
        poll_delay=spec.poll_delay,
        handle_signals=handle_signals,
        burst=burst,
        ctx={"services": services, "shared": spec.shared},
        on_startup=_hook(spec.on_startup),
        on_shutdown=_hook(spec.on_shutdown),
        log_results=False,
        health_check_interval=30,
    )
