"""arq job functions and the worker built around them.

arq treats a plain exception as final, so every failure here becomes ``Retry`` with backoff until
``BW_MAX_TRIES``, then a dead letter recorded in Postgres with its last error. Results are never
kept (``keep_result=0``) so a job id is free again once its job ends: replays always enqueue.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cache, partial
from typing import Any

from arq import Retry, cron
from arq.worker import Worker, func
from prometheus_client import Histogram

from handlers.reducer import Effect, RefetchRequested
from worker import metrics
from worker.db import is_transient
from worker.event_batches import EventBatcher
from worker.heap import settle_heap
from worker.logging import get_logger
from worker.notifications import Change, publish_changes
from worker.plan_change_jobs import fire_plan_change, release_waiting, sweep_plan_changes
from worker.processor import ProcessResult
from worker.queue import PROCESS_EVENT
from worker.services import Services, redis_settings

log = get_logger("jobs")


def backoff_seconds(job_try: int) -> float:
    """1, 2, 4 … capped at 5 minutes."""
    return float(min(2 ** max(job_try - 1, 0), 300))


@cache
def _job_duration(handler: str, outcome: str) -> Histogram:
    """The histogram child of one (event type, outcome): ``labels()`` costs a lock and a lookup."""
    return metrics.JOB_DURATION.labels(handler=handler, outcome=outcome)


def _summary(exc: BaseException) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3)
    return "".join(lines)[-2000:]


async def process_event(ctx: dict[str, Any], event_id: str) -> None:
    services: Services = ctx["services"]
    job_try: int = ctx.get("job_try", 1)
    started = time.perf_counter()
    if job_try == 1 and ctx.get("enqueue_time") is not None:
        lag = (services.clock() - ctx["enqueue_time"]).total_seconds()
        metrics.INBOX_TO_JOB_LATENCY.observe(max(lag, 0.0))
    try:
        result = await ctx["batcher"].process(event_id, ctx.get("score"))
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
        raise Retry(defer=timedelta(seconds=delay or 1)) from exc

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


async def after_commit(
    services: Services,
    workspace_id: str | None,
    version: int | None,
    changes: Mapping[str, Any],
    effects: Sequence[Effect],
    cause: str,
) -> None:
    """What follows a committed state change, whatever caused it (event, API request, sweep):
    the change notification, then the reactions to its effects."""
    if workspace_id is None or version is None or not changes:
        return
    await after_commits(services, [(Change(workspace_id, version, changes, cause), tuple(effects))])


async def after_commits(services: Services, committed: Sequence[tuple[Change, tuple[Effect, ...]]]) -> None:
    """``after_commit`` for several committed changes: the notifications in one round trip."""
    await publish_changes(services.redis, services.settings.redis_prefix, [c for c, _ in committed])
    for change, effects in committed:
        if effects:  # most changes have none
            await release_waiting(services, change.workspace_id, change.version, effects)


def event_batcher(services: Services) -> EventBatcher:
    """The worker's group-commit batcher; ``build_worker`` puts it in the worker's ctx before the
    first job (arq copies ctx per job, so a batcher made inside a job would serve that job only)."""
    return EventBatcher(
        services.processor, partial(after_events_committed, services), read_ahead=services.queue.due_events
    )


async def after_events_committed(services: Services, results: Sequence[ProcessResult]) -> None:
    """``after_commit`` for a batch of processed events: the change notifications in one round
    trip, then the reactions to their effects and to newly mapped customers (each best effort:
    the sweeps catch up on what fails here)."""
    try:
        await after_commits(
            services,
            [
                (Change(r.workspace_id, r.version, r.changes, r.event_id), r.effects)
                for r in results
                if r.workspace_id is not None and r.version is not None and r.changes
            ],
        )
    except Exception as exc:
        log.warning("release_waiting_failed", size=len(results), error=repr(exc)[:300])
    for r in results:
        if services.stripe is not None and any(isinstance(e, RefetchRequested) for e in r.effects):
            from worker.ops_jobs import enqueue_reconcile  # ops_jobs → backfill → receiver → jobs

            try:
                await enqueue_reconcile(services, r.workspace_id or "")
            except Exception as exc:  # the deterministic tie-break already gave a state
                log.warning("refetch_not_enqueued", workspace_id=r.workspace_id, error=repr(exc))
    requeue = [event_id for r in results for event_id in r.requeue]
    if requeue:
        # Events that arrived before we knew their customer need not wait for their backoff
        # (if this fails, the inbox sweep still retries them on their backoff schedule).
        try:
            for event_id in requeue:
                await services.queue.enqueue_event(event_id)
        except Exception as exc:
            log.warning("unmatched_requeue_failed", count=len(requeue), error=repr(exc))


async def _started(ctx: dict[str, Any]) -> None:
    settle_heap()


async def _close_batcher(ctx: dict[str, Any]) -> None:
    if (batcher := ctx.get("batcher")) is not None:
        await batcher.close()


async def sweep_inbox(ctx: dict[str, Any]) -> int:
    """Re-enqueue what Redis may have lost (old ``received``) and what is due a retry."""
    services: Services = ctx["services"]
    now = services.clock()
    rows = await services.pool.fetch(
        """
        SELECT event_id FROM webhook_events
         WHERE (status = 'received' AND received_at < $1)
            OR (status IN ('unmatched', 'failed') AND next_retry_at <= $2)
         ORDER BY received_at LIMIT $3
        """,
        now - timedelta(seconds=services.settings.sweep_received_after_seconds),
        now,
        services.settings.sweep_batch_size,
    )
    count = 0
    for row in rows:
        count += await services.queue.enqueue_event(row["event_id"])
    if count:
        log.info("sweep_inbox", requeued=count)
    return count


async def _sweep_dunning(ctx: dict[str, Any]) -> int:
    from worker.dunning_jobs import sweep_dunning  # it routes its changes through after_commit here

    return await sweep_dunning(ctx)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def build_worker(services: Services, *, handle_signals: bool = True, burst: bool = False) -> Worker:
    from worker.ops_jobs import ops_functions  # backfill imports the receiver, which imports jobs' deps

    settings = services.settings
    return Worker(
        functions=[
            func(process_event, name=PROCESS_EVENT, max_tries=settings.max_tries + 1),
            func(fire_plan_change, name="fire_plan_change", max_tries=settings.max_tries + 1),
            *ops_functions(),
        ],
        cron_jobs=[
            # Cron job ids are global in arq; the prefix keeps deployments sharing a Redis apart.
            cron(
                sweep_inbox,
                name=f"{settings.redis_prefix}:sweep_inbox",
                second=set(range(0, 60, settings.sweep_interval_seconds)),
                # arq sizes every in-progress key by the longest timeout: keep this one short.
                timeout=settings.job_timeout_seconds,
            ),
            cron(
                _sweep_dunning,
                name=f"{settings.redis_prefix}:sweep_dunning",
                minute=set(range(0, 60, 5)),
                second=20,
                timeout=settings.job_timeout_seconds,
            ),
            cron(
                sweep_plan_changes,
                name=f"{settings.redis_prefix}:sweep_plan_changes",
                second=set(range(5, 60, 10)),
                timeout=settings.job_timeout_seconds,
            ),
        ],
        # Its own pool: Worker.close() closes the pool it runs on.
        redis_settings=redis_settings(settings.redis_url or ""),
        queue_name=settings.queue_name,
        max_jobs=settings.max_jobs,
        job_timeout=settings.job_timeout_seconds,
        keep_result=0,
        poll_delay=settings.poll_delay_seconds,
        handle_signals=handle_signals,
        burst=burst,
        ctx={"services": services, "batcher": event_batcher(services)},
        on_startup=_started,
        on_shutdown=_close_batcher,
        log_results=False,
        health_check_interval=30,
    )
