"""Plan-change firing across real worker processes: two racing on one due change, and one killed
(SIGKILL) after Stripe applied its call but before it could commit."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from tests.support import stripe_factory as sf
from tests.support.helpers import wait_for
from tests.support.paths import ROOT
from tests.support.plan_change_support import ANNUAL_END, World, world_for
from worker.config import Settings
from worker.jobs.plan_changes import sweep_plan_changes
from worker.plan_changes import store as plan_change_store


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[World]:
    async with world_for(settings) as w:
        yield w


async def _spawn(world: World, change_id: str) -> asyncio.subprocess.Process:
    s = world.svc.services.settings
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": s.database_url or "",
        "REDIS_URL": s.redis_url or "",
        "BW_REDIS_PREFIX": s.redis_prefix,
        "STRIPE_API_KEY": s.stripe_api_key or "",
        "STRIPE_API_BASE": s.stripe_api_base or "",
        "BW_LOG_LEVEL": "warning",
        "BW_DB_POOL_SIZE": "2",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.fire_plan_change_process",
        change_id,
        world.clock.now.isoformat(),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _due_change(world: World) -> str:
    status, body = await world.request(plan="plus", interval="monthly")
    assert status == 201, body
    world.clock.now = sf.at(ANNUAL_END)
    return body["plan_change"]["change_id"]


async def test_two_worker_processes_racing_make_one_stripe_call(world: World):
    change_id = await _due_change(world)
    world.server.delay_seconds = 0.5  # the winner's call is still in flight when the loser looks
    procs = [await _spawn(world, change_id), await _spawn(world, change_id)]
    try:
        outputs = [(await asyncio.wait_for(p.communicate(), 60))[0].decode().split() for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    outcomes = [o[-1] for o in outputs]
    # (The in-process worker's cron sweep may join the race: still one call, at most one winner.)
    assert set(outcomes) <= {"applied", "claimed", "not_active"} and outcomes.count("applied") <= 1, outcomes
    await world.applied(change_id)
    assert len(world.server.calls("POST")) == 1


async def test_a_worker_killed_after_the_stripe_call_retries_with_the_same_key(world: World):
    change_id = await _due_change(world)
    world.server.delay_seconds = 2  # Stripe has applied the update; its answer is still on the way
    proc = await _spawn(world, change_id)
    try:
        await wait_for(lambda: _applied_posts(world), lambda n: n == 1, timeout=30, what="Stripe call")
        proc.kill()  # SIGKILL: nothing after the call runs, the commit never happens
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    world.server.delay_seconds = 0
    row = await world.row(change_id)
    assert row["status"] == "firing" and row["claimed_at"] is not None

    world.clock.now += plan_change_store.claim_timeout(world.svc.services.settings) + timedelta(seconds=1)
    await sweep_plan_changes(world.ctx)
    await world.applied(change_id)
    first, retry = world.server.calls("POST")
    assert first.idempotency_key == retry.idempotency_key == f"plan-change:{change_id}"
    assert first.flat == retry.flat and retry.replayed
    assert len(world.server.applied("POST")) == 1  # one effective update


async def _applied_posts(world: World) -> int:
    return len(world.server.applied("POST"))
