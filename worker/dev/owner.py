"""One owner per data folder, and where its embedded servers listen (for the CLI's other commands).

``billing-worker run`` in embedded mode holds an exclusive ``flock`` on ``<data>/owner.lock`` for
its whole life, with its pid written in: a second instance on the same folder fails to take it and
refuses to start, naming that pid, before it touches any server. The kernel drops the lock when the
owner exits in any way (even SIGKILL), so a crashed owner never blocks the next start, and the
leftover servers it may have left are then cleaned up as before (worker/dev/postgres.py, redis.py).

While it serves, the owner writes ``<data>/running.json`` (its pid and the servers' URLs), removed
when it stops; the CLI reads it when ``DATABASE_URL`` / ``REDIS_URL`` are unset.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from worker.dev.processes import pid_alive
from worker.dev.server import EmbeddedServiceError

__all__ = [
    "DataDirBusy",
    "NoRunningInstance",
    "RunningInstance",
    "hold_data_dir",
    "published",
    "running_instance",
]

LOCK_NAME = "owner.lock"
RUNNING_NAME = "running.json"
START_COMMAND = "./scripts/run (or: billing-worker run)"


class DataDirBusy(EmbeddedServiceError):
    """Another live process owns this data folder."""


class NoRunningInstance(EmbeddedServiceError):
    """No ``billing-worker run`` serves this data folder right now."""


@dataclass(frozen=True)
class RunningInstance:
    """What a running owner publishes: its pid and where its embedded servers listen."""

    pid: int
    database_url: str
    redis_url: str
    redis_prefix: str
    data_dir: str


def _read_pid(handle: int) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return os.pread(handle, 32, 0).decode().strip()
    return ""


@contextlib.contextmanager
def hold_data_dir(data_dir: Path) -> Iterator[None]:
    """Own ``data_dir`` until the block ends; raise :class:`DataDirBusy` if a live process does."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    # No O_TRUNC: a refused second instance must leave the owner's pid in place.
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(handle) or "unknown"
            raise DataDirBusy(
                f"data folder {data_dir.absolute()} is in use by billing-worker pid {pid}; "
                "stop that one first, or set BW_DATA_DIR to another folder"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(handle, 0)  # the lock file stays: removing it would race a new owner
    finally:
        os.close(handle)  # releases the lock


@contextlib.contextmanager
def published(data_dir: Path, database_url: str, redis_url: str, redis_prefix: str) -> Iterator[None]:
    """Write ``running.json`` for the block's duration (atomically, readable by the owner only)."""
    path = data_dir / RUNNING_NAME
    doc = RunningInstance(os.getpid(), database_url, redis_url, redis_prefix, str(data_dir.absolute()))
    scratch = path.with_suffix(".tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(doc.__dict__, handle)
    scratch.replace(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def running_instance(data_dir: Path) -> RunningInstance:
    """The live owner's servers; :class:`NoRunningInstance` (one line, with the command that
    starts them) if none serves ``data_dir``. A file left by a killed owner (dead pid) is ignored."""
    path = data_dir / RUNNING_NAME
    missing = NoRunningInstance(
        f"no billing-worker is running on data folder {data_dir.absolute()} and DATABASE_URL / "
        f"REDIS_URL are unset: start one with {START_COMMAND}, or set the URLs"
    )
    try:
        doc = json.loads(path.read_text())
        found = RunningInstance(
            int(doc["pid"]),
            str(doc["database_url"]),
            str(doc["redis_url"]),
            str(doc["redis_prefix"]),
            str(doc["data_dir"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        raise missing from None
    if not pid_alive(found.pid):
        raise missing
    return found
