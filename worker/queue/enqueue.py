"""Enqueueing arq jobs. Job ids are derived from the event id only to coalesce duplicates while
a job is queued; Postgres, not arq, decides whether an event was already applied."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms
from redis.commands.core import AsyncScript

PROCESS_EVENT = "process_event"
FIRE_PLAN_CHANGE = "fire_plan_change"
BACKFILL = "backfill"
RECONCILE = "reconcile_workspace"

# arq's ``enqueue_job`` (WATCH, EXISTS, MULTI/PSETEX/ZADD/EXEC: three round trips) as one atomic
# script with the same keys, job encoding and "skip if queued, running or kept" rule.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) ~= 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""

# The same rule for many jobs in one round trip (the receiver's group commit). KEYS: job key and
# result key of each job, then the queue; ARGV: expiry, job, score and id of each job.
# Returns one flag per job: 1 queued, 0 already queued, running or kept.
_ENQUEUE_MANY = """
local queue = KEYS[#KEYS]
local queued = {}
for i = 1, #ARGV / 4 do
    if redis.call('EXISTS', KEYS[2 * i - 1], KEYS[2 * i]) ~= 0 then
        queued[i] = 0
    else
        redis.call('PSETEX', KEYS[2 * i - 1], ARGV[4 * i - 3], ARGV[4 * i - 2])
        redis.call('ZADD', queue, ARGV[4 * i - 1], ARGV[4 * i])
        queued[i] = 1
    end
end
return queued
"""


# The first ARGV[2] due jobs of the queue (ARGV[3] <= score <= ARGV[1]) as a flat member, score list.
_DUE = """
return redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
"""


@dataclass(frozen=True)
class JobQueue:
    redis: ArqRedis
    prefix: str
    queue_name: str
    _enqueue: AsyncScript = field(init=False, repr=False, compare=False)
    _enqueue_many: AsyncScript = field(init=False, repr=False, compare=False)
    _due: AsyncScript = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_enqueue", self.redis.register_script(_ENQUEUE))
        object.__setattr__(self, "_enqueue_many", self.redis.register_script(_ENQUEUE_MANY))
        object.__setattr__(self, "_due", self.redis.register_script(_DUE))

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

    async def enqueue_events(self, event_ids: Sequence[str]) -> list[bool]:
        """``enqueue_event`` for many events in one atomic round trip: one flag per id (False: a
        job for it is already queued or running). Raises on Redis errors."""
        if not event_ids:
            return []
        now_ms = timestamp_ms()
        expires_ms = self.redis.expires_extra_ms
        keys: list[str] = []
        args: list[object] = []
        for event_id in event_ids:
            job_id = self.event_job_id(event_id)
            keys += (job_key_prefix + job_id, result_key_prefix + job_id)
            job = serialize_job(
                PROCESS_EVENT, (event_id,), {}, None, now_ms, serializer=self.redis.job_serializer
            )
            args += (expires_ms, job, now_ms, job_id)
        keys.append(self.queue_name)
        return [bool(flag) for flag in await self._enqueue_many(keys=keys, args=args)]

    async def due_events(self, limit: int, from_score: int | None = None) -> list[tuple[str, int]]:
        """The event jobs arq will start next, in its order: (event id, score) of the first
        ``limit`` queued jobs that are due (a job's score identifies one enqueueing or retry of
        it: arq's ``Retry`` moves the score), from ``from_score`` on (inclusive) when given."""
        # Through a script: its flat reply skips redis-py's per-pair score conversion (a
        # worker reads a few hundred entries per batch).
        start = "-inf" if from_score is None else from_score
        flat = await self._due(keys=[self.queue_name], args=[timestamp_ms(), limit, start])
        marker = f"{self.prefix}:evt:".encode()
        size = len(marker)
        return [
            (member[size:].decode(), int(score))
            for member, score in zip(flat[::2], flat[1::2], strict=True)
            if member.startswith(marker)
        ]

    async def enqueue_fire(self, change_id: str, *, defer_until: datetime | None, tag: str) -> bool:
        """Queue a firing attempt of a plan change. The job id carries ``tag`` so a release does not
        collide with the deferred job of the same change (which stays in Redis until its time and
        then finds nothing to do)."""
        job = await self.redis.enqueue_job(
            FIRE_PLAN_CHANGE,
            change_id,
            _job_id=f"{self.prefix}:pc:{change_id}:{tag}",
            _queue_name=self.queue_name,
            _defer_until=defer_until,
        )
        return job is not None

    async def enqueue_backfill(self, run_id: int, step: str) -> bool:
        """Queue (a continuation of) a backfill run. The id is unique per step, so a resume is never
        refused because the previous job's keys are still being cleaned up."""
        job = await self.redis.enqueue_job(
            BACKFILL, run_id, _queue_name=self.queue_name, _job_id=f"{self.prefix}:backfill:{run_id}:{step}"
        )
        return job is not None

    async def enqueue_reconcile(self, workspace_id: str, *, traceparent: str | None = None) -> bool:
        """One queued refetch per workspace at a time: a second request while one waits adds nothing.
        ``traceparent``: the span the job's trace continues (tracing on)."""
        job = await self.redis.enqueue_job(
            RECONCILE,
            workspace_id,
            *([traceparent] if traceparent else []),
            _queue_name=self.queue_name,
            _job_id=f"{self.prefix}:reconcile:{workspace_id}",
        )
        return job is not None

    async def depth(self) -> int:
        return int(await self.redis.zcard(self.queue_name))

    async def depths(self) -> tuple[int, int]:
        """(every queued job, the jobs due now): deferred jobs (retries, plan changes waiting for
        their time) are queued but not due; arq scores jobs by when they may run, in ms."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.queue_name)
            pipe.zcount(self.queue_name, "-inf", timestamp_ms())
            depth, due = await pipe.execute()
        return int(depth), int(due)
