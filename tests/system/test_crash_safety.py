"""Crash safety: SIGKILL a worker process mid-stream; a new worker finishes the job.

Afterwards every event carries exactly one processed mark, no audit entry is duplicated, versions
have no gaps, and each workspace's state equals the pure reducer's in-order fold (the oracle).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from tests.support import stripe_factory as sf
from tests.support.helpers import RunningService, kill_mid_job, running_service
from tests.support.invariants import assert_applied_exactly_once
from tests.support.paths import ROOT
from worker.config import Settings

WORKSPACES = 40


def _histories() -> dict[str, list[dict]]:
    out = {}
    for n in range(WORKSPACES):
        u = uuid.uuid4().hex[:10]
        ids = {"workspace_id": f"ws_crash_{n}_{u}", "customer": f"cus_crash{u}", "sub_id": f"sub_crash{u}"}
        events = sf.history_lifecycle(**ids, id_prefix=f"evt_crl{u}") + sf.history_payment_failure(
            **ids, invoice_id=f"in_crash{u}", id_prefix=f"evt_crp{u}", include_subscription=False, failures=2
        )
        out[ids["workspace_id"]] = events
    return out


def _spawn_worker(settings: Settings) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "BW_REDIS_PREFIX": settings.redis_prefix,
        "BW_JOB_TIMEOUT_SECONDS": "3",  # arq re-runs a killed job once its in-progress key expires (+10 s)
        "BW_MAX_JOBS": "50",
        "BW_LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen([sys.executable, "-m", "worker.cli.main", "worker"], env=env, cwd=ROOT)


async def test_worker_killed_mid_stream_applies_every_event_exactly_once(settings: Settings):
    histories = _histories()
    all_events = [e for events in histories.values() for e in events]
    ids = [e["id"] for e in all_events]
    async with running_service(settings, worker=False) as svc:
        svc: RunningService
        for event in all_events:
            assert (await svc.post_event(event))[0] == 200

        async def processed() -> int:
            return await svc.services.pool.fetchval(
                "SELECT count(*) FROM webhook_events WHERE event_id = ANY($1::text[]) AND status = 'processed'",
                ids,
            )

        async def in_progress() -> list[bytes]:
            pattern = f"arq:in-progress:{settings.redis_prefix}:evts:*"
            return [k async for k in svc.services.redis.scan_iter(pattern)]

        at_kill, _ = await kill_mid_job([_spawn_worker(settings)], processed, len(ids) // 4, in_progress)
        assert at_kill < len(ids), "the kill must land before the stream is finished"

        second = _spawn_worker(settings)
        try:
            await svc.wait_processed(ids, timeout=120)
        finally:
            second.terminate()
            second.wait(timeout=20)

        await assert_applied_exactly_once(svc.services.pool, histories)
