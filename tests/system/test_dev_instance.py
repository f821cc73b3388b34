"""A user's first day: ``billing-worker run`` on a data folder with no URLs set (embedded servers),
the CLI beside it with no URLs either, and a second instance on the same folder refused."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.support import stripe_factory as sf
from tests.support.dev_instance import DevInstance, cli, dev_env, spawn_run, wait_ready
from tests.support.helpers import TOKEN, post_signed, wait_for
from tests.support.money_helpers import ids as fresh_ids
from tests.support.scenarios import DAY, orphan_invoice
from tests.support.stripe_server import StripeServer
from worker.dev.processes import pid_alive

FAST = {
    "BW_UNMATCHED_RETRY_SECONDS": "1,1",
    "BW_SWEEP_INTERVAL_SECONDS": "1",
    "BW_SWEEP_RECEIVED_AFTER_SECONDS": "1",
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def instance(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevInstance]:
    root = tmp_path_factory.mktemp("dev")
    first = spawn_run(root / "data", root / "first.log", **FAST)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(first, http)
        yield first
    finally:
        first.stop()


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])


async def _status(http: aiohttp.ClientSession, instance: DevInstance, event_id: str) -> str | None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(f"{instance.api_url}/v1/events/{event_id}", headers=headers) as resp:
        return (await resp.json())["status"] if resp.status == 200 else None


async def test_the_cli_uses_the_servers_of_the_running_instance(
    instance: DevInstance, stripe_server: StripeServer, tmp_path: Path
) -> None:
    env = dev_env(instance.data_dir)
    ids, now = fresh_ids("dev"), int(time.time())
    events = [
        e for e in sf.history_lifecycle(**ids, start=now - 5 * DAY, trial_days=3) if e["created"] <= now
    ]
    orphan, _ = orphan_invoice(fresh_ids("devorphan"))
    async with aiohttp.ClientSession() as http:
        await instance.deliver(http, events[0])
        assert (await post_signed(http, instance.receiver_url, orphan))[0] == 200
        await wait_for(lambda: _status(http, instance, orphan["id"]), lambda s: s == "dead", what="dead")

    shown = await cli(env, "show", ids["workspace_id"])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["workspace_id"] == ids["workspace_id"]
    table = await cli(env, "show", ids["workspace_id"], "--format", "table")
    assert table.returncode == 0, table.stderr
    assert re.search(rf"^workspace_id +{ids['workspace_id']}$", table.stdout, re.MULTILINE), table.stdout
    event = await cli(env, "event", events[0]["id"])
    assert event.returncode == 0, event.stderr
    assert json.loads(event.stdout)["status"] == "processed"

    dead = await cli(env, "dead-letters")
    assert dead.returncode == 0, dead.stderr
    assert orphan["id"] in [row["event_id"] for row in json.loads(dead.stdout)]
    dead_table = await cli(env, "dead-letters", "--format", "table")
    assert dead_table.stdout.startswith("event_id") and orphan["id"] in dead_table.stdout
    retried = await cli(env, "retry", orphan["id"])
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["previous_status"] == "dead"  # stdout is the JSON alone

    stripe_server.events = list(events)
    stripe = {"STRIPE_API_KEY": stripe_server.api_key, "STRIPE_API_BASE": stripe_server.url}
    run = await cli({**env, **stripe}, "backfill", "--since", str(now - 6 * DAY))
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert (result["status"], result["seen"], result["inserted"]) == ("done", len(events), len(events) - 1)
    first_line, *rest = run.stderr.splitlines()
    assert first_line.startswith(f"backfill run {result['run_id']} started")
    progress = [json.loads(line) for line in rest if '"backfill_pages_read"' in line]
    assert progress, run.stderr  # not a terminal: log lines on stderr, the last when it is done
    last = progress[-1]
    assert (last["fetched"], last["inserted"], last["skipped"]) == (len(events), len(events) - 1, 1)
    assert (last["cursor"], last["done"]) == (result["cursor"], True)

    # No instance on a folder: one line that says how to start one.
    alone = await cli(dev_env(tmp_path / "nothing-here"), "event", events[0]["id"])
    assert alone.returncode == 1
    assert len(alone.stderr.splitlines()) == 1 and "./scripts/run" in alone.stderr


async def test_a_second_instance_on_the_data_folder_refuses_and_the_first_keeps_serving(
    instance: DevInstance, tmp_path: Path
) -> None:
    published = (instance.data_dir / "running.json").read_text()
    postmaster = _postmaster_pid(instance.data_dir)
    second = spawn_run(instance.data_dir, tmp_path / "second.log")
    assert await asyncio.to_thread(second.proc.wait, 60) != 0
    assert second.output().strip().splitlines() == [
        f"billing-worker: data folder {instance.data_dir} is in use by billing-worker pid "
        f"{instance.proc.pid}; stop that one first, or set BW_DATA_DIR to another folder"
    ]
    assert (instance.data_dir / "running.json").read_text() == published
    assert _postmaster_pid(instance.data_dir) == postmaster and pid_alive(postmaster)
    ids = fresh_ids("devsecond")
    async with aiohttp.ClientSession() as http:
        assert await instance.ready(http)
        await instance.deliver(http, sf.history_lifecycle(**ids, start=int(time.time()) - DAY)[0])

        # An owner killed outright leaves its servers behind: the next start still takes them over.
        os.kill(instance.proc.pid, signal.SIGKILL)
        instance.proc.wait(30)
        assert pid_alive(postmaster)
        gone = await cli(dev_env(instance.data_dir), "show", ids["workspace_id"])
        assert gone.returncode == 1 and "no billing-worker is running" in gone.stderr
        third = spawn_run(instance.data_dir, tmp_path / "third.log")
        try:
            await wait_ready(third, http)
            assert not pid_alive(postmaster)
            shown = await cli(dev_env(instance.data_dir), "show", ids["workspace_id"])
            assert shown.returncode == 0 and json.loads(shown.stdout)["workspace_id"] == ids["workspace_id"]
        finally:
            assert third.stop() == 0
    assert not (instance.data_dir / "running.json").exists()  # removed on a graceful stop
