"""Two worker processes on one queue, jobs of several events each: every event applied once.

Many events of a few workspaces are posted through the receiver (30 % duplicates, shuffled) while
two ``worker.cli.main worker`` processes drain the queue. A receiver flush is one job of up to
100 ids, and a duplicate delivery of an event still ``received`` is queued again, so jobs of the
two workers hold events of the same workspaces and sometimes the same events. Afterwards: each
event applied exactly once (one processed mark, one audit entry, one ``job_finished`` that is not
a duplicate, across both processes' logs), each workspace's versions one unbroken chain 1..n
whose every audit entry starts where the previous one ended (no two batches interleaved), and
each workspace equal to the pure reducer's in-order fold.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support import stripe_factory as sf
from tests.support.helpers import RunningService, running_service, wait_for
from tests.support.invariants import assert_applied_exactly_once
from tests.support.paths import ROOT
from worker.config import Settings

WORKSPACES = 8


def _histories() -> dict[str, list[dict[str, Any]]]:
    out = {}
    for n in range(WORKSPACES):
        u = uuid.uuid4().hex[:10]
        ids = {"workspace_id": f"ws_two_{n}_{u}", "customer": f"cus_two{u}", "sub_id": f"sub_two{u}"}
        events = sf.history_lifecycle(**ids, id_prefix=f"evt_twl{u}")
        for k in range(6):  # renewals that fail twice, then are paid: many events a workspace
            events += sf.history_payment_failure(
                **ids,
                invoice_id=f"in_two{u}{k}",
                id_prefix=f"evt_twp{u}{k}",
                include_subscription=False,
                failures=2,
                start=sf.T0 + (k + 1) * 14 * sf.DAY,
            )
        out[ids["workspace_id"]] = events
    return out


def _spawn_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "BW_REDIS_PREFIX": settings.redis_prefix,
        "BW_MAX_JOBS": "20",
        "BW_WORKER_METRICS_PORT": "0",
        "BW_LOG_LEVEL": "info",  # one job_finished line per event
        "PYTHONPATH": str(ROOT),
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "worker.cli.main", "worker"], env=env, cwd=ROOT, stdout=out
        )


def _finished(log: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in log.read_text().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if line.get("msg") == "job_finished" and line.get("job") == "process_events":
            lines.append(line)
    return lines


async def _started(log: Path) -> bool:
    return any(json.loads(line).get("msg") == "worker_started" for line in _json_lines(log))


def _json_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("{")]


async def _post_all(svc: RunningService, deliveries: list[dict[str, Any]]) -> None:
    sem = asyncio.Semaphore(20)

    async def one(event: dict[str, Any]) -> None:
        async with sem:
            status, body = await svc.post_event(event)
            assert status == 200, body

    await asyncio.gather(*(one(e) for e in deliveries))


async def test_two_workers_apply_every_event_once_and_never_interleave_a_workspace(
    settings: Settings, tmp_path: Path
):
    histories = _histories()
    unique = [e for events in histories.values() for e in events]
    ids = [e["id"] for e in unique]
    rng = random.Random(19)
    deliveries = unique + rng.sample(unique, len(unique) * 3 // 10)
    rng.shuffle(deliveries)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    async with running_service(settings, worker=False) as svc:
        workers = [_spawn_worker(settings, log) for log in logs]
        try:
            for log in logs:  # both polling before the first webhook, so both get jobs
                await wait_for(lambda log=log: _started(log), bool, timeout=60, what=f"{log.name} started")
            await _post_all(svc, deliveries)
            await svc.wait_processed(ids, timeout=120)
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.wait(timeout=20)
        pool = svc.services.pool
        await assert_applied_exactly_once(pool, histories)

        for workspace_id, events in histories.items():
            chain = await pool.fetch(
                "SELECT version, cause_kind, cause_id, before, after FROM audit_log WHERE workspace_id = $1 "
                "ORDER BY version",
                workspace_id,
            )
            versions = [r["version"] for r in chain]
            assert versions == list(range(1, len(chain) + 1)), f"{workspace_id}: versions {versions}"
            for earlier, later in itertools.pairwise(chain):
                assert later["before"] == earlier["after"], (
                    f"{workspace_id} v{later['version']} did not start from v{earlier['version']}: "
                    "two batches interleaved"
                )
            causes = Counter(r["cause_id"] for r in chain if r["cause_kind"] == "event")
            assert set(causes.values()) <= {1} and set(causes) <= {e["id"] for e in events}
            applied = await pool.fetchval(
                "SELECT count(*) FROM webhook_events WHERE event_id = ANY($1::text[]) AND outcome = 'applied'",
                [e["id"] for e in events],
            )
            assert applied == sum(causes.values()), (
                f"{workspace_id}: {applied} applied, {causes.total()} audited"
            )

    finished = [_finished(log) for log in logs]
    assert all(finished), "both worker processes must have processed events"
    final = Counter(
        line["event_id"]
        for lines in finished
        for line in lines
        if line["outcome"] in {"applied", "stale", "ignored"}
    )
    assert final == Counter(ids), "an event finished twice, or never, across the two workers"
    assert max(line["job_size"] for lines in finished for line in lines) > 1, "jobs carried one event each"
