"""Log lines of a process whose event loop stops are still written when it exits."""

from __future__ import annotations

import json
import subprocess
import sys

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
