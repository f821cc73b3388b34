"""Log lines still waiting for their batch are written however the process ends: its event loop
stopped, SIGTERM, SIGINT (Ctrl-C) or an unhandled exception."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.support.paths import ROOT


def test_lines_of_a_loop_stopped_before_its_next_iteration_are_written_at_exit():
    program = (
        "import asyncio\n"
        "from worker.infra.logging import configure, get_logger\n"
        "configure('info')\n"
        "loop = asyncio.new_event_loop()\n"
        "loop.call_soon(lambda: (get_logger('t').info('last_words'), loop.stop()))\n"
        "loop.run_forever()\n"
        "loop.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=ROOT, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1])["msg"] == "last_words"


# The line waits a minute for its batch: only the flush at the process's end can write it.
_LOGS_THEN = """
import asyncio, sys
from worker.infra.logging import configure, get_logger, set_batch_delay
configure('info')
set_batch_delay(60)

async def main():
    get_logger('t').info('last_words')
    print('logged', file=sys.stderr, flush=True)
    {then}

asyncio.run(main())
"""


def _last_line(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    assert lines, "nothing was written on stdout"
    return json.loads(lines[-1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_writes_the_lines_that_wait(sig: signal.Signals):
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOGS_THEN.format(then="await asyncio.sleep(120)")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().strip() == "logged"  # the line is logged and still waits
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, stderr  # still ends as the signal ends it
    assert _last_line(stdout)["msg"] == "last_words"
    if sig == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM  # killed by the signal, as without the flush


def test_an_unhandled_exception_writes_the_lines_that_wait():
    done = subprocess.run(
        [sys.executable, "-c", _LOGS_THEN.format(then="raise RuntimeError('boom')")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 1 and "RuntimeError: boom" in done.stderr
    assert _last_line(done.stdout)["msg"] == "last_words"
