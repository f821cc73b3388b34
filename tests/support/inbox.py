"""What the receiver left behind: inbox rows and queued jobs of given events."""

from __future__ import annotations

import asyncpg

from worker.services import Services


async def inbox_rows(pool: asyncpg.Pool, ids: list[str]) -> dict[str, str]:
    """The inbox status of each of these events that has a row."""
    rows = await pool.fetch(
        "SELECT event_id, status FROM webhook_events WHERE event_id = ANY($1::text[])", ids
    )
    return {r["event_id"]: r["status"] for r in rows}


async def queued_jobs(services: Services, ids: list[str]) -> list[str]:
    """The queued job ids of these events (a sorted set cannot hold one twice)."""
    queued = []
    for event_id in ids:
        job_id = services.queue.event_job_id(event_id)
        if await services.redis.zscore(services.settings.queue_name, job_id) is not None:
            assert await services.redis.exists(f"arq:job:{job_id}")
            queued.append(job_id)
    return queued
