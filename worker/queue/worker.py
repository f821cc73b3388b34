"""The arq worker, built from plain job and cron descriptions: arq's ``Worker``, ``func``, ``cron``
and ``Retry`` and its ``ctx`` dict stay behind this door; job functions see a typed ``Job``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import wraps
from typing import Any

from arq import Retry, cron
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
    return Worker(
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
