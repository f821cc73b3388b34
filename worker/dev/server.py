"""The life cycle both embedded servers share: start on a kept port, stop, kill, restart."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from worker.dev.ports import HOST, remember_port, remembered_port
from worker.infra.logging import get_logger

__all__ = ["EmbeddedServiceError", "ServerProcess", "log"]

# The component of these servers' log lines, the same since they lived in worker/embedded.py.
log = get_logger("worker.embedded")


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be found, started or stopped; the message says why."""


def _read_tail(path: Path, offset: int, limit: int = 4000) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace").strip()


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _finish(process: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Send ``sig`` and wait; escalate to SIGKILL if the process outlives ``timeout``."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ServerProcess:
    """What both embedded servers share: a child process bound to 127.0.0.1, a port chosen once
    and kept across restarts, a start loop that retries a lost race for the port, and
    stop / kill / restart / context management. Subclasses say how to spawn and when ready.

    Why real servers run by this process (SPEC §2): ``billing-worker run`` with no
    ``DATABASE_URL``/``REDIS_URL`` must give a working service on a machine that has nothing but
    Python, and the tests must run against real servers, never fakes; so both come from wheels.

    Data is kept between runs. A server left running by a process that crashed (its pid file
    still names a live server in the same folder) is shut down before a new one starts, so two
    servers never share one data folder. Every server runs in its own session
    (``start_new_session``), so a Ctrl-C in the terminal reaches the CLI, which then stops the
    worker before the servers it still needs.
    """

    kind: ClassVar[str]  # "postgres" | "redis": names log messages
    label: ClassVar[str]  # for error messages
    stop_signal: ClassVar[int]  # graceful shutdown
    hang_signal: ClassVar[int]  # for a server that never became ready
    stop_timeout: ClassVar[float]

    def __init__(self, data_dir: Path, port: int | None, log_path: Path, start_timeout: float) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.host = HOST
        self._port = port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int | None:
        """The TCP port: the one given, or the one chosen at the first start."""
        return self._port

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's (postmaster's) process id while running."""
        return self._process.pid if self.running and self._process else None

    @property
    def port_file(self) -> Path:
        """Where the port of the last start is kept; ``port=None`` reuses it when free."""
        return self.data_dir / "embedded-port"

    def start(self) -> Self:
        """Start the server; return once it is ready for clients."""
        if self.running:
            return self
        self._process = None
        self._before_start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            port = self._port if self._port is not None else remembered_port(self.port_file, self.host)
            offset = _file_size(self.log_path)
            process = self._spawn(port)
            if self._wait_ready(process, port, deadline):
                self._process = process
                self._port = port
                remember_port(self.port_file, port)
                log.info(
                    f"embedded_{self.kind}_started",
                    pid=process.pid,
                    data_dir=str(self.data_dir),
                    server_log=str(self.log_path),
                    **self._started_fields(),
                )
                return self
            tail = _read_tail(self.log_path, offset)
            if process.poll() is None:  # still not ready at the deadline
                _finish(process, self.hang_signal, 10.0)
                raise EmbeddedServiceError(
                    f"{self.label} in {self.data_dir} was not ready after {self.start_timeout:.0f}"
                    f" s; server log {self.log_path}:\n{tail}"
                )
            if time.monotonic() < deadline and self._worth_retrying(tail):
                time.sleep(0.1)  # back-off between attempts, bounded by the deadline
                continue
            raise EmbeddedServiceError(
                f"{self.label} in {self.data_dir} exited with code {process.returncode} while "
                f"starting on {self.host}:{port}; server log {self.log_path}:\n{tail}"
            )

    def stop(self, timeout: float | None = None) -> None:
        """Graceful shutdown (see ``stop_signal``)."""
        process, self._process = self._process, None
        if process is None:
            return
        _finish(process, self.stop_signal, self.stop_timeout if timeout is None else timeout)
        log.info(f"embedded_{self.kind}_stopped", data_dir=str(self.data_dir), port=self._port)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        self._after_kill()
        log.info(f"embedded_{self.kind}_killed", data_dir=str(self.data_dir), port=self._port)

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"{type(self).__name__}({str(self.data_dir)!r}, port={self._port}, {state})"

    # -- what each server fills in

    def _before_start(self) -> None:
        """Prepare the data folder and clear what a crashed earlier owner left."""

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
        raise NotImplementedError

    def _worth_retrying(self, log_tail: str) -> bool:
        raise NotImplementedError

    def _started_fields(self) -> dict[str, Any]:
        return {}

    def _after_kill(self) -> None:
        pass
