"""Scrape-time gauges, readiness checks and the Redis eviction check (served by ``worker.http.probes``).

Gauges that describe shared state (queue depth, inbox backlog, dead letters, blocks, pending plan
changes) are computed from Postgres/Redis when scraped, with queries served by partial indexes,
so every process that is scraped reports the same numbers (alerts use ``max``). Counters and
histograms are per process: the receiver+API process counts webhooks, workers count jobs.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from worker.infra import metrics
from worker.infra.logging import get_logger
from worker.services import Services
from worker.storage.migrate import pending

log = get_logger("observability")

_INBOX_STATUSES = ("received", "unmatched", "failed", "dead")
CHECK_TIMEOUT = 2.0


async def refresh_gauges(services: Services) -> None:
    now = services.clock()
    async with services.pool.acquire() as conn:
        counts = {
            r["status"]: r["n"]
            for r in await conn.fetch(
                "SELECT status, count(*) AS n FROM webhook_events "
                "WHERE status IN ('received', 'unmatched', 'failed') GROUP BY status"
            )
        }
        counts["dead"] = await conn.fetchval("SELECT count(*) FROM webhook_events WHERE status = 'dead'")
        oldest = await conn.fetchval(
            "SELECT min(received_at) FROM webhook_events WHERE status IN ('received', 'unmatched', 'failed')"
        )
        blocked = await conn.fetch(
            "SELECT coalesce(dunning_level, 'unknown') AS level, count(*) AS n FROM workspaces "
            "WHERE blocked GROUP BY 1"
        )
        plan_changes = await _plan_changes(conn, now)
    for status in _INBOX_STATUSES:
        metrics.INBOX_EVENTS.labels(status=status).set(counts.get(status, 0))
    metrics.DEAD_LETTERS.set(counts["dead"])
    metrics.OLDEST_UNPROCESSED.set(0 if oldest is None else max((now - oldest).total_seconds(), 0))
    metrics.BLOCKED_WORKSPACES.clear()
    for row in blocked:
        metrics.BLOCKED_WORKSPACES.labels(level=row["level"]).set(row["n"])
    for status in PLAN_CHANGE_STATUSES:
        metrics.PENDING_PLAN_CHANGES.labels(status=status).set(plan_changes.get(status, 0))
    metrics.QUEUE_DEPTH.set(await services.queue.depth())


# Active plan changes by status, plus `overdue`: active and due (fire_at) more than an hour ago.
PLAN_CHANGE_STATUSES = ("pending", "waiting_payment", "firing", "overdue")
OVERDUE_AFTER = timedelta(hours=1)


async def _plan_changes(conn: Any, now: datetime) -> dict[str, int]:
    """Reads 0 until the plan-changes table exists (it comes with its own migration)."""
    if not await conn.fetchval("SELECT to_regclass('plan_changes') IS NOT NULL"):
        return {}
    rows = await conn.fetch(
        "SELECT status, count(*) AS n, count(*) FILTER (WHERE fire_at < $1) AS overdue FROM plan_changes "
        "WHERE status IN ('pending', 'waiting_payment', 'firing') GROUP BY status",
        now - OVERDUE_AFTER,
    )
    counts = {r["status"]: r["n"] for r in rows}
    counts["overdue"] = sum(r["overdue"] for r in rows)
    return counts


async def readiness(services: Services) -> tuple[bool, dict[str, Any]]:
    """Postgres answers, Redis answers, and every migration shipped is applied."""
    checks: dict[str, Any] = {}

    async def postgres() -> None:
        async with services.pool.acquire() as conn:
            todo = await pending(conn)
        checks["migrations"] = (
            {"ok": True}
            if not todo
            else {"ok": False, "pending": [f"{m.version:04d}_{m.name}" for m in todo]}
        )

    async def redis() -> None:
        await services.redis.ping()

    for name, probe in (("postgres", postgres), ("redis", redis)):
        try:
            await asyncio.wait_for(probe(), CHECK_TIMEOUT)
            checks[name] = {"ok": True}
        except Exception as exc:
            checks[name] = {"ok": False, "error": type(exc).__name__}
    checks.setdefault("migrations", {"ok": False, "error": "postgres unavailable"})
    return all(c["ok"] for c in checks.values()), checks


async def warn_unless_noeviction(services: Services) -> str | None:
    """arq keeps jobs in keys with TTLs: under any eviction policy Redis may drop queued jobs."""
    try:
        policy = (await services.redis.config_get("maxmemory-policy")).get("maxmemory-policy")
    except Exception as exc:  # managed Redis often forbids CONFIG
        log.warning("redis_policy_unknown", error=type(exc).__name__)
        return None
    if policy != "noeviction":
        log.warning(
            "redis_eviction_policy",
            policy=policy,
            error="maxmemory-policy is not noeviction: Redis may evict queued jobs (the sweep recovers them late)",
        )
    return policy
