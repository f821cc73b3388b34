"""The worker processes of ``billing-worker run``: started beside the receiver + API process,
restarted when they die, stopped with it, and never outliving it.

The main process (``worker.runner.serve``) starts N children running ``billing-worker worker``
(``python -m worker.cli worker --stop-at-stdin-eof``). Each gets, in its environment (never on the
command line, which ``ps`` shows), the servers' URLs and the Redis prefix the main process resolved
(the embedded ones in dev mode), its name (``BW_PROCESS_NAME=worker-<i>``, the ``process`` key of its
log lines) and its metrics port (``BW_WORKER_METRICS_PORT`` + i). They write to the main process's
stdout and stderr.

* Ready: a child is ready once its arq worker is connected and takes jobs; it says so by writing
  to a pipe the main process gave it (``--ready-fd``). The main process's /readyz is ready while
  at least one child is, so a deployment (or a benchmark) that waits for /readyz finds the workers
  taking jobs, not still importing.
* A child that exits unasked is logged (``worker_process_exited``) and started again after a
  backoff: 0.5 s, doubling to 10 s, back to 0.5 s once a child has run for 30 s.
* Stopping: SIGTERM to every child, at most the grace period (the job timeout + 5 s) to finish the
  jobs they run, then SIGKILL.
* The main process killed outright (SIGKILL, a crash): each child's stdin is a pipe whose only
  writer is the main process; the kernel closes it, the child reads end of file and stops as on
  SIGTERM (``stop_at_parent_exit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.config import Settings
from worker.infra.logging import get_logger

__all__ = [
    "CHILD_FLAG",
    "READY_FD_FLAG",
    "WorkerProcesses",
    "child_environment",
    "default_worker_processes",
    "signal_ready",
    "stop_at_parent_exit",
    "usable_cpus",
    "worker_process_count",
]

log = get_logger("runner")

CHILD_FLAG = "--stop-at-stdin-eof"  # the ``worker`` command's option the children run with
READY_FD_FLAG = "--ready-fd"  # the pipe a child writes to once it takes jobs
FIRST_DELAY = 0.5  # before the first restart of a child
MAX_DELAY = 10.0  # the backoff's cap
STABLE_AFTER = 30.0  # a child that ran this long restarts after FIRST_DELAY again
GRACE_MARGIN = 5.0  # beyond the job timeout: closing the pools, the last log lines
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (taskset, a container's cpuset), lowered
    to a cgroup v2 CPU quota (``docker --cpus``, a Kubernetes limit) when one is set."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError, ZeroDivisionError):
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    return max(1, cpus)


def default_worker_processes(cpus: int) -> int:
    """Half the CPUs, at least one. ``billing-worker run`` shares its machine with the PostgreSQL
    (and Redis) its workers write to: each event a worker process applies costs PostgreSQL about as
    much CPU again, and the receiver + API process and Redis need some too. More worker processes
    than that only queue on PostgreSQL's CPU. With the servers elsewhere, CPUs - 1 is the figure to
    try (``--worker-processes``)."""
    return max(1, cpus // 2)


def worker_process_count(configured: int | None, cpus: int | None = None) -> int:
    """``configured`` (``--worker-processes`` / ``BW_WORKER_PROCESSES``), or the default (None: auto)."""
    if configured is not None:
        return configured
    return default_worker_processes(usable_cpus() if cpus is None else cpus)


def child_environment(
    settings: Settings, name: str, metrics_port: int, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of worker process ``name``: the main process's, with what it resolved (the
    servers, the prefix, the Stripe settings) and the child's own name and metrics port."""
    assert settings.database_url and settings.redis_url
    env = dict(os.environ if base is None else base)
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        BW_REDIS_PREFIX=settings.redis_prefix,
        BW_WORKER_METRICS_PORT=str(metrics_port),
        BW_PROCESS_NAME=name,
    )
    for variable, value in (
        ("STRIPE_API_KEY", settings.stripe_api_key),
        ("STRIPE_API_BASE", settings.stripe_api_base),
    ):
        if value:
            env[variable] = value
    return env


def stop_at_parent_exit(stop: asyncio.Event, fd: int = 0) -> None:
    """Set ``stop`` once ``fd`` (a pipe only the main process writes to) reads end of file: the
    main process has ended, however it ended. A thread blocks on the read; nothing is ever written."""
    loop = asyncio.get_running_loop()

    def parent_gone() -> None:
        if not stop.is_set():
            log.warning("parent_process_gone")
            stop.set()

    def watch() -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        with contextlib.suppress(RuntimeError):  # the loop has already closed: the process is ending
            loop.call_soon_threadsafe(parent_gone)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def signal_ready(fd: int) -> Callable[[], None]:
    """What a worker process calls once its worker takes jobs: tells the main process through
    ``fd``, the first time only (its arq worker starts again after a Redis outage; the fd, closed
    by then, may have been reused)."""
    pending = [fd]

    def ready() -> None:
        if pending:
            told = pending.pop()
            with contextlib.suppress(OSError):
                os.write(told, b"1")
            os.close(told)

    return ready


def _exit_fields(code: int) -> dict[str, Any]:
    if code < 0:
        with contextlib.suppress(ValueError):
            return {"exit_code": None, "signal": signal.Signals(-code).name}
        return {"exit_code": None, "signal": str(-code)}
    return {"exit_code": code, "signal": None}


@dataclass
class _Child:
    """One worker process slot: its name and port, and the process now filling it."""

    name: str
    metrics_port: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0
    delay: float = FIRST_DELAY
    ready: bool = False  # its worker told the pipe it takes jobs (reset at each start)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class WorkerProcesses:
    """N worker processes of one main process; ``start``, then ``stop`` (``status`` for /readyz)."""

    def __init__(self, settings: Settings, count: int) -> None:
        base = settings.worker_metrics_port
        self._settings = settings
        self._children = [_Child(f"worker-{i}", base + i if base else 0) for i in range(1, count + 1)]
        self._stopping = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self._readiness: set[asyncio.Task[None]] = set()  # one per start until it hears or ends

    @property
    def pids(self) -> list[int]:
        return [c.process.pid for c in self._children if c.process is not None and c.running]

    async def start(self) -> None:
        for child in self._children:
            await self._spawn(child)
            self._watchers.append(asyncio.create_task(self._supervise(child)))
        log.info(
            "worker_processes_started", count=len(self._children), pids=self.pids, usable_cpus=usable_cpus()
        )

    async def _spawn(self, child: _Child) -> None:
        env = child_environment(self._settings, child.name, child.metrics_port)
        child.ready = False
        read_end, write_end = os.pipe()
        try:
            child.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "worker.cli",
                "worker",
                CHILD_FLAG,
                READY_FD_FLAG,
                str(write_end),
                stdin=asyncio.subprocess.PIPE,  # its end of file tells the child the main process is gone
                env=env,
                process_group=0,  # a terminal's Ctrl-C reaches the main process only, which stops them
                pass_fds=(write_end,),
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # the child's copy is the only writer: its exit ends the pipe
        child.started = time.monotonic()
        waiting = asyncio.create_task(self._await_ready(child, child.process, read_end))
        self._readiness.add(waiting)
        waiting.add_done_callback(self._readiness.discard)
        log.info("worker_process_started", worker=child.name, pid=child.process.pid)

    @staticmethod
    async def _await_ready(child: _Child, process: asyncio.subprocess.Process, fd: int) -> None:
        """Mark ``child`` ready when ``process`` writes to its pipe (end of file: it exited first)."""
        try:
            said = await asyncio.to_thread(os.read, fd, 1)
        finally:
            os.close(fd)
        if said and child.process is process and process.returncode is None:
            child.ready = True
            log.info("worker_process_ready", worker=child.name, pid=process.pid)

    async def _supervise(self, child: _Child) -> None:
        """Start ``child`` again each time it exits unasked (or could not start), after a backoff."""
        while True:
            if child.process is not None:
                code = await child.process.wait()
                if self._stopping.is_set():
                    return
                ran = time.monotonic() - child.started
                if ran >= STABLE_AFTER:
                    child.delay = FIRST_DELAY
                log.warning(
                    "worker_process_exited",
                    worker=child.name,
                    pid=child.process.pid,
                    **_exit_fields(code),
                    ran_s=round(ran, 1),
                    restart_in_s=child.delay,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), child.delay)
            if self._stopping.is_set():
                return
            child.delay = min(child.delay * 2, MAX_DELAY)
            child.restarts += 1
            try:
                await self._spawn(child)
            except OSError as exc:  # no fork now (memory, process limit): try again after the backoff
                log.error("worker_process_start_failed", worker=child.name, error=repr(exc))
                child.process = None

    def status(self) -> dict[str, Any]:
        """The readiness check of the main process: ready while at least one worker process takes jobs."""
        processes = [
            {
                "process": c.name,
                "pid": c.process.pid if c.process is not None else None,
                "running": c.running,
                "ready": c.running and c.ready,
                "restarts": c.restarts,
            }
            for c in self._children
        ]
        running = sum(p["running"] for p in processes)
        ready = sum(p["ready"] for p in processes)
        return {
            "ok": ready >= 1,
            "running": running,
            "ready": ready,
            "wanted": len(processes),
            "processes": processes,
        }

    async def stop(self, grace: float | None = None) -> None:
        """SIGTERM every child, wait up to ``grace`` (the job timeout + 5 s) for them, SIGKILL the rest."""
        if grace is None:
            grace = self._settings.job_timeout_seconds + GRACE_MARGIN
        self._stopping.set()
        live = [c for c in self._children if c.running]
        for child in live:
            assert child.process is not None
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        waits = {asyncio.ensure_future(c.process.wait()): c for c in live if c.process is not None}
        if waits:
            await asyncio.wait(waits, timeout=grace)
        for wait, child in waits.items():
            assert child.process is not None
            if not wait.done():
                log.warning("worker_process_killed", worker=child.name, pid=child.process.pid, grace_s=grace)
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await wait
            log.info("worker_process_stopped", worker=child.name, **_exit_fields(wait.result()))
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, *self._readiness, return_exceptions=True)
        for child in self._children:
            if child.process is not None and child.process.stdin is not None:
                child.process.stdin.close()
