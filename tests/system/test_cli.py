"""The billing-worker command line as a real process: migrate, show, event and its configuration
errors; dead letters listed and retried; backfill and reconcile against Stripe's stand-in."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import asyncpg

from tests.support import stripe_factory as sf
from tests.support.cli import run_cli
from tests.support.helpers import running_service, wait_for
from tests.support.money_helpers import ids as fresh_ids
from tests.support.paths import ROOT
from tests.support.scenarios import DAY, orphan_invoice, reconcile_sub_event
from tests.support.services import create_database, drop_database, with_database
from tests.support.stripe_server import StripeServer
from worker.config import Settings
from worker.ops.backfill import BACKFILL_LOCK


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli.main", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_migrate_show_and_event(pg_server):
    name = await create_database(pg_server.url, prefix="bw_cli_")
    url = with_database(pg_server.url, name)
    env = {"DATABASE_URL": url}
    try:
        first = await asyncio.to_thread(_cli, "migrate", env=env)
        assert first.returncode == 0, first.stderr
        assert "0001_init" in json.loads(first.stdout)["applied"]
        assert "applying migration 0001_init" in first.stderr  # what it applies, as it goes
        again = await asyncio.to_thread(_cli, "migrate", env=env)
        assert json.loads(again.stdout) == {"applied": []}

        missing = await asyncio.to_thread(_cli, "show", "ws_nobody", env=env)
        assert missing.returncode == 1 and "no billing state" in missing.stderr
        no_event = await asyncio.to_thread(_cli, "event", "evt_nothing", env=env)
        assert no_event.returncode == 1 and "no inbox event" in no_event.stderr

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "INSERT INTO webhook_events (event_id, type, created, payload) VALUES ('evt_cli1', 't', now(), '{}')"
            )
        finally:
            await conn.close()
        shown = await asyncio.to_thread(_cli, "event", "evt_cli1", env=env)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["status"] == "received"
    finally:
        await drop_database(pg_server.url, name)


async def test_cli_configuration_errors_are_explicit(tmp_path):
    result = await asyncio.to_thread(_cli, "migrate", env={"DATABASE_URL": "", "BW_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"billing-worker: no billing-worker is running on data folder {tmp_path} and DATABASE_URL / "
        "REDIS_URL are unset: start one with ./scripts/run (or: billing-worker run), or set the URLs"
    ]
    bad = await asyncio.to_thread(_cli, "migrate", env={"DATABASE_URL": "x", "BW_MAX_JOBS": "many"})
    assert bad.returncode == 2 and "BW_MAX_JOBS must be an integer" in bad.stderr


async def test_cli_lists_and_retries_dead_letters(fast_settings: Settings):
    ids = fresh_ids("cli")
    orphan, _ = orphan_invoice(ids)
    async with running_service(fast_settings) as svc:
        assert (await svc.post_event(orphan))[0] == 200
        await wait_for(lambda: svc.event_status(orphan["id"]), lambda s: s == "dead", timeout=20, what="dead")
        listed = await run_cli(fast_settings, "dead-letters", "--type", "invoice.payment_failed")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [r["last_error"][:15] for r in rows if r["event_id"] == orphan["id"]] == ["unmatched after"]
        retried = await run_cli(fast_settings, "retry", orphan["id"])
        assert retried.returncode == 0, retried.stderr
        assert json.loads(retried.stdout)["previous_status"] == "dead"
        # Still no workspace: it walks the backoff again and ends dead again, with a fresh budget.
        await wait_for(
            lambda: svc.event_status(orphan["id"]), lambda s: s == "dead", timeout=20, what="dead again"
        )
        missing = await run_cli(fast_settings, "retry", "evt_nosuchevent")
        assert missing.returncode == 1 and "no inbox event" in missing.stderr


async def test_cli_reconciles_and_backfills(stripe_settings: Settings, stripe_server: StripeServer):
    ids = fresh_ids("rcli")
    now = int(time.time())
    env = {"STRIPE_API_KEY": stripe_server.api_key, "STRIPE_API_BASE": stripe_server.url}
    history = sf.history_lifecycle(**ids, start=now - 20 * DAY, trial_days=3)
    events = [e for e in history if e["created"] <= now]
    stripe_server.events = list(events)
    async with running_service(stripe_settings) as svc:
        done = await run_cli(stripe_settings, "backfill", "--since", str(now - 21 * DAY), **env)
        assert done.returncode == 0, done.stderr
        run = json.loads(done.stdout)
        assert (run["status"], run["inserted"]) == ("done", len(events))
        await svc.wait_processed([e["id"] for e in events])
        # One reader per run: while another process holds the run, a resume is refused.
        async with svc.services.pool.acquire() as holder:
            await holder.execute("SELECT pg_advisory_lock($1, $2)", BACKFILL_LOCK, run["run_id"])
            busy = await run_cli(stripe_settings, "backfill", "--resume", str(run["run_id"]), **env)
            await holder.execute("SELECT pg_advisory_unlock($1, $2)", BACKFILL_LOCK, run["run_id"])
        assert busy.returncode == 1 and "backfill_busy" in busy.stderr
        stripe_server.put({"id": ids["customer"], "object": "customer"})
        stripe_server.put(reconcile_sub_event(ids, now - DAY, seats=11, status="past_due")["data"]["object"])
        result = await run_cli(stripe_settings, "reconcile", ids["workspace_id"], **env)
        assert result.returncode == 0, result.stderr
        assert [a["object"] for a in json.loads(result.stdout)["applied"]] == [ids["sub_id"]]
        state = await svc.workspace(ids["workspace_id"])
        assert (state["seats"], state["status"]) == (11, "past_due")
        too_old = await run_cli(stripe_settings, "backfill", "--since", str(now - 40 * DAY), **env)
        assert too_old.returncode == 1 and "since_out_of_range" in too_old.stderr
