"""Processes we did not start or cannot wait for: liveness, working folder, stopping leftovers."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["pid_alive", "pid_exists", "poll", "process_cwd", "terminate_leftover"]

_POLL_INTERVAL = 0.02


def poll(condition: Callable[[], bool], timeout: float) -> bool:
    """True as soon as ``condition()`` holds; False if it still does not after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)


def pid_alive(pid: int) -> bool:
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


def pid_exists(pid: int) -> bool:
    """True if ``pid`` names any process, zombies included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_cwd(pid: int) -> Path | None:
    """The working folder of ``pid`` where /proc tells it (Linux); None where it cannot."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def terminate_leftover(pid: int, sig: int, timeout: float) -> None:
    """Stop a process that is not our child (we cannot wait() for it): signal, then poll."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if not poll(lambda: not pid_alive(pid), timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        poll(lambda: not pid_alive(pid), 10.0)
