"""Migrations run once under their lock; the CLI migrates, shows state and inbox rows."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import asyncpg

from tests.support.paths import ROOT
from tests.support.services import create_database, drop_database, with_database
from worker.storage.migrate import available, migrate


async def test_concurrent_migrations_apply_each_version_once(pg_server):
    name = await create_database(pg_server.url, prefix="bw_mig_")
    url = with_database(pg_server.url, name)
    try:
        results = await asyncio.gather(*(migrate(url) for _ in range(4)))
        applied = sorted(m.version for r in results for m in r)
        assert applied == [m.version for m in available()]  # each version by exactly one process
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
            assert [r["version"] for r in rows] == [m.version for m in available()]
        finally:
            await conn.close()
        assert await migrate(url) == []  # up to date: nothing to do
    finally:
        await drop_database(pg_server.url, name)


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
        assert "applied" in first.stdout and "0001_init" in first.stdout
        again = await asyncio.to_thread(_cli, "migrate", env=env)
        assert again.stdout.startswith("applied 0 migration(s)")

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


async def test_cli_configuration_errors_are_explicit():
    result = await asyncio.to_thread(_cli, "migrate", env={"DATABASE_URL": ""})
    assert result.returncode == 2
    assert "DATABASE_URL must be set" in result.stderr
    bad = await asyncio.to_thread(_cli, "migrate", env={"DATABASE_URL": "x", "BW_MAX_JOBS": "many"})
    assert bad.returncode == 2 and "BW_MAX_JOBS must be an integer" in bad.stderr
