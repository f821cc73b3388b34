"""What follows a committed state change, whatever caused it: the one place, like a message bus.

Every transaction that changes a workspace (an event batch, an API request, a sweep, a reconcile,
a fired plan change) hands what it committed here once it has committed: the change notification
goes out, a lifted open-invoice block releases the plan changes that waited for payment, a tie on
``created`` asks for a refetch, and events that waited for a newly mapped customer are queued.
Each reaction is best effort: the sweeps catch up on whatever fails here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.exceptions import RedisError

from handlers.reducer import BlockLifted, Effect, RefetchRequested
from worker.infra.logging import get_logger
from worker.infra.notifications import Change, publish_changes
from worker.plan_changes.store import Committed, waiting_changes
from worker.processing.unit_of_work import ProcessResult
from worker.services import Services

log = get_logger("after_commit")


async def after_commit(
    services: Services,
    workspace_id: str | None,
    version: int | None,
    changes: Mapping[str, Any],
    effects: Sequence[Effect],
    cause: str,
) -> None:
    """One committed change: its notification, then the reactions to its effects."""
    if workspace_id is None or version is None or not changes:
        return
    await after_commits(services, [(Change(workspace_id, version, changes, cause), tuple(effects))])


async def after_commits(services: Services, committed: Sequence[tuple[Change, tuple[Effect, ...]]]) -> None:
    """``after_commit`` for several committed changes: the notifications in one round trip."""
    await publish_changes(services.redis, services.settings.redis_prefix, [c for c, _ in committed])
    for change, effects in committed:
        if effects:  # most changes have none
            await release_waiting(services, change.workspace_id, change.version, effects)


async def after_plan_change(services: Services, committed: Iterable[Committed], cause: str) -> None:
    """The state changes a plan-change transaction committed (requested, fired, canceled …)."""
    for c in committed:
        await after_commit(services, c.workspace_id, c.version, c.changes, (), cause)


async def after_events_committed(services: Services, results: Sequence[ProcessResult]) -> None:
    """A committed batch of events: the change notifications in one round trip, then the
    reactions to their effects and to newly mapped customers."""
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
            try:
                await services.queue.enqueue_reconcile(r.workspace_id or "", traceparent=r.traceparent)
            except Exception as exc:  # the deterministic tie-break already gave a state
                log.warning("refetch_not_enqueued", workspace_id=r.workspace_id, error=repr(exc))
    requeue = [event_id for r in results for event_id in r.requeue]
    if requeue:
        # Events that arrived before we knew their customer need not wait for their backoff
        # (if this fails, the inbox sweep still retries them on their backoff schedule).
        try:
            await services.queue.enqueue_events(requeue)
        except Exception as exc:
            log.warning("unmatched_requeue_failed", count=len(requeue), error=repr(exc))


async def release_waiting(
    services: Services, workspace_id: str, version: int, effects: Sequence[Effect]
) -> None:
    """A lifted open-invoice block releases the changes that were waiting for payment."""
    if not any(isinstance(e, BlockLifted) for e in effects):
        return
    for change_id in await waiting_changes(services.pool, workspace_id):
        await enqueue_fire(services, change_id, tag=f"v{version}")


async def enqueue_fire(services: Services, change_id: str, *, tag: str, defer_until: Any = None) -> None:
    """Queue a firing attempt; the change is durable in Postgres, so a Redis outage only delays it
    until the cron sweep finds it due."""
    try:
        await services.queue.enqueue_fire(change_id, defer_until=defer_until, tag=tag)
    except (OSError, RedisError) as exc:
        log.warning("plan_change_not_enqueued", change_id=change_id, error=f"{type(exc).__name__}: {exc}")
