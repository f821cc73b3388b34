"""Faults the system tests inject into private embedded servers: a PostgreSQL frozen in place."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psutil


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP a server and every process it forked (a PostgreSQL postmaster and its backends):
    connections stay open and queries get no answer, as in a stalled VM or a storage freeze.
    SIGCONT on the way out, whatever happened."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    stopped: list[psutil.Process] = []
    try:
        for process in processes:
            process.send_signal(signal.SIGSTOP)
            stopped.append(process)
        yield
    finally:
        for process in stopped:
            with suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGCONT)
