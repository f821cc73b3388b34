"""``billing-worker run`` as a user starts it (./scripts/run): a real process on its own data folder,
with embedded PostgreSQL and Redis (no URLs in its environment), and the CLI run beside it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from asyncio.subprocess import PIPE
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.cli import CliResult
from tests.support.helpers import SECRET_A, TOKEN, post_signed, wait_for
from tests.support.paths import ROOT
from worker.dev.ports import free_port

# Whatever points a process at servers other than those of its data folder.
_NOT_INHERITED = ("DATABASE_URL", "REDIS_URL", "BW_REDIS_PREFIX", "STRIPE_API_KEY", "STRIPE_API_BASE")


def dev_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell in the checkout: no URLs, only BW_DATA_DIR."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    return {**env, "BW_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **extra}


@dataclass
class DevInstance:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    receiver_url: str
    api_url: str

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def ready(self, http: aiohttp.ClientSession) -> bool:
        try:
            async with http.get(f"{self.api_url}/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    async def deliver(self, http: aiohttp.ClientSession, event: dict[str, Any]) -> None:
        """Post ``event`` signed and wait until the instance has processed it."""
        status, body = await post_signed(http, self.receiver_url, event, SECRET_A)
        assert status == 200, body

        async def status_of() -> str | None:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get(f"{self.api_url}/v1/events/{event['id']}", headers=headers) as resp:
                return (await resp.json())["status"] if resp.status == 200 else None

        await wait_for(status_of, lambda s: s in ("processed", "ignored"), timeout=30, what="processed")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def spawn_run(data_dir: Path, log_path: Path, **extra_env: str) -> DevInstance:
    """Start ``billing-worker run`` on ``data_dir`` with free ports (not waiting for it)."""
    receiver, api = free_port(), free_port()
    env = dev_env(
        data_dir,
        STRIPE_WEBHOOK_SECRETS=SECRET_A,
        BW_INTERNAL_TOKEN=TOKEN,
        BW_RECEIVER_HOST="127.0.0.1",
        BW_RECEIVER_PORT=str(receiver),
        BW_INTERNAL_PORT=str(api),
        BW_WORKER_METRICS_PORT="0",
        **extra_env,
    )
    with log_path.open("ab") as log:  # a file, never a pipe nobody drains
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "run"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return DevInstance(proc, data_dir, log_path, f"http://127.0.0.1:{receiver}", f"http://127.0.0.1:{api}")


async def wait_ready(instance: DevInstance, http: aiohttp.ClientSession, timeout: float = 180) -> None:
    """Until /readyz answers 200 and running.json names the process (first start: initdb)."""

    async def up() -> bool:
        if instance.proc.poll() is not None:
            raise AssertionError(
                f"billing-worker run exited {instance.proc.returncode}:\n{instance.output()}"
            )
        running = instance.data_dir / "running.json"
        return running.exists() and await instance.ready(http)

    await wait_for(up, timeout=timeout, interval=0.2, what="billing-worker run ready")
    assert json.loads((instance.data_dir / "running.json").read_text())["pid"] == instance.proc.pid


async def cli(env: dict[str, str], *args: str) -> CliResult:
    """``billing-worker ARGS`` with exactly ``env`` (the event loop keeps serving meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", *args, env=env, cwd=ROOT, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())
