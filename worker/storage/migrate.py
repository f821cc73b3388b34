"""Versioned SQL migrations, applied in order under an advisory lock.

Files are ``migrations/NNNN_name.sql``; each runs in its own transaction and is recorded in
``schema_migrations``. The advisory lock makes two processes starting together migrate once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import asyncpg

from worker.infra.logging import get_logger

log = get_logger("migrate")

MIGRATION_LOCK = 0x6269_6C6C  # "bill": advisory lock key shared by every process
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files("worker.storage.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in worker/storage/migrations: {versions}")
    return found


async def applied_versions(conn: asyncpg.Connection) -> set[int]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}


async def pending(conn: asyncpg.Connection) -> list[Migration]:
    done = await applied_versions(conn)
    return [m for m in available() if m.version not in done]


async def migrate(
    url_or_conn: str | asyncpg.Connection, on_apply: Callable[[Migration], None] | None = None
) -> list[Migration]:
    """Apply every pending migration; returns what was applied (empty when up to date).
    ``on_apply`` hears of each one just before it runs (the CLI says what it applies)."""
    conn = await asyncpg.connect(url_or_conn) if isinstance(url_or_conn, str) else url_or_conn
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            todo = await pending(conn)
            for migration in todo:
                if on_apply is not None:
                    on_apply(migration)
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                log.info("migration_applied", version=migration.version, name=migration.name)
            return todo
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    finally:
        if isinstance(url_or_conn, str):
            await conn.close()
