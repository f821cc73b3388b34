"""Enqueueing arq jobs. Job ids are derived from the event id only to coalesce duplicates while
a job is queued; Postgres, not arq, decides whether an event was already applied."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from arq.connections import ArqRedis

PROCESS_EVENT = "process_event"


@dataclass(frozen=True)
class JobQueue:
    redis: ArqRedis
    prefix: str
    queue_name: str

    def event_job_id(self, event_id: str) -> str:
        return f"{self.prefix}:evt:{event_id}"

    async def enqueue_event(self, event_id: str, *, defer_until: datetime | None = None) -> bool:
        """Queue processing of an inbox event. False when a job for it is already queued or running
        (that job will process it); raises on Redis errors so the caller can answer 503."""
        job = await self.redis.enqueue_job(
            PROCESS_EVENT,
            event_id,
            _job_id=self.event_job_id(event_id),
            _queue_name=self.queue_name,
            _defer_until=defer_until,
        )
        return job is not None

    async def depth(self) -> int:
        return int(await self.redis.zcard(self.queue_name))
