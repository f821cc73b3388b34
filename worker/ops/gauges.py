"""The scrape-time gauges, one refresh function per group, each reading Postgres or Redis once.

Gauges that describe shared state (queue depth, inbox backlog, dead letters, blocks, pending plan
changes) are computed from Postgres/Redis when scraped, with queries served by partial indexes,
so every process that is scraped reports the same numbers (alerts use ``max``). Each group is
refreshed on its own (``worker.ops.health.Health``): a Redis outage leaves the Postgres gauges
fresh, and the other way round.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from worker.infra import metrics
from worker.services import Services

_INBOX_STATUSES = ("received", "unmatched", "failed", "dead")
# Active plan changes by status, plus `overdue`: active and due (fire_at) more than an hour ago.
PLAN_CHANGE_STATUSES = ("pending", "waiting_payment", "firing", "overdue")
OVERDUE_AFTER = timedelta(hours=1)


async def refresh_inbox(services: Services) -> None:
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
    for status in _INBOX_STATUSES:
        metrics.INBOX_EVENTS.labels(status=status).set(counts.get(status, 0))
    metrics.DEAD_LETTERS.set(counts["dead"])
    metrics.OLDEST_UNPROCESSED.set(0 if oldest is None else max((now - oldest).total_seconds(), 0))


async def refresh_blocked_workspaces(services: Services) -> None:
    blocked = await services.pool.fetch(
        "SELECT coalesce(dunning_level, 'unknown') AS level, count(*) AS n FROM workspaces "
        "WHERE blocked GROUP BY 1"
    )
    metrics.BLOCKED_WORKSPACES.clear()
    for row in blocked:
        metrics.BLOCKED_WORKSPACES.labels(level=row["level"]).set(row["n"])


async def refresh_plan_changes(services: Services) -> None:
    async with services.pool.acquire() as conn:
        counts = await _plan_changes(conn, services.clock())
    for status in PLAN_CHANGE_STATUSES:
        metrics.PENDING_PLAN_CHANGES.labels(status=status).set(counts.get(status, 0))


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


async def refresh_queue(services: Services) -> None:
    depth, due = await services.queue.depths()
    metrics.QUEUE_DEPTH.set(depth)
    metrics.QUEUE_DUE.set(due)


# The `gauge` label of billing_gauge_refresh_failures_total → its refresh.
GAUGE_GROUPS: dict[str, Callable[[Services], Awaitable[None]]] = {
    "inbox": refresh_inbox,
    "blocked_workspaces": refresh_blocked_workspaces,
    "plan_changes": refresh_plan_changes,
    "queue": refresh_queue,
}
