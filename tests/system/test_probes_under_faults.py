"""Probes that mean what Kubernetes thinks they mean, with a dependency frozen or down.

Each role runs as its own process (and one process runs the receiver and the API together) on a
private PostgreSQL and Redis. With PostgreSQL frozen (SIGSTOP on the postmaster and its backends)
and then with Redis stopped: ``/livez`` answers 200 in < 100 ms, ``/readyz`` answers in < 1 s
with the verdict of the process's roles, ``/metrics`` answers in < 1 s and counts the gauge
refreshes that could not finish.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.faults import frozen
from tests.support.helpers import SECRET_A, TOKEN, wait_for
from tests.support.paths import ROOT
from tests.support.services import free_port
from worker.storage.migrate import migrate

LIVE_BUDGET = 0.1
ANSWER_BUDGET = 1.0


@dataclass
class Role:
    """One process: its command, its roles, and the ports that serve probes."""

    name: str
    command: list[str]
    public: int | None = None  # the receiver's port: /livez and the bare /readyz verdict
    internal: int | None = None  # the API's port, or the metrics port: /livez, /readyz, /metrics
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def urls(self) -> Iterator[tuple[str, str]]:
        """(kind, url) of every probe the process serves."""
        if self.public:
            yield "public", f"http://127.0.0.1:{self.public}"
        if self.internal:
            yield "internal", f"http://127.0.0.1:{self.internal}"


@dataclass
class Stack:
    postgres: Any
    redis: Any
    roles: dict[str, Role] = field(default_factory=dict)


def _roles() -> dict[str, Role]:
    api, receiver, worker = free_port(), free_port(), free_port()
    both_public, both_internal = free_port(), free_port()
    return {
        "api": Role("api", ["api"], internal=api),
        "receiver": Role("receiver", ["receiver"], public=receiver, internal=free_port()),
        "worker": Role("worker", ["worker"], internal=worker),
        "receiver+api": Role(
            "receiver+api", ["run", "--roles", "receiver,api"], public=both_public, internal=both_internal
        ),
    }


def _spawn(role: Role, database_url: str, redis_url: str, folder: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BW_REDIS_PREFIX": "bwprobes",
        "STRIPE_WEBHOOK_SECRETS": SECRET_A,
        "BW_INTERNAL_TOKEN": TOKEN,
        "BW_INTERNAL_HOST": "127.0.0.1",
        "BW_RECEIVER_HOST": "127.0.0.1",
        "BW_LOG_LEVEL": "warning",
        "BW_SWEEP_INTERVAL_SECONDS": "1",
        "PYTHONPATH": str(ROOT),
    }
    if role.public:
        env["BW_RECEIVER_PORT"] = str(role.public)
    if "api" in role.name:
        env["BW_INTERNAL_PORT"] = str(role.internal)
        env["BW_WORKER_METRICS_PORT"] = "0"
    else:
        env["BW_WORKER_METRICS_PORT"] = str(role.internal)
    role.log = folder / f"{role.name}.log"
    with role.log.open("wb") as out:
        role.process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli.main", *role.command],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
async def stack(embedded_postgres_factory, embedded_redis_factory, tmp_path: Path) -> AsyncIterator[Stack]:
    postgres = embedded_postgres_factory()
    redis = embedded_redis_factory()
    await migrate(postgres.url())
    stack = Stack(postgres, redis, _roles())
    for role in stack.roles.values():
        _spawn(role, postgres.url(), redis.url(), tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            for role in stack.roles.values():
                await _wait_ready(http, role)
        yield stack
    finally:
        for role in stack.roles.values():
            if role.process and role.process.poll() is None:
                role.process.terminate()
        for role in stack.roles.values():
            if role.process:
                try:
                    role.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    role.process.kill()


async def _wait_ready(http: aiohttp.ClientSession, role: Role, timeout: float = 60) -> None:
    """Every probe port of ``role`` says ready (the first readiness check and scrape have run)."""

    async def ready() -> bool:
        assert role.process and role.process.poll() is None, _tail(role)
        try:
            for _, url in role.urls():
                async with http.get(f"{url}/readyz") as resp:
                    if resp.status != 200:
                        return False
            async with http.get(f"http://127.0.0.1:{role.internal}/metrics") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(ready, timeout=timeout, interval=0.2, what=f"{role.name} ready")


def _tail(role: Role) -> str:
    return role.log.read_text()[-3000:] if role.log and role.log.exists() else ""


async def _timed(http: aiohttp.ClientSession, url: str) -> tuple[int, float, str]:
    started = time.monotonic()
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        body = await resp.text()
    return resp.status, time.monotonic() - started, body


async def _check_probes(stack: Stack, ready: dict[str, bool], rounds: int = 3) -> dict[str, str]:
    """Every probe of every process answers in budget with the expected verdict; returns the last
    /metrics text of each process."""
    scraped: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(rounds):
            for role in stack.roles.values():
                for kind, url in role.urls():
                    status, took, _ = await _timed(http, f"{url}/livez")
                    assert (status, took < LIVE_BUDGET) == (200, True), (role.name, kind, "livez", took)
            calls = [
                (role, kind, path)
                for role in stack.roles.values()
                for kind, _ in role.urls()
                for path in (("/readyz", "/metrics") if kind == "internal" else ("/readyz",))
            ]
            answers = await asyncio.gather(
                *(_timed(http, f"{dict(role.urls())[kind]}{path}") for role, kind, path in calls)
            )
            for (role, kind, path), (status, took, body) in zip(calls, answers, strict=True):
                where = (role.name, kind, path, status, round(took, 3), body[:300])
                assert took < ANSWER_BUDGET, where
                if path == "/readyz":
                    assert status == (200 if ready[role.name] else 503), where
                else:
                    assert status == 200, where
                    scraped[role.name] = body
    return scraped


def _sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not exposed"
    return float(match.group(1))


async def test_probes_with_postgres_frozen(stack: Stack):
    """Every role needs PostgreSQL: nobody is ready, and nobody is slow to say so."""
    with frozen(stack.postgres.pid):
        scraped = await _check_probes(stack, dict.fromkeys(stack.roles, False))
        for name, text in scraped.items():
            # The last values are still served, and the refreshes that could not finish are counted.
            assert _sample(text, "billing_inbox_events", '{status="received"}') >= 0, name
            assert _sample(text, "billing_gauge_refresh_failures_total", '{gauge="inbox"}') >= 1, name
            assert _sample(text, "billing_gauge_refresh_failures_total", '{gauge="queue"}') == 0, name
            assert re.search(r'^billing_build_info\{.*version="', text, re.M), name
            assert "process_resident_memory_bytes" in text, name
        async with aiohttp.ClientSession() as http:
            status, _, body = await _timed(http, f"http://127.0.0.1:{stack.roles['api'].internal}/readyz")
        assert status == 503 and '"postgres": {"ok": false, "error": "timeout"}' in body, body
    async with aiohttp.ClientSession() as http:  # thawed: every process is ready again by itself
        for role in stack.roles.values():
            await _wait_ready(http, role, timeout=45)


async def test_probes_with_redis_down(stack: Stack):
    """The internal API reads PostgreSQL only: it stays ready; the receiver and the worker do not."""
    stack.redis.stop()
    ready = {"api": True, "receiver": False, "worker": False, "receiver+api": False}
    scraped = await _check_probes(stack, ready)
    for name, text in scraped.items():
        assert _sample(text, "billing_gauge_refresh_failures_total", '{gauge="queue"}') >= 1, name
    async with aiohttp.ClientSession() as http:
        status, _, body = await _timed(http, f"http://127.0.0.1:{stack.roles['worker'].internal}/readyz")
        assert status == 503 and '"redis": {"ok": false' in body and '"postgres": {"ok": true}' in body, body
        status, _, body = await _timed(http, f"http://127.0.0.1:{stack.roles['receiver'].public}/readyz")
        assert (status, body) == (503, '{"ready": false}')
