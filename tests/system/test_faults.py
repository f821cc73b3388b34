"""Fault tests on private Postgres and Redis servers, with workers as real processes.

Redis stopped while webhooks arrive, Redis flushed after acknowledgement, Postgres restarted
mid-stream, and a burst with duplicates and shuffled order while workers are SIGKILLed twice.
Afterwards: every event processed exactly once, no duplicate audit transition, and each
workspace equal to the pure reducer's in-order fold (the oracle of test_crash_safety).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.support import stripe_factory as sf
from tests.support.helpers import RunningService, kill_mid_job, make_settings, running_service
from tests.support.invariants import assert_applied_exactly_once
from tests.support.paths import ROOT
from tests.support.services import free_port
from worker.config import Settings
from worker.storage.migrate import migrate


@dataclass
class Stack:
    settings: Settings
    postgres: Any
    redis: Any
    workers: list[subprocess.Popen[bytes]]

    def spawn_worker(self, **env: str) -> subprocess.Popen[bytes]:
        proc = _spawn(self.settings, env)
        self.workers.append(proc)
        return proc


def _spawn(settings: Settings, extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "BW_REDIS_PREFIX": settings.redis_prefix,
        # arq re-runs a killed job once its in-progress key expires (job timeout + 10 s).
        "BW_JOB_TIMEOUT_SECONDS": "3",
        "BW_MAX_JOBS": "50",
        "BW_SWEEP_INTERVAL_SECONDS": "1",
        "BW_SWEEP_RECEIVED_AFTER_SECONDS": "2",
        "BW_WORKER_METRICS_PORT": "0",
        "BW_LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
        **extra,
    }
    return subprocess.Popen([sys.executable, "-m", "worker.cli.main", "worker"], env=env, cwd=ROOT)


@pytest.fixture
async def stack(embedded_postgres_factory, embedded_redis_factory) -> AsyncIterator[Stack]:
    postgres = embedded_postgres_factory()
    redis = embedded_redis_factory()
    await migrate(postgres.url())
    settings = make_settings(
        postgres.url(),
        redis.url(),
        "bwfault",
        BW_SWEEP_RECEIVED_AFTER_SECONDS="2",
        BW_SWEEP_INTERVAL_SECONDS="1",
        BW_DB_POOL_SIZE="20",
    )
    stack = Stack(settings, postgres, redis, [])
    try:
        yield stack
    finally:
        for proc in stack.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in stack.workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _histories(count: int, per_workspace: int | None = None) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for n in range(count):
        u = uuid.uuid4().hex[:10]
        ids = {"workspace_id": f"ws_f{n}_{u}", "customer": f"cus_f{u}", "sub_id": f"sub_f{u}"}
        events = sf.history_lifecycle(**ids, id_prefix=f"evt_fl{u}") + sf.history_payment_failure(
            **ids, invoice_id=f"in_f{u}", id_prefix=f"evt_fp{u}", include_subscription=False, failures=1
        )
        out[ids["workspace_id"]] = events[:per_workspace] if per_workspace else events
    return out


async def _post_until_accepted(svc: RunningService, event: dict[str, Any], deadline: float = 60) -> int:
    """Deliver like Stripe: retry on 5xx until a 200. Returns how many 503s it took."""
    refusals = 0
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline
    while True:
        try:
            status, _ = await svc.post_event(event)
        except aiohttp.ClientError:
            status = 599
        if status == 200:
            return refusals
        assert status >= 500, status
        refusals += 1
        if loop.time() > until:
            raise AssertionError(f"{event['id']} never accepted")
        await asyncio.sleep(0.2)  # Stripe's retry interval, compressed


async def _assert_exactly_once(svc: RunningService, histories: dict[str, list[dict[str, Any]]]) -> None:
    await assert_applied_exactly_once(svc.services.pool, histories)


def _all_ids(histories: dict[str, list[dict[str, Any]]]) -> list[str]:
    return [e["id"] for events in histories.values() for e in events]


async def test_redis_stopped_while_webhooks_arrive(stack: Stack):
    """503 while Redis is down (the event is kept in Postgres); all processed once it is back."""
    histories = _histories(10)
    events = [e for h in histories.values() for e in h]
    third = len(events) // 3
    async with running_service(stack.settings, worker=False) as svc:
        stack.spawn_worker()
        for event in events[:third]:
            assert (await svc.post_event(event))[0] == 200
        stack.redis.stop()
        refused = []
        for event in events[third : 2 * third]:
            status, body = await svc.post_event(event)
            assert (status, body["error"]["code"]) == (503, "queue_unavailable")
            refused.append(event["id"])
        kept = await svc.services.pool.fetchval(
            "SELECT count(*) FROM webhook_events WHERE event_id = ANY($1::text[]) AND status = 'received'",
            refused,
        )
        assert kept == len(refused)  # stored before the 503: nothing acknowledged, nothing lost
        stack.redis.start()
        for event in events[third:]:  # Stripe's retries, then the rest of the stream
            await _post_until_accepted(svc, event)
        await svc.wait_processed(_all_ids(histories), timeout=60)
        await _assert_exactly_once(svc, histories)


async def test_postgres_down_the_receiver_answers_503_and_acknowledges_nothing(stack: Stack):
    """Stripe must retry: a webhook that cannot be stored is never answered 2xx."""
    histories = _histories(1, per_workspace=2)
    first, second = next(iter(histories.values()))
    async with running_service(stack.settings, worker=False) as svc:
        stack.postgres.stop()
        status, body = await svc.post_event(first)
        assert (status, body["error"]["code"]) == (503, "database_unavailable")
        stack.postgres.start()
        await _post_until_accepted(svc, first)  # Stripe's retry, once the pool reconnects
        assert (await svc.post_event(second))[0] == 200
        rows = await svc.services.pool.fetch(
            "SELECT event_id FROM webhook_events WHERE event_id = ANY($1::text[])",
            [first["id"], second["id"]],
        )
        assert len(rows) == 2


async def test_redis_flushed_after_acknowledgement_the_sweep_recovers(stack: Stack):
    histories = _histories(10)
    metrics_port = free_port()
    async with running_service(stack.settings, worker=False) as svc:
        for event in (e for h in histories.values() for e in h):
            assert (await svc.post_event(event))[0] == 200
        assert await svc.services.queue.depth() > 0
        await svc.services.redis.flushall()  # every queued job is gone; the inbox still has them
        assert await svc.services.queue.depth() == 0
        stack.spawn_worker(BW_WORKER_METRICS_PORT=str(metrics_port), BW_INTERNAL_HOST="127.0.0.1")
        await svc.wait_processed(_all_ids(histories), timeout=60)
        await _assert_exactly_once(svc, histories)
        async with svc.http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
            text = await resp.text()
        # The worker's own port exposes its job histogram.
        assert "billing_job_duration_seconds_count" in text
        assert 'outcome="applied"' in text


async def test_postgres_restarted_mid_stream_workers_recover(stack: Stack):
    histories = _histories(16)
    events = [e for h in histories.values() for e in h]
    async with running_service(stack.settings, worker=False) as svc:
        stack.spawn_worker()
        stack.spawn_worker()
        half = len(events) // 2
        for event in events[:half]:
            assert (await svc.post_event(event))[0] == 200
        pending = await svc.services.pool.fetchval(
            "SELECT count(*) FROM webhook_events WHERE status <> 'processed'"
        )
        restart = asyncio.create_task(asyncio.to_thread(stack.postgres.restart))
        refusals = 0
        for event in events[half:]:
            refusals += await _post_until_accepted(svc, event)
        await restart
        # The restart hit a live stream: work was queued, and/or webhooks were refused meanwhile.
        assert pending > 0 or refusals > 0
        await svc.wait_processed(_all_ids(histories), timeout=90)
        await _assert_exactly_once(svc, histories)


async def test_burst_with_duplicates_shuffled_and_workers_killed_twice(stack: Stack):
    histories = _histories(200, per_workspace=7)
    unique = [e for h in histories.values() for e in h]
    assert len(unique) == 1400
    rng = random.Random(5)
    deliveries = unique + rng.sample(unique, 600)  # 2,000 deliveries, 30 % duplicates
    rng.shuffle(deliveries)
    ids = _all_ids(histories)
    async with running_service(stack.settings, worker=False) as svc:

        async def processed() -> int:
            return await svc.services.pool.fetchval(
                "SELECT count(*) FROM webhook_events WHERE event_id = ANY($1::text[]) AND status = 'processed'",
                ids,
            )

        interrupted: set[bytes] = set()  # in-progress keys a kill left behind (until they expire)

        async def in_progress() -> list[bytes]:
            keys = svc.services.redis.scan_iter("arq:in-progress:bwfault:evts:*")
            return [k async for k in keys if k not in interrupted]

        async def send_all() -> None:
            sem = asyncio.Semaphore(20)

            async def one(event: dict[str, Any]) -> None:
                async with sem:
                    await _post_until_accepted(svc, event)

            await asyncio.gather(*(one(e) for e in deliveries))

        sender = asyncio.create_task(send_all())
        stack.spawn_worker()
        stack.spawn_worker()
        for fraction in (0.2, 0.5):
            at_kill, running = await kill_mid_job(
                stack.workers, processed, int(len(ids) * fraction), in_progress
            )
            stack.workers.clear()
            interrupted.update(running)
            assert at_kill < len(ids), "the kill must land before the stream is finished"
            stack.spawn_worker()
            stack.spawn_worker()
        await sender
        await svc.wait_processed(ids, timeout=120)
        await _assert_exactly_once(svc, histories)
