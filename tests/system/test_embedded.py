"""The embedded PostgreSQL and Redis are real servers that start, keep data, crash and recover."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis

from tests.support.services import fetchval
from worker.dev.postgres import EmbeddedPostgres
from worker.dev.processes import pid_alive, poll
from worker.dev.redis import EmbeddedRedis
from worker.dev.services import embedded_services

PgFactory = Callable[..., EmbeddedPostgres]
RedisFactory = Callable[..., EmbeddedRedis]

# A process that starts a server and dies without stopping it, as a crashed CLI would.
_CRASHING_OWNER = """
import json, os, sys
from pathlib import Path
from worker.dev.postgres import EmbeddedPostgres
from worker.dev.redis import EmbeddedRedis

kind, data_dir = sys.argv[1], Path(sys.argv[2])
if kind == "postgres":
    server = EmbeddedPostgres(data_dir, durable=False)
else:
    server = EmbeddedRedis(data_dir)
server.start()
print("OWNER " + json.dumps({"pid": server.pid, "port": server.port}), flush=True)
os._exit(0)
"""


def _crash_owner(kind: str, data_dir: Path) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _CRASHING_OWNER, kind, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("OWNER "))
    return json.loads(line.removeprefix("OWNER "))


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    return poll(lambda: not pid_alive(pid), timeout)


def _reap_leftover(pid: int) -> None:
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# --------------------------------------------------------------------------- PostgreSQL


async def test_postgres_serves_queries_and_keeps_data_across_stop_start(
    embedded_postgres_factory: PgFactory,
) -> None:
    pg = embedded_postgres_factory()
    url = pg.url()
    assert pg.running and pg.port is not None
    assert await fetchval(url, "SELECT current_setting('server_version_num')::int") >= 180000
    assert await fetchval(url, "SHOW max_connections") == "200"
    assert await fetchval(url, "SHOW listen_addresses") == "127.0.0.1"
    assert await fetchval(url, "SHOW fsync") == "off"  # durable=False
    await _execute(url, "CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1), (2)")
    initialised = (pg.data_dir / "PG_VERSION").stat().st_mtime_ns

    pg.stop()
    assert not pg.running
    with pytest.raises(OSError):
        await fetchval(url, "SELECT 1")

    pg.start()
    assert pg.url() == url  # the port chosen at the first start is kept
    assert await fetchval(url, "SELECT count(*) FROM kept") == 2
    assert (pg.data_dir / "PG_VERSION").stat().st_mtime_ns == initialised  # no second initdb

    pg.restart()
    assert await fetchval(url, "SELECT sum(id) FROM kept") == 3

    pg.stop()  # the next run (a new object on the same folder) gets the same port back
    again = embedded_postgres_factory(pg.data_dir)
    assert again.url() == url
    assert await fetchval(url, "SELECT count(*) FROM kept") == 2


async def test_postgres_killed_restarts_with_crash_recovery(embedded_postgres_factory: PgFactory) -> None:
    pg = embedded_postgres_factory()
    url = pg.url()
    await _execute(url, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
    pid = pg.pid
    assert pid is not None

    pg.kill()
    assert not pg.running and not pid_alive(pid)
    with pytest.raises(OSError):
        await fetchval(url, "SELECT 1")

    pg.start()
    assert await fetchval(url, "SELECT x FROM t") == 42
    assert "automatic recovery in progress" in pg.log_path.read_text()


async def test_postgres_takes_over_from_a_crashed_owner(embedded_postgres_factory: PgFactory) -> None:
    pg = embedded_postgres_factory(start=False)
    owner = await asyncio.to_thread(_crash_owner, "postgres", pg.data_dir)
    try:
        assert pid_alive(owner["pid"])  # left running, its postmaster.pid in place
        pg.start()
        assert pg.pid != owner["pid"] and not pid_alive(owner["pid"])
        assert await fetchval(pg.url(), "SELECT 1") == 1
    finally:
        _reap_leftover(owner["pid"])


async def test_postgres_starts_over_a_stale_pid_file(embedded_postgres_factory: PgFactory) -> None:
    pg = embedded_postgres_factory(start=False)
    owner = await asyncio.to_thread(_crash_owner, "postgres", pg.data_dir)
    # The orphaned postmaster dies too: its pid is gone, or a zombie where PID 1 never reaps.
    os.kill(owner["pid"], signal.SIGKILL)
    assert _wait_dead(owner["pid"])
    assert (pg.data_dir / "postmaster.pid").exists()

    pg.start()
    assert await fetchval(pg.url(), "SELECT 1") == 1


# --------------------------------------------------------------------------- Redis


def _client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url(), socket_timeout=5, socket_connect_timeout=5)


def test_redis_keeps_data_in_its_append_only_file_across_restart(
    embedded_redis_factory: RedisFactory,
) -> None:
    server = embedded_redis_factory()
    with _client(server) as client:
        assert client.ping()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.set("kept", "yes")
        client.rpush("queue", "a", "b")

    server.restart()
    with _client(server) as client:
        assert client.get("kept") == b"yes"
        assert client.lrange("queue", 0, -1) == [b"a", b"b"]
    assert any("appendonly" in p.name for p in server.data_dir.iterdir())

    server.stop()  # a new object on the same folder: same port, same data
    again = embedded_redis_factory(server.data_dir)
    assert again.url() == server.url()
    with _client(again) as client:
        assert client.get("kept") == b"yes"


def test_redis_without_append_only_file_forgets_on_restart(embedded_redis_factory: RedisFactory) -> None:
    server = embedded_redis_factory(appendonly=False)
    with _client(server) as client:
        client.set("gone", "soon")
    server.restart()
    with _client(server) as client:
        assert client.get("gone") is None


def test_redis_killed_restarts_with_acknowledged_writes(embedded_redis_factory: RedisFactory) -> None:
    server = embedded_redis_factory(appendfsync="always")
    url, pid = server.url(), server.pid
    assert pid is not None
    with _client(server) as client:
        client.set("acked", "1")

    server.kill()
    assert not server.running and not pid_alive(pid)
    with redis.Redis.from_url(url, socket_connect_timeout=1) as client, pytest.raises(redis.ConnectionError):
        client.ping()

    server.start()
    assert server.url() == url
    with _client(server) as client:
        assert client.get("acked") == b"1"


def test_redis_takes_over_from_a_crashed_owner(embedded_redis_factory: RedisFactory) -> None:
    server = embedded_redis_factory(start=False)
    owner = _crash_owner("redis", server.data_dir)
    try:
        assert pid_alive(owner["pid"])
        server.start()
        assert not pid_alive(owner["pid"])
        with _client(server) as client:
            assert client.ping()
    finally:
        _reap_leftover(owner["pid"])


# --------------------------------------------------------------------------- both, and the fixtures


async def test_embedded_services_start_both_and_stop_both(private_dir: Path) -> None:
    with embedded_services(private_dir) as services:
        assert services.database_url.startswith("postgresql://postgres@127.0.0.1:")
        assert await fetchval(services.database_url, "SHOW fsync") == "on"  # durable by default
        client = aioredis.Redis.from_url(services.redis_url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
        assert (private_dir / "postgres" / "PG_VERSION").exists()
        assert (private_dir / "redis").is_dir()
    assert not services.postgres.running and not services.redis.running
