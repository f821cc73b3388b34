"""What every benchmark shares: private servers, child processes, RSS sampling, result lines.

Benchmarks run against a private embedded PostgreSQL and Redis (``worker.dev``) so they never
load the shared servers, and start every service as its own OS process, as in production.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.jsonl"
SECRET = "whsec_bench_" + "b" * 32
TOKEN = "bench-internal-token"
PYTHON = sys.executable


# ---------------------------------------------------------------- figures


def percentiles(values: Sequence[float], points: Sequence[float] = (50, 99, 99.9)) -> dict[str, float]:
    """Nearest-rank percentiles in the values' unit, keyed p50, p99, p99.9."""
    if not values:
        return {f"p{p:g}": float("nan") for p in points}
    ordered = sorted(values)
    out = {}
    for p in points:
        rank = max(0, min(len(ordered) - 1, math.ceil(round(p / 100 * len(ordered), 9)) - 1))
        out[f"p{p:g}"] = round(ordered[rank], 3)
    return out


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "worker"]).returncode
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def record(
    name: str,
    figures: Mapping[str, Any],
    *,
    baseline: Mapping[str, Any] | None = None,
    ratio: float | None = None,
    versions: Mapping[str, str] | None = None,
    results: Path = RESULTS,
    argv: Sequence[str] | None = None,
    storage: str | None = None,
) -> dict[str, Any]:
    """Print the figures and append one JSON line to ``results``; ``storage`` is ``"durable"`` or
    ``"unsafe-fast"`` (``storage_of``), what the private servers traded for speed."""
    line = {
        "bench": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**machine(), **(versions or {})},
        "command": " ".join(["python", "-m", f"bench.{name}", *(sys.argv[1:] if argv is None else argv)]),
        "git_commit": git_commit(),
        "storage": storage,
        "figures": dict(figures),
        "baseline": dict(baseline) if baseline is not None else None,
        "ratio": ratio,
    }
    print(json.dumps(line, indent=2, default=str))
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, default=str) + "\n")
    return line


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeat", type=int, default=3, help="runs of both sides; medians reported")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines file to append to")
    parser.add_argument("--workdir", type=Path, default=None, help="private servers' data (default: tmp)")
    parser.add_argument(
        "--unsafe-fast-storage",
        action="store_true",
        help="PostgreSQL with fsync and full_page_writes off, Redis without its append-only file: "
        "faster, and NOT how the service runs (default: durable, as deploy/docker-compose.yml)",
    )
    return parser


DURABLE, UNSAFE_FAST = "durable", "unsafe-fast"


def storage_of(args: argparse.Namespace) -> str:
    """``"durable"`` unless the script was given ``--unsafe-fast-storage``."""
    return UNSAFE_FAST if getattr(args, "unsafe_fast_storage", False) else DURABLE


# ---------------------------------------------------------------- private servers


@dataclass
class Servers:
    database_url: str
    redis_url: str
    postgres_pid: int | None
    versions: dict[str, str] = field(default_factory=dict)
    redis_pid: int | None = None
    storage: str = "durable"


@contextlib.contextmanager
def private_servers(
    workdir: Path | None = None,
    database: str = "bench",
    shared_buffers: str = "512MB",
    *,
    storage: str = DURABLE,
    settings: Mapping[str, str] | None = None,
) -> Iterator[Servers]:
    """A private PostgreSQL and Redis, migrated. ``storage="durable"`` (the default) runs them as
    the embedded default and deploy/docker-compose.yml do: PostgreSQL with fsync,
    synchronous_commit and full_page_writes on; Redis with ``--appendonly yes --appendfsync
    everysec``. ``"unsafe-fast"`` turns fsync and full-page writes off and Redis persistence off
    (the benchmarks' setting before session 9): a committed event then does not survive a machine
    crash, so its figures are not the service's. ``settings``: more PostgreSQL settings."""
    import asyncio

    import asyncpg

    from worker.dev.postgres import EmbeddedPostgres
    from worker.dev.redis import EmbeddedRedis
    from worker.storage.migrate import migrate

    if storage not in (DURABLE, UNSAFE_FAST):
        raise ValueError(f"storage must be {DURABLE!r} or {UNSAFE_FAST!r}, got {storage!r}")
    durable = storage == DURABLE
    print(
        "storage: durable (PostgreSQL fsync, synchronous_commit, full_page_writes on; Redis AOF everysec)"
        if durable
        else "storage: UNSAFE-FAST (PostgreSQL fsync and full_page_writes off; Redis without persistence)"
        " -- not how the service runs",
        file=sys.stderr,
    )
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bw-bench-")))
        pg = stack.enter_context(
            EmbeddedPostgres(
                root / "postgres",
                durable=durable,
                settings={"shared_buffers": shared_buffers, "max_connections": "200", **(settings or {})},
            )
        )
        redis = stack.enter_context(
            EmbeddedRedis(root / "redis", appendonly=True, appendfsync="everysec")
            if durable
            else EmbeddedRedis(root / "redis", appendonly=False, extra_args=["--save", ""])
        )

        async def prepare() -> dict[str, str]:
            conn = await asyncpg.connect(pg.url("postgres"))
            try:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
                    await conn.execute(f'CREATE DATABASE "{database}"')
                pg_version = await conn.fetchval("SHOW server_version")
                pg_flags = [
                    f"{name}={await conn.fetchval(f'SHOW {name}')}"
                    for name in ("fsync", "synchronous_commit", "full_page_writes")
                ]
            finally:
                await conn.close()
            await migrate(pg.url(database))
            from redis.asyncio import Redis

            r = Redis.from_url(f"redis://127.0.0.1:{redis.port}/0")
            info = await r.info("server")
            aof = await r.config_get("append*")
            await r.aclose()
            return {
                "postgres": str(pg_version),
                "redis": str(info["redis_version"]),
                # What the servers really ran with, read back from them.
                "postgres_storage": " ".join(pg_flags),
                "redis_storage": f"appendonly={aof.get('appendonly')} appendfsync={aof.get('appendfsync')}",
            }

        versions = asyncio.run(prepare())
        yield Servers(
            pg.url(database), f"redis://127.0.0.1:{redis.port}/0", pg.pid, versions, redis.pid, storage
        )


def service_env(servers: Servers, **extra: str) -> dict[str, str]:
    """The environment of a ``billing-worker`` role process against the private servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BW_", "DATABASE_URL", "REDIS_URL"))}
    env.update(
        DATABASE_URL=servers.database_url,
        REDIS_URL=servers.redis_url,
        STRIPE_WEBHOOK_SECRETS=SECRET,
        BW_INTERNAL_TOKEN=TOKEN,
        BW_REDIS_PREFIX="bench",
        # No metrics port (default 9102) in processes without the API: the benchmarks scrape none,
        # and a receiver and a worker started side by side (bench.e2e) would both want it.
        BW_WORKER_METRICS_PORT="0",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


# ---------------------------------------------------------------- processes


def free_port() -> int:
    from worker.dev.ports import free_port as _free

    return _free()


@contextlib.contextmanager
def process(
    args: Sequence[str], env: Mapping[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, stopped with SIGTERM (then SIGKILL) when the block ends."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(list(args), env=dict(env or os.environ), stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def wait_http(url: str, timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout}s") from None
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: a figure CPU steal and neighbours inflate less."""
    import psutil  # the bench extra; imported late so CI's smoke test needs only the test extra

    return _cpu_of(psutil.Process(pid))


def _process_tree_cpu(pid: int | None, recursive: bool = False) -> dict[int, float]:
    """CPU seconds of a process and of each of its children (PostgreSQL's backends), by pid;
    ``recursive``: their children too (``billing-worker run``'s worker processes)."""
    import psutil

    if pid is None:
        return {}
    out: dict[int, float] = {}
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(pid)
        for proc in [parent, *parent.children(recursive=recursive)]:
            with contextlib.suppress(psutil.Error):
                out[proc.pid] = _cpu_of(proc)
    return out


def _cpu_of(proc: Any) -> float:
    """User + system CPU seconds of a ``psutil.Process``."""
    times = proc.cpu_times()
    return times.user + times.system


class CpuSplit:
    """CPU used during one measured run by the server under test, PostgreSQL and Redis. With the
    generator's own figure (``bench.loadgen`` reports it) this says which process ran out of CPU
    on each side of a ratio: on 2 cores, a side whose generator uses a whole core measures the
    generator, not the server."""

    def __init__(self, server_pid: int, servers: Servers) -> None:
        self._server_pid = server_pid
        self._servers = servers

    def __enter__(self) -> CpuSplit:
        self._server0 = cpu_seconds(self._server_pid)
        self._postgres0 = _process_tree_cpu(self._servers.postgres_pid)
        self._redis0 = _process_tree_cpu(self._servers.redis_pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_s = {
            "server": cpu_seconds(self._server_pid) - self._server0,
            "postgres": _tree_delta(self._postgres0, _process_tree_cpu(self._servers.postgres_pid)),
            "redis": _tree_delta(self._redis0, _process_tree_cpu(self._servers.redis_pid)),
        }

    def per_request_ms(self, requests: int) -> dict[str, float]:
        return {part: round(1000 * cpu / requests, 3) for part, cpu in self.cpu_s.items()}


class TreeCpu:
    """CPU seconds each named process tree (the process and all its descendants) used between
    ``start()`` and ``stop()``; descendants born meanwhile count in full."""

    def __init__(
        self, pids: Mapping[str, int | None], *, alone: Mapping[str, int | None] | None = None
    ) -> None:
        """``alone``: processes counted without their descendants (the ``run`` process apart
        from its worker processes)."""
        self._pids = dict(pids)
        self._alone = dict(alone or {})
        self._before: dict[str, dict[int, float]] = {}

    def _snap(self) -> dict[str, dict[int, float]]:
        trees = {name: _process_tree_cpu(pid, recursive=True) for name, pid in self._pids.items()}
        own = {name: {pid: cpu} for name, pid in self._alone.items() if pid and (cpu := _cpu_alone(pid))}
        return trees | own

    def start(self) -> None:
        self._before = self._snap()

    def stop(self) -> dict[str, float]:
        after = self._snap()
        return {
            name: _tree_delta(self._before.get(name, {}), after.get(name, {}))
            for name in [*self._pids, *self._alone]
        }


def _cpu_alone(pid: int) -> float | None:
    """CPU seconds of one process, without its children (None once it is gone)."""
    import psutil

    try:
        return _cpu_of(psutil.Process(pid))
    except psutil.Error:
        return None


def _tree_delta(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU used between two snapshots by the processes alive at the second (new ones in full)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


class RssSampler:
    """Peak RSS (MB) of some processes, sampled every ``interval`` seconds in a thread."""

    def __init__(
        self, pids: Mapping[str, int], interval: float = 0.1, postgres_pid: int | None = None
    ) -> None:
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._postgres = psutil.Process(postgres_pid) if postgres_pid else None
        self._pg_cpu: dict[int, float] = {}
        self._pg_cpu0 = self._postgres_cpu()
        self.peak_mb: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._cpu0 = {name: self._cpu(p) for name, p in self._procs.items()}
        self.cpu_s: dict[str, float] = {}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu(proc: Any) -> float:
        import psutil

        try:
            return _cpu_of(proc)
        except psutil.Error:
            return 0.0

    def _postgres_cpu(self) -> float:
        """CPU of the PostgreSQL server: postmaster and every backend seen (backends come and go)."""
        if self._postgres is None:
            return 0.0
        for pid, cpu in _process_tree_cpu(self._postgres.pid).items():
            self._pg_cpu[pid] = max(self._pg_cpu.get(pid, 0.0), cpu)
        return sum(self._pg_cpu.values())

    def _sample(self) -> None:
        import psutil

        if self._postgres is not None:
            self.cpu_s["postgres"] = self._postgres_cpu() - self._pg_cpu0
        for name, proc in self._procs.items():
            with contextlib.suppress(psutil.Error):
                self.peak_mb[name] = max(self.peak_mb[name], proc.memory_info().rss / 2**20)
                self.cpu_s[name] = self._cpu(proc) - self._cpu0[name]

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()
        self.peak_mb = {k: round(v, 1) for k, v in self.peak_mb.items()}
        self.cpu_s = {k: round(v, 2) for k, v in self.cpu_s.items()}


def steal_percent(seconds: float = 1.0) -> float:
    """CPU steal over a short window (the VM is noisy; recorded next to every figure)."""
    import psutil

    t0 = psutil.cpu_times()
    time.sleep(seconds)
    t1 = psutil.cpu_times()
    total = sum(t1) - sum(t0)
    return round(100 * (getattr(t1, "steal", 0) - getattr(t0, "steal", 0)) / total, 1) if total else 0.0
