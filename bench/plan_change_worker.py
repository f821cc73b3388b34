"""The worker process of ``bench.plan_change_sweep``: the service's ``build_worker``, unchanged, with
its clock moved forward by ``BENCH_CLOCK_OFFSET_SECONDS`` (so the changes' period end has passed)
and its ``sweep_plan_changes`` cron job timed.

Every sweep run appends ``{"start", "end", "applied", "error", "cpu_s"}`` (wall-clock unix seconds; the process CPU
spent meanwhile) as one
JSON line to ``BENCH_SWEEP_LOG``. Runs until SIGTERM, like ``billing-worker worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from worker.clock import utcnow
from worker.config import Settings
from worker.infra.logging import configure
from worker.jobs.worker import build_worker
from worker.services import Services


def _append(path: Path, line: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(line) + "\n")


async def run() -> None:
    settings = Settings.from_env()
    configure(settings.log_level)
    offset = timedelta(seconds=float(os.environ["BENCH_CLOCK_OFFSET_SECONDS"]))
    sweep_log = Path(os.environ["BENCH_SWEEP_LOG"])
    services = await Services.start(settings, clock=lambda: utcnow() + offset)
    worker = build_worker(services, handle_signals=True)
    cron = next(cj for cj in worker.cron_jobs if cj.name.endswith(":sweep_plan_changes"))
    sweep = cron.coroutine

    async def timed_sweep(ctx: dict[str, Any]) -> int:
        started, cpu0, applied, error = time.time(), time.process_time(), None, None
        try:
            applied = await sweep(ctx)
            return applied
        except BaseException as exc:  # a timeout (CancelledError) included: that is a finding
            error = type(exc).__name__
            raise
        finally:
            line = {"start": started, "end": time.time(), "applied": applied, "error": error}
            _append(sweep_log, {**line, "cpu_s": time.process_time() - cpu0})

    cron.coroutine = timed_sweep
    try:
        await worker.async_run()
    finally:
        await worker.close()
        await services.close()


if __name__ == "__main__":
    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(run())
    sys.exit(0)
