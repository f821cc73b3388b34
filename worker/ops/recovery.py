"""Operator repairs of the inbox: list dead letters, retry one event or every dead letter of a type.

A retry puts the inbox row back to ``received`` with a fresh try budget and enqueues it (a
``process_events`` job; every enqueueing gets a fresh job id, so it is never refused); the
processor then decides from Postgres: a replay of something the state already reflects is a
``stale`` no-op (no audit entry), anything else applies once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handlers.codec import to_jsonable
from worker.infra.logging import get_logger
from worker.services import Services

log = get_logger("recovery")

# Every status can be retried: `processed`/`ignored` replays are safe no-ops when nothing changed.
RETRYABLE = ("received", "processed", "ignored", "unmatched", "failed", "dead")


@dataclass(frozen=True)
class RetryResult:
    event_id: str
    previous_status: str
    enqueued: bool  # a job for it was queued (job ids are fresh: always, unless Redis failed)

    def as_json(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "previous_status": self.previous_status, "enqueued": self.enqueued}


async def retry_event(services: Services, event_id: str) -> RetryResult | None:
    """Reset one inbox event to ``received`` and enqueue it; None when the inbox does not have it."""
    previous = await services.pool.fetchval(
        """
        WITH old AS (SELECT event_id, status FROM webhook_events WHERE event_id = $1 FOR UPDATE)
        UPDATE webhook_events e
           SET status = 'received', attempts = 0, next_retry_at = NULL
          FROM old WHERE e.event_id = old.event_id
        RETURNING old.status
        """,
        event_id,
    )
    if previous is None:
        return None
    enqueued = await services.queue.enqueue_event(event_id)
    log.info("event_retry", event_id=event_id, previous_status=previous, enqueued=enqueued)
    return RetryResult(event_id, previous, enqueued)


async def retry_dead_letters(services: Services, event_type: str, limit: int = 10_000) -> list[str]:
    """Reset and enqueue every dead letter of ``event_type`` (at most ``limit``); returns their ids."""
    rows = await services.pool.fetch(
        """
        UPDATE webhook_events SET status = 'received', attempts = 0, next_retry_at = NULL
         WHERE event_id IN (SELECT event_id FROM webhook_events
                             WHERE status = 'dead' AND type = $1
                             ORDER BY received_at LIMIT $2 FOR UPDATE)
        RETURNING event_id
        """,
        event_type,
        limit,
    )
    ids = [r["event_id"] for r in rows]
    await services.queue.enqueue_events(ids)  # several ids a job
    log.info("dead_letters_retry", event_type=event_type, count=len(ids))
    return ids


async def list_dead_letters(
    services: Services, event_type: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Dead letters, oldest first, with the reason each was parked (``last_error``)."""
    rows = await services.pool.fetch(
        """
        SELECT event_id, type, created, received_at, attempts, outcome, customer_id, workspace_id,
               last_error
          FROM webhook_events
         WHERE status = 'dead' AND ($1::text IS NULL OR type = $1)
         ORDER BY received_at, event_id LIMIT $2
        """,
        event_type,
        limit,
    )
    return [to_jsonable(dict(r)) for r in rows]
