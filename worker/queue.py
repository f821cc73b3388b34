"""Enqueueing arq jobs. Job ids are derived from the event id only to coalesce duplicates while
a job is queued; Postgres, not arq, decides whether an event was already applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms
from redis.commands.core import AsyncScript

PROCESS_EVENT = "process_event"

# arq's ``enqueue_job`` (WATCH, EXISTS, MULTI/PSETEX/ZADD/EXEC: three round trips) as one atomic
# script with the same keys, job encoding and "skip if queued, running or kept" rule.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) ~= 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class JobQueue:
    redis: ArqRedis
    prefix: str
    queue_name: str
    _enqueue: AsyncScript = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_enqueue", self.redis.register_script(_ENQUEUE))

    def event_job_id(self, event_id: str) -> str:
        return f"{self.prefix}:evt:{event_id}"

    async def enqueue_event(self, event_id: str, *, defer_until: datetime | None = None) -> bool:
        """Queue processing of an inbox event. False when a job for it is already queued or running
        (that job will process it); raises on Redis errors so the caller can answer 503."""
        job_id = self.event_job_id(event_id)
        now_ms = timestamp_ms()
        score = to_unix_ms(defer_until) if defer_until is not None else now_ms
        job = serialize_job(
            PROCESS_EVENT, (event_id,), {}, None, now_ms, serializer=self.redis.job_serializer
        )
        queued = await self._enqueue(
            keys=[job_key_prefix + job_id, result_key_prefix + job_id, self.queue_name],
            args=[score - now_ms + self.redis.expires_extra_ms, job, score, job_id],
        )
        return bool(queued)

    async def depth(self) -> int:
        return int(await self.redis.zcard(self.queue_name))
