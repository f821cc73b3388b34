"""``billing-worker run`` uses the machine: the worker runs in processes of its own beside the
receiver + API process, started, supervised and stopped with it, never outliving it, each naming
itself on its log lines and serving its own metrics; ``--worker-processes 0`` keeps one process."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import structlog

from tests.support import stripe_factory as sf
from tests.support.dev_instance import DevInstance, spawn_run, wait_ready
from tests.support.helpers import SECRET_A, TOKEN, wait_for
from tests.support.paths import ROOT
from tests.support.services import free_port, with_database
from worker.config import Settings
from worker.dev.processes import pid_alive
from worker.infra.logging import configure
from worker.runner_processes import WorkerProcesses


def _spawn(settings: Settings, folder: Path, *args: str, **extra_env: str) -> DevInstance:
    """``billing-worker run ARGS`` against the test's PostgreSQL and Redis, on free ports."""
    receiver, api = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "BW_REDIS_PREFIX": f"{settings.redis_prefix}-{uuid.uuid4().hex[:6]}",
        "STRIPE_WEBHOOK_SECRETS": SECRET_A,
        "BW_INTERNAL_TOKEN": TOKEN,
        "BW_RECEIVER_HOST": "127.0.0.1",
        "BW_RECEIVER_PORT": str(receiver),
        "BW_INTERNAL_PORT": str(api),
        "BW_WORKER_METRICS_PORT": "0",
        "BW_LOG_LEVEL": "info",
        "PYTHONPATH": str(ROOT),
        **extra_env,
    }
    log_path = folder / "run.log"
    with log_path.open("ab") as log:  # a file, never a pipe nobody drains
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "run", *args],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return DevInstance(proc, folder, log_path, f"http://127.0.0.1:{receiver}", f"http://127.0.0.1:{api}")


async def _readiness(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    try:
        async with http.get(f"{url}/readyz") as resp:
            return resp.status, await resp.json()
    except aiohttp.ClientError as exc:
        return 0, {"error": repr(exc)}


async def _ready_with(instance: DevInstance, http: aiohttp.ClientSession, running: int) -> dict[str, Any]:
    """/readyz once it says ready with ``running`` worker processes running."""

    async def probe() -> tuple[int, dict[str, Any]]:
        assert instance.proc.poll() is None, instance.output()
        return await _readiness(http, instance.api_url)

    _, body = await wait_for(
        probe,
        lambda r: (
            r[0] == 200
            and r[1]["checks"]["worker_processes"]["running"] == running
            and r[1]["checks"]["worker_processes"]["ready"] == running
        ),
        timeout=60,
        interval=0.1,
        what=f"ready with {running} worker processes",
    )
    return body["checks"]["worker_processes"]


def _event() -> dict[str, Any]:
    u = uuid.uuid4().hex[:10]
    return sf.history_lifecycle(
        workspace_id=f"ws_mp_{u}", customer=f"cus_mp{u}", sub_id=f"sub_mp{u}", id_prefix=f"evt_mp{u}"
    )[0]


def _lines(instance: DevInstance) -> list[dict[str, Any]]:
    out = []
    for line in instance.output().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))  # a torn line would fail here
    return out


async def _job_lines(instance: DevInstance, event_id: str) -> list[dict[str, Any]]:
    """The ``job_finished`` lines of ``event_id``, once written (a line waits up to BW_LOG_BATCH_MS)."""

    async def lines() -> list[dict[str, Any]]:
        return [
            line
            for line in _lines(instance)
            if line["msg"] == "job_finished" and line.get("event_id") == event_id
        ]

    return await wait_for(lines, timeout=10, what=f"job_finished of {event_id}")


def _children(pid: int) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE]


async def _gone(pids: list[int], timeout: float) -> None:
    async def alive() -> list[int]:
        return [pid for pid in pids if pid_alive(pid)]

    await wait_for(alive, lambda left: not left, timeout=timeout, interval=0.1, what=f"{pids} gone")


async def _metrics_ports_ready(http: aiohttp.ClientSession, metrics: int) -> None:
    """Each process serves its own metrics port: the main one its own, worker-i port + i."""
    for port, roles in ((metrics, "api,receiver,worker"), (metrics + 1, "worker"), (metrics + 2, "worker")):
        url = f"http://127.0.0.1:{port}"
        _, body = await wait_for(
            lambda url=url: _readiness(http, url), lambda r: r[0] == 200, what=f"{url} ready"
        )
        assert ",".join(body["roles"]) == roles, body


async def test_two_worker_processes_process_restart_and_stop_with_the_main_one(
    settings: Settings, tmp_path: Path
) -> None:
    metrics = free_port()
    instance = _spawn(settings, tmp_path, "--worker-processes", "2", BW_WORKER_METRICS_PORT=str(metrics))
    try:
        async with aiohttp.ClientSession() as http:
            workers = await _ready_with(instance, http, running=2)
            children = _children(instance.proc.pid)
            assert sorted(c.pid for c in children) == sorted(p["pid"] for p in workers["processes"])
            assert [p["process"] for p in workers["processes"]] == ["worker-1", "worker-2"]
            for child in children:  # the secrets and URLs are in the environment, not the arguments
                *_, module, command, flag, ready_flag, ready_fd = child.cmdline()
                assert [module, command, flag, ready_flag] == [
                    "worker.cli",
                    "worker",
                    "--stop-at-stdin-eof",
                    "--ready-fd",
                ]
                assert ready_fd.isdigit()
            # Ready means taking jobs: each worker process told its main process so.
            assert [p["ready"] for p in workers["processes"]] == [True, True]

            first = _event()
            await instance.deliver(http, first)
            await _metrics_ports_ready(http, metrics)
            jobs = 0.0
            for port in (metrics + 1, metrics + 2):
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    text = await resp.text()
                jobs += sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("billing_job_duration_seconds_count")
                )
            assert jobs >= 1  # the job was counted by the worker process that ran it

            # A worker process killed outright is logged and replaced; the next event is processed.
            victim = children[0].pid
            os.kill(victim, signal.SIGKILL)
            await wait_for(
                lambda: _readiness(http, instance.api_url),
                lambda r: r[1].get("checks", {}).get("worker_processes", {}).get("running") == 1,
                timeout=10,
                interval=0.02,
                what="the main process sees the worker process gone",
            )
            workers = await _ready_with(instance, http, running=2)
            await _metrics_ports_ready(http, metrics)  # the new one serves (and stops gracefully)
            assert victim not in [p["pid"] for p in workers["processes"]]
            assert sum(p["restarts"] for p in workers["processes"]) == 1
            await instance.deliver(http, _event())

        lines = _lines(instance)
        exited = [line for line in lines if line["msg"] == "worker_process_exited"]
        assert [(e["pid"], e["signal"], e["process"]) for e in exited] == [(victim, "SIGKILL", "main")]
        assert {line["process"] for line in lines} == {"main", "worker-1", "worker-2"}
        finished = await _job_lines(instance, first["id"])
        assert finished and finished[0]["process"] in ("worker-1", "worker-2")

        # SIGTERM to the main process stops them all; nothing is left behind.
        pids = [c.pid for c in _children(instance.proc.pid)]
        assert len(pids) == 2
        instance.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(instance.proc.wait, 90) == 0
        await _gone(pids, timeout=5)
        stopped = [line for line in _lines(instance) if line["msg"] == "worker_process_stopped"]
        assert sorted(line["worker"] for line in stopped) == ["worker-1", "worker-2"]
        assert all(line["exit_code"] == 0 for line in stopped), stopped
    finally:
        instance.stop()


@pytest.mark.parametrize(
    ("args", "env", "worker_here"),
    [
        ((), {"BW_WORKER_PROCESSES": "0"}, True),
        (("--worker-processes", "0"), {"BW_WORKER_PROCESSES": "3"}, True),  # the flag wins
        (("--roles", "receiver,api", "--worker-processes", "2"), {}, False),  # no worker role
    ],
    ids=["env-0", "flag-0", "no-worker-role"],
)
async def test_one_process_when_asked_or_without_the_worker_role(
    settings: Settings, tmp_path: Path, args: tuple[str, ...], env: dict[str, str], worker_here: bool
) -> None:
    instance = _spawn(settings, tmp_path, *args, **env)
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> tuple[int, dict[str, Any]]:
                assert instance.proc.poll() is None, instance.output()
                return await _readiness(http, instance.api_url)

            _, body = await wait_for(ready, lambda r: r[0] == 200, timeout=60, what="ready")
            assert "worker_processes" not in body["checks"]
            assert _children(instance.proc.pid) == []
            if worker_here:
                event = _event()
                await instance.deliver(http, event)
                finished = await _job_lines(instance, event["id"])
                assert [line["process"] for line in finished] == ["main"]
        assert instance.stop() == 0
    finally:
        instance.stop()


async def test_embedded_servers_reach_the_worker_processes_and_they_end_with_a_killed_main_process(
    tmp_path: Path,
) -> None:
    """./scripts/run with no URLs: the worker processes get the embedded servers' URLs; the main
    process killed outright (SIGKILL: no clean-up at all) does not leave them running."""
    instance = spawn_run(tmp_path / "data", tmp_path / "run.log", BW_WORKER_PROCESSES="2")
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(instance, http)
            workers = await _ready_with(instance, http, running=2)
            event = _event()
            await instance.deliver(http, event)
        pids = [p["pid"] for p in workers["processes"]]
        finished = await _job_lines(instance, event["id"])
        assert finished and finished[0]["process"] in ("worker-1", "worker-2")

        started = time.monotonic()
        os.kill(instance.proc.pid, signal.SIGKILL)
        instance.proc.wait(30)
        await _gone(pids, timeout=30)
        gone_lines = [line for line in _lines(instance) if line["msg"] == "parent_process_gone"]
        assert sorted(line["process"] for line in gone_lines) == ["worker-1", "worker-2"]
        assert time.monotonic() - started < 30
    finally:
        instance.stop()


async def test_a_worker_process_that_keeps_failing_is_restarted_later_each_time(settings: Settings) -> None:
    """A worker process that cannot start (here: its database does not exist) is not restarted in a
    tight loop: 0.5 s, 1 s, 2 s, … (capped at 10 s); stopping during a wait ends at once."""
    buffer = io.StringIO()
    configure("info", stream=buffer)
    assert settings.database_url
    broken = dataclasses.replace(
        settings,
        database_url=with_database(settings.database_url, "bw_no_such_database"),
        worker_metrics_port=0,
    )
    children = WorkerProcesses(broken, 1)
    try:
        await children.start()

        async def exits() -> list[dict[str, Any]]:
            lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
            return [line for line in lines if line["msg"] == "worker_process_exited"]

        seen = await wait_for(exits, lambda e: len(e) >= 3, timeout=60, what="three exits")
        assert [e["restart_in_s"] for e in seen[:3]] == [0.5, 1.0, 2.0]
        assert [e["exit_code"] for e in seen[:3]] == [1, 1, 1]
        assert children.status()["processes"][0]["restarts"] >= 2
    finally:
        started = time.monotonic()
        await children.stop()
        structlog.reset_defaults()
    assert time.monotonic() - started < 5
    assert children.pids == [] and children.status()["running"] == 0
