"""structlog JSON logs with stable keys; secrets never reach a log line.

Keys every line carries: ``process`` (``main``, or ``worker-1``, … for the worker processes of
``billing-worker run``), ``ts``, ``level``, ``component``, ``msg``; and, per webhook or job,
``event_id``, ``event_type``, ``workspace_id``, ``outcome``, ``duration_ms``, ``attempt``.
The full reference is docs/logging.md.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import re
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

# Values that look like credentials are masked wherever they appear.
_SECRET = re.compile(r"(whsec_|sk_live_|sk_test_|rk_live_|rk_test_)[A-Za-z0-9]+")
_SECRET_KEYS = {"secret", "token", "authorization", "api_key", "password", "stripe-signature"}


# Every prefix above contains "k_" or "whsec_": one substring test over a line's string values
# rules nearly every line out before the regex runs, and the secret keys of a set of keys are
# remembered (each call site logs a fixed set): redaction was a third of a log line's cost.
_secret_keys_of: dict[tuple[str, ...], tuple[str, ...]] = {}


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    keys = tuple(event)
    secret_keys = _secret_keys_of.get(keys)
    if secret_keys is None:
        secret_keys = tuple(key for key in keys if key.lower() in _SECRET_KEYS)
        if len(_secret_keys_of) < 4096:  # bounded, should a caller ever log data-derived keys
            _secret_keys_of[keys] = secret_keys
    for key in secret_keys:
        event[key] = "[redacted]"
    # Joined with NUL, which no prefix contains: a match never spans two values.
    text = "\0".join([value for value in event.values() if isinstance(value, str)])
    if "k_" in text or "whsec_" in text:
        for key, value in event.items():
            if isinstance(value, str) and _SECRET.search(value):
                event[key] = _SECRET.sub(r"\1[redacted]", value)
    return event


def _fallback(value: Any) -> Any:
    """What structlog's stdlib renderer does with a value JSON has no type for: ``__structlog__``
    if it has one, else ``repr`` (so a datetime reads ``datetime.datetime(…)`` either way)."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


# datetimes and dataclasses go to ``_fallback`` as they did with the stdlib renderer, not to
# orjson's own ISO / object rendering: a line's values read the same as before.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def render_json(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """One JSON line, keys in the event's order, via orjson (~10x faster than ``json.dumps`` on a
    webhook's line; logging was ~12 % of the receiver's CPU). Compact separators and UTF-8 instead
    of ``\\u`` escapes; NaN/Infinity become null. What orjson refuses and the stdlib accepts
    (integers beyond 64 bits, non-string keys, lone surrogates) goes through ``json.dumps``."""
    try:
        return orjson.dumps(event, default=_fallback, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(event, default=_fallback)


# Writes to a pipe of at most PIPE_BUF bytes are atomic: several processes writing their batches
# to one stdout (``billing-worker run`` and its worker processes) never tear each other's lines.
_ATOMIC_WRITE_BYTES = select.PIPE_BUF


def _chunks(lines: list[str]) -> list[str]:
    """``lines`` joined into as few texts as possible, each at most PIPE_BUF bytes unless a single
    line is longer."""
    chunks: list[str] = []
    start, size = 0, 0
    for end, line in enumerate(lines):
        length = (len(line) if line.isascii() else len(line.encode())) + 1
        if size and size + length > _ATOMIC_WRITE_BYTES:
            chunks.append("\n".join(lines[start:end]) + "\n")
            start, size = end, 0
        size += length
    chunks.append("\n".join(lines[start:]) + "\n")
    return chunks


# How long a logged line may wait to be written together with the next ones (BW_LOG_BATCH_MS).
FLUSH_DELAY = 0.02
_MAX_BUFFERED_LINES = 1000


class LineWriter:
    """structlog's logger: the lines logged within ``delay`` seconds are written in one call.

    structlog's ``PrintLogger`` writes and flushes every line, a write system call per line (and
    with ``PYTHONUNBUFFERED``, as in our image, any write is one). A worker finishing ~1,000 jobs
    a second, each in its own loop iteration, spent ~25 µs of its ~0.9 ms per event on that.
    Inside a running event loop a line now waits at most ``delay`` (20 ms by default; 0 writes
    every line at once) or until 1,000 are buffered; outside one (CLI, start-up) it is written at
    once. What waits is written when the process stops: at exit, on an unhandled exception, on
    SIGINT and on SIGTERM (``install_exit_flush``). A process killed by SIGKILL loses at most the
    last ``delay`` of lines.
    """

    def __init__(self, file: TextIO | None = None, delay: float = FLUSH_DELAY) -> None:
        self._file = file  # None: sys.stdout as it is at each write (pytest swaps it)
        self.delay = delay
        self._target: TextIO | None = None
        self._lines: list[str] = []
        self._due = 0.0  # when the scheduled write should have run (0: none scheduled)
        # Re-entrant: the SIGTERM handler flushes in the main thread, possibly inside ``msg``.
        self._lock = threading.RLock()
        atexit.register(self._flush)

    def msg(self, message: str) -> None:
        file = self._file or sys.stdout
        with self._lock:
            if self._lines and self._target is not file:
                self._write()
            self._target = file
            self._lines.append(message)
            if len(self._lines) >= _MAX_BUFFERED_LINES or self.delay <= 0:
                self._write()
                return
            if self._due and time.monotonic() < self._due + 1.0:
                return  # a write is scheduled (one overdue by a second had its loop closed)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._write()
                return
            self._due = time.monotonic() + self.delay
        loop.call_later(self.delay, self._flush)

    def _flush(self) -> None:
        with self._lock:
            self._due = 0.0
            self._write()

    def _write(self) -> None:
        lines, self._lines = self._lines, []
        if lines and self._target is not None:
            # A closed or broken stream; RuntimeError: a signal arrived during a write to it.
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                for chunk in _chunks(lines):
                    self._target.write(chunk)
                    self._target.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = failure = msg


# Bumped by every ``configure``: loggers rebuild their bound logger once after it, not per line.
_generation = 0


_writer: LineWriter | None = None
_delay = FLUSH_DELAY


def flush() -> None:
    """Write the lines that wait for their batch now (a process stopping)."""
    if _writer is not None:
        _writer._flush()


def set_batch_delay(seconds: float) -> None:
    """How long a line may wait for the next ones from now on (``BW_LOG_BATCH_MS``; 0: none)."""
    global _delay
    _delay = max(seconds, 0.0)
    if _writer is not None:
        _writer._flush()
        _writer.delay = _delay


def _flush_then_terminate(signum: int, frame: Any) -> None:
    """SIGTERM with no handler of the program's: write what waits, then die of the signal as
    the default action would (same exit status for supervisors, no clean-up code run)."""
    flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_exit_flush() -> None:
    """Make SIGTERM write the waiting lines before the process dies.

    An unhandled exception and SIGINT (``KeyboardInterrupt``) end through ``atexit``, which
    flushes; SIGTERM's default action ends the process at once, so it gets a handler — only where
    it has the default one (a program's own handler, such as ``serve``'s graceful stop, or an
    ignored SIGTERM is left alone) and only in the main thread (the only one that may set it)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _flush_then_terminate)


def _process_key(name: str) -> Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]:
    """Name the process on every line: the worker processes share the main process's stdout."""

    def add(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event["process"] = name
        return event

    return add


def configure(level: str = "info", stream: Any = None, process: str = "main") -> None:
    """Logs at ``level`` and above as JSON lines on ``stream`` (stdout by default), each naming
    ``process``."""
    global _generation, _writer
    flush()
    _writer = writer = LineWriter(stream, _delay)
    install_exit_flush()
    numeric = getattr(logging, level.upper())
    logging.basicConfig(format="%(message)s", stream=stream or sys.stdout, level=numeric, force=True)
    for noisy in ("arq", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _process_key(process),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("msg"),
            render_json,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_factory(writer),
        cache_logger_on_first_use=False,
    )
    _generation += 1


def _factory(writer: LineWriter) -> Callable[..., LineWriter]:
    return lambda *_: writer


class _ComponentLogger:
    """structlog's lazy proxy binds a new logger on every call (~25 % of a webhook's log line);
    this one keeps the bound logger until the next ``configure``."""

    __slots__ = ("_bound", "_generation", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._bound: Any = None
        self._generation = -1

    def __getattr__(self, attr: str) -> Any:
        if self._generation != _generation:
            self._bound = structlog.get_logger(component=self._name).bind()
            self._generation = _generation
        return getattr(self._bound, attr)


def get_logger(name: str) -> Any:
    """A logger whose lines carry ``component=<name>``; lazy, so it follows a later ``configure``."""
    return _ComponentLogger(name)
