"""What the receiver left behind: inbox rows and queued jobs of given events."""

from __future__ import annotations

from collections import Counter

import asyncpg
from arq.jobs import deserialize_job

from worker.queue.enqueue import PROCESS_EVENTS
from worker.services import Services


async def inbox_rows(pool: asyncpg.Pool, ids: list[str]) -> dict[str, str]:
    """The inbox status of each of these events that has a row."""
    rows = await pool.fetch(
        "SELECT event_id, status FROM webhook_events WHERE event_id = ANY($1::text[])", ids
    )
    return {r["event_id"]: r["status"] for r in rows}


async def queued_events(services: Services, ids: list[str]) -> Counter[str]:
    """How many queued ``process_events`` jobs carry each of these events (absent: none)."""
    wanted = set(ids)
    return Counter(e for job in (await queued_event_jobs(services)).values() for e in job if e in wanted)


async def queued_event_jobs(services: Services, ids: list[str] | None = None) -> dict[str, list[str]]:
    """The queued event jobs (of those carrying any of ``ids``, when given): job id → event ids."""
    prefix = services.queue.events_job_prefix
    jobs: dict[str, list[str]] = {}
    for member in await services.redis.zrange(services.settings.queue_name, 0, -1):
        job_id = member.decode()
        if not job_id.startswith(prefix):
            continue
        raw = await services.redis.get(f"arq:job:{job_id}")
        assert raw is not None, f"queued job {job_id} has no arq:job key"
        job = deserialize_job(raw)
        assert job.function == PROCESS_EVENTS and len(job.args) == 1 and not job.kwargs, job
        if ids is None or set(job.args[0]) & set(ids):
            jobs[job_id] = list(job.args[0])
    return jobs
