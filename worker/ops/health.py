"""Readiness per role and bounded scrape-time gauges (served by ``worker.http.probes``).

Kubernetes reads a probe that does not answer within its timeout as a failure, so nothing here
waits on a dependency for longer than a fixed budget: each check and each gauge refresh runs as
its own background task, at most one at a time per name (a frozen PostgreSQL gets one stuck
query, not one per probe), and a caller that runs out of budget answers with what it has while
the task goes on. /livez does no I/O at all and lives in ``worker.http.probes``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from worker.infra import metrics
from worker.infra.logging import get_logger
from worker.ops.gauges import GAUGE_GROUPS
from worker.services import Services
from worker.storage.migrate import pending

log = get_logger("observability")

# What each role cannot work without: the internal API's reads need only PostgreSQL; the
# receiver stores in PostgreSQL and queues in Redis; a worker reads its jobs from Redis.
ROLE_NEEDS: dict[str, frozenset[str]] = {
    "api": frozenset({"postgres"}),
    "receiver": frozenset({"postgres", "redis"}),
    "worker": frozenset({"postgres", "redis"}),
}
READY_BUDGET = 0.8  # /readyz answers within this (Kubernetes' default probe timeout is 1 s)
GAUGE_BUDGET = 0.5  # /metrics waits this long for fresh gauges, then serves the last values
CHECK_TIMEOUT = 5.0  # a pool checkout or query of one check; the task itself is never awaited longer
ABANDON_AFTER = 30.0  # a task still running after this is cancelled and a new one started


def dependencies(roles: Iterable[str]) -> tuple[str, ...]:
    """The union of what the process's roles need, in a stable order."""
    roles = tuple(roles)
    unknown = sorted(set(roles) - set(ROLE_NEEDS))
    if unknown:
        raise ValueError(f"unknown roles {unknown}; the roles are {', '.join(sorted(ROLE_NEEDS))}")
    needed: set[str] = set()
    for role in roles:
        needed |= ROLE_NEEDS[role]
    return tuple(sorted(needed))


@dataclass
class _Flight:
    task: asyncio.Task[Any]
    started: float
    counted: bool = False  # a failure of this run was already counted


class Health:
    """One per process: the roles it serves and the running checks and refreshes."""

    def __init__(
        self,
        services: Services,
        roles: Collection[str],
        worker_processes: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.needs = dependencies(roles)
        self.services = services
        self.roles = tuple(sorted(roles))
        # The state of the worker processes ``billing-worker run`` supervises (its ``ok``: one runs).
        self.worker_processes = worker_processes
        self._flights: dict[str, _Flight] = {}
        for gauge in GAUGE_GROUPS:  # exposed at 0 from the start, so increase() sees the first one
            metrics.GAUGE_REFRESH_FAILURES.labels(gauge=gauge)

    def _flight(self, name: str, start: Callable[[], Awaitable[Any]]) -> _Flight:
        flight = self._flights.get(name)
        now = time.monotonic()
        if flight is not None and not flight.task.done() and now - flight.started > ABANDON_AFTER:
            flight.task.cancel()  # a dead TCP peer must not make the check time out forever
            log.warning("health_check_abandoned", check=name, running_s=round(now - flight.started, 1))
            flight = None
        if flight is None or flight.task.done():
            flight = _Flight(asyncio.ensure_future(start()), now)
            flight.task.add_done_callback(_retrieve)
            self._flights[name] = flight
        return flight

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Each dependency of the roles answers, (PostgreSQL) every shipped migration is applied and,
        in a main process with worker processes, at least one of them runs."""
        probes = {"postgres": self._postgres, "redis": self._redis}
        flights = {name: self._flight(f"ready:{name}", probes[name]) for name in self.needs}
        await asyncio.wait([f.task for f in flights.values()], timeout=READY_BUDGET)
        checks: dict[str, Any] = {}
        for name, flight in flights.items():
            checks.update(_verdict(name, flight.task))
        if "postgres" in checks and "migrations" not in checks:
            checks["migrations"] = {"ok": False, "error": "postgres unavailable"}
        if self.worker_processes is not None:
            checks["worker_processes"] = self.worker_processes()
        return all(c["ok"] for c in checks.values()), checks

    async def _postgres(self) -> dict[str, Any]:
        async with asyncio.timeout(CHECK_TIMEOUT):
            async with self.services.pool.acquire() as conn:
                todo = await pending(conn)
        if todo:
            return {"ok": False, "pending": [f"{m.version:04d}_{m.name}" for m in todo]}
        return {"ok": True}

    async def _redis(self) -> None:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await self.services.redis.ping()

    async def refresh_gauges(self) -> None:
        """Start (or join) one refresh per gauge group and wait at most GAUGE_BUDGET for them;
        a refresh that fails or outlives the budget is counted once in
        billing_gauge_refresh_failures_total{gauge} and its gauges keep their last values."""
        flights = {
            name: self._flight(f"gauge:{name}", lambda refresh=refresh: refresh(self.services))
            for name, refresh in GAUGE_GROUPS.items()
        }
        await asyncio.wait([f.task for f in flights.values()], timeout=GAUGE_BUDGET)
        for name, flight in flights.items():
            if flight.counted:
                continue
            if not flight.task.done():
                error = "timeout"
            elif flight.task.cancelled():
                error = "cancelled"
            elif flight.task.exception() is not None:
                error = type(flight.task.exception()).__name__
            else:
                continue
            flight.counted = True
            metrics.GAUGE_REFRESH_FAILURES.labels(gauge=name).inc()
            log.warning("gauge_refresh_failed", gauge=name, error=error)

    async def close(self) -> None:
        """Cancel what still runs (a frozen dependency's checks) and give it a moment to unwind."""
        tasks = [f.task for f in self._flights.values() if not f.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """A run nobody waits for any more may still fail: its verdict was already given or counted."""
    if not task.cancelled():
        task.exception()


def _verdict(name: str, task: asyncio.Task[Any]) -> dict[str, Any]:
    """The checks a finished, failed or still running task gives."""
    if not task.done():
        verdict: dict[str, Any] = {"ok": False, "error": "timeout"}
    elif task.cancelled():
        verdict = {"ok": False, "error": "cancelled"}
    elif task.exception() is not None:
        verdict = {"ok": False, "error": type(task.exception()).__name__}
    else:
        if name == "postgres":
            return {"postgres": {"ok": True}, "migrations": task.result()}
        verdict = {"ok": True}
    return {name: verdict}


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
