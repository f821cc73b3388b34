"""``billing-worker ARGS`` run as a real process against a test's services."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from asyncio.subprocess import PIPE
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import ROOT
from worker.config import Settings


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(settings: Settings, *args: str, **extra_env: str) -> CliResult:
    """``billing-worker ARGS`` as a real process against the test's services (the event loop
    keeps serving in-process servers meanwhile)."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "BW_REDIS_PREFIX": settings.redis_prefix,
        "BW_LOG_LEVEL": "warning",
        "PYTHONPATH": str(ROOT),
        **extra_env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli.main", *args, env=env, cwd=ROOT, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def run_cli_without_servers(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``billing-worker ARGS`` as a real process with no servers: argument errors and the like."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), "BW_DATA_DIR": str(data_dir)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
