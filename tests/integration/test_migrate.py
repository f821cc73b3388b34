"""Migrations run once under their lock (the CLI as a process: tests/system/test_cli.py)."""

from __future__ import annotations

import asyncio

import asyncpg

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
