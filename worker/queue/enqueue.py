"""Enqueueing arq jobs. An event job carries the ids of several events (one receiver flush, one
sweep chunk); its id is unique per enqueueing, because Postgres (the inbox row status, read under
row lock) and not arq decides whether an event was already applied: the same event in two jobs
is a harmless ``duplicate``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms
from redis.commands.core import AsyncScript

PROCESS_EVENTS = "process_events"
# The job of one event that queues before this release queued; still run (see jobs/events.py).
PROCESS_EVENT = "process_event"
FIRE_PLAN_CHANGE = "fire_plan_change"
BACKFILL = "backfill"
RECONCILE = "reconcile_workspace"
# Most events one job carries: one transaction's worth (the unit of work's batch size).
MAX_JOB_EVENTS = 100

# arq's ``enqueue_job`` (WATCH, EXISTS, MULTI/PSETEX/ZADD/EXEC: three round trips) for many jobs
# as one atomic script with the same keys, job encoding and "skip if queued, running or kept" rule.
# KEYS: job key and result key of each job, then the queue; ARGV: expiry, job, score and id of
# each job. Returns one flag per job: 1 queued, 0 already queued, running or kept.
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


def chunks(event_ids: Sequence[str], size: int = MAX_JOB_EVENTS) -> list[list[str]]:
    """The ids in order, ``size`` at a time (the events of one job each)."""
    return [list(event_ids[i : i + size]) for i in range(0, len(event_ids), size)]


@dataclass(frozen=True)
class JobQueue:
    redis: ArqRedis
    prefix: str
    queue_name: str
    _enqueue_many: AsyncScript = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_enqueue_many", self.redis.register_script(_ENQUEUE_MANY))

    @property
    def events_job_prefix(self) -> str:
        """How the id of every event job starts (``<prefix>:evts:``)."""
        return f"{self.prefix}:evts:"

    def events_job_id(self) -> str:
        """A fresh event job id: ``<prefix>:evts:<uuid4 hex>``. Unique, so an enqueueing is never
        refused because an earlier job (queued, running, retrying) holds its id: whether an event
        still needs applying is decided by Postgres when a job runs."""
        return f"{self.events_job_prefix}{uuid.uuid4().hex}"

    async def enqueue_event(self, event_id: str, *, defer_until: datetime | None = None) -> bool:
        """Queue processing of one inbox event (a job of its own); raises on Redis errors."""
        return bool(await self.enqueue_events([event_id], defer_until=defer_until))

    async def enqueue_events(
        self, event_ids: Sequence[str], *, defer_until: datetime | None = None
    ) -> list[str]:
        """Queue processing of inbox events: one ``process_events`` job per ``MAX_JOB_EVENTS``
        ids, all in one atomic round trip; due at ``defer_until`` (now when None). Returns the
        ids of the jobs queued; raises on Redis errors so the caller can answer 503."""
        if not event_ids:
            return []
        now_ms = timestamp_ms()
        score = to_unix_ms(defer_until) if defer_until is not None else now_ms
        expires_ms = score - now_ms + self.redis.expires_extra_ms
        keys: list[str] = []
        args: list[object] = []
        job_ids: list[str] = []
        for chunk in chunks(event_ids):
            job_id = self.events_job_id()
            job_ids.append(job_id)
            keys += (job_key_prefix + job_id, result_key_prefix + job_id)
            job = serialize_job(
                PROCESS_EVENTS, (chunk,), {}, None, now_ms, serializer=self.redis.job_serializer
            )
            args += (expires_ms, job, score, job_id)
        keys.append(self.queue_name)
        flags = await self._enqueue_many(keys=keys, args=args)
        return [job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag]

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
