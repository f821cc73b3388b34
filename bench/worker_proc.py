"""A worker process for the processing benchmark: ``build_worker`` in burst mode, timed by arq hooks.

``--mode real`` runs the service's worker unchanged; ``--mode noop`` is the very same arq Worker
(same max_jobs, poll_delay, keep_result, timeouts, cron) whose ``process_events`` does nothing —
the framework's own cost of carrying the events. Prints event jobs, events, first start, last end,
per-job run time and CPU per event as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from arq.worker import func

from bench.common import percentiles
from worker.config import Settings
from worker.infra.logging import configure
from worker.jobs.worker import build_worker
from worker.queue.enqueue import PROCESS_EVENTS
from worker.services import Services


async def noop(ctx: dict[str, Any], event_ids: list[str]) -> None:
    return None


async def run(mode: str) -> dict[str, Any]:
    settings = Settings.from_env()
    configure(settings.log_level)
    services = await Services.start(settings)
    worker = build_worker(services, handle_signals=False, burst=True)
    real = worker.functions[PROCESS_EVENTS]
    events = [0]

    async def counted(ctx: dict[str, Any], event_ids: list[str]) -> None:
        events[0] += len(event_ids)
        await (noop if mode == "noop" else real.coroutine)(ctx, event_ids)

    worker.functions[PROCESS_EVENTS] = func(counted, name=PROCESS_EVENTS, max_tries=real.max_tries)
    starts: dict[str, float] = {}
    durations: list[float] = []
    ends: list[float] = []
    cpu = [0.0, 0.0]  # process CPU time at the first job start and the last job end
    marker = services.queue.events_job_prefix

    async def on_start(ctx: dict[str, Any]) -> None:
        if ctx["job_id"].startswith(marker):  # event jobs only: the inbox sweep (cron) is not one of them
            if not starts:
                cpu[0] = time.process_time()
            starts[ctx["job_id"]] = time.time()

    async def on_end(ctx: dict[str, Any]) -> None:
        if ctx["job_id"] not in starts:
            return
        now = time.time()
        ends.append(now)
        cpu[1] = time.process_time()
        durations.append((now - starts[ctx["job_id"]]) * 1000)

    worker.on_job_start, worker.on_job_end = on_start, on_end
    try:
        await worker.async_run()
    finally:
        await worker.close()
        await services.close()
    first = min(starts.values()) if starts else 0.0
    last = max(ends) if ends else 0.0
    return {
        "mode": mode,
        "jobs": len(durations),
        "events": events[0],
        "first_start": first,
        "last_end": last,
        "rate": round(events[0] / (last - first), 1) if last > first else None,
        "job_ms": percentiles(durations),
        "cpu_ms_per_event": round(1000 * (cpu[1] - cpu[0]) / max(events[0], 1), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("real", "noop"), default="real")
    args = parser.parse_args(argv)
    json.dump(asyncio.run(run(args.mode)), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
