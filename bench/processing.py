"""Benchmark 2 (processing) and the worker half of 5 (memory).

N realistic events (subscription created + updated for N/2 workspaces, shuffled) are written to
the inbox and queued exactly as the receiver queues them under load (flushes of 500 webhooks:
``process_events`` jobs of 100 ids); one worker process (``bench.worker_proc --mode real`` =
``build_worker`` in burst mode) drains them. Baseline, in the same run and alternating order: the
same arq Worker config draining the same jobs (N ids, 100 a job) with a no-op ``process_events``
(``--mode noop``): arq's own cost of carrying N events in jobs of 100, no longer one job per
event. Throughput = events ÷ (last job end - first job start), from arq hooks; "job" figures
(``job_ms``) are per job of 100 events.
Inbox→committed latency = ``processed_at - received_at`` per event (Postgres timestamps): with a
pre-filled queue it is mostly queueing time, so per-job run time percentiles are reported too.

    python -m bench.processing [--repeat 3] [--events 10000]
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    PYTHON,
    ROOT,
    RssSampler,
    Servers,
    base_parser,
    median,
    percentiles,
    private_servers,
    record,
    service_env,
    steal_percent,
    storage_of,
)
from bench.events import event_body
from worker.queue.enqueue import JobQueue

# Webhooks one receiver flush takes under load (InboxBatcher's max_batch).
RECEIVER_FLUSH = 500


async def _enqueue(servers: Servers, ids: list[str]) -> None:
    from arq.connections import create_pool

    from worker.queue.redis import redis_settings

    redis = await create_pool(redis_settings(servers.redis_url))
    queue = JobQueue(redis, "bench", "bench:queue")
    for start in range(0, len(ids), RECEIVER_FLUSH):  # one receiver flush each
        await queue.enqueue_events(ids[start : start + RECEIVER_FLUSH])
    await redis.aclose()


async def fill_inbox(servers: Servers, tag: str, count: int, *, seed: int = 0) -> list[str]:
    """Write ``count`` events to the inbox with COPY and queue them; return their ids."""
    rows = []
    for w in range(count // 2):
        for kind in ("created", "updated"):
            body = event_body(f"{tag}_{w}", kind=kind)
            doc = json.loads(body)
            rows.append(
                (
                    doc["id"],
                    doc["type"],
                    doc["api_version"],
                    datetime.fromtimestamp(doc["created"], UTC),
                    False,
                    body,
                )
            )
    random.Random(seed).shuffle(rows)
    conn = await asyncpg.connect(servers.database_url)
    try:
        await conn.copy_records_to_table(
            "webhook_events",
            records=rows,
            columns=["event_id", "type", "api_version", "created", "livemode", "payload"],
        )
    finally:
        await conn.close()
    ids = [r[0] for r in rows]
    await _enqueue(servers, ids)
    return ids


async def settle(servers: Servers) -> None:
    """``VACUUM (ANALYZE)`` before each measured drain, as pgbench vacuums before each run.
    Otherwise autovacuum cleans the earlier real runs' dead rows (every event updates its inbox
    row and its workspace) during a later drain, on the core the worker shares, and charges it to
    whichever run comes next: PostgreSQL CPU per event rose 0.25 → 0.37 → 0.56 ms over three."""
    conn = await asyncpg.connect(servers.database_url)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


async def inbox_latency(servers: Servers, ids: list[str]) -> dict[str, Any]:
    conn = await asyncpg.connect(servers.database_url)
    try:
        rows = await conn.fetch(
            "SELECT status, extract(epoch FROM processed_at - received_at) * 1000 AS ms "
            "FROM webhook_events WHERE event_id = ANY($1::text[])",
            ids,
        )
    finally:
        await conn.close()
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {
        "statuses": statuses,
        "inbox_to_committed_ms": percentiles([float(r["ms"]) for r in rows if r["ms"] is not None]),
    }


def drain(servers: Servers, mode: str, env_extra: dict[str, str]) -> tuple[dict[str, Any], RssSampler]:
    env = service_env(servers, **env_extra)
    log = open(Path("/tmp") / f"bench-worker-{mode}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [PYTHON, "-m", "bench.worker_proc", "--mode", mode],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    with RssSampler({"worker": proc.pid}, postgres_pid=servers.postgres_pid) as rss:
        out, _ = proc.communicate(timeout=1800)
    log.close()
    if proc.returncode:
        raise RuntimeError(f"worker_proc --mode {mode} failed ({proc.returncode}); see {log.name}")
    lines = [line for line in out.decode().splitlines() if line.startswith('{"mode"')]
    return json.loads(lines[-1]), rss


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--log-level", default="info", help="BW_LOG_LEVEL of the worker process")
    args = parser.parse_args(argv)
    tag = str(int(time.time()))
    env_extra = {"BW_LOG_LEVEL": args.log_level}
    real_runs, noop_runs, lat_runs, steal = [], [], [], []
    peak = {"real": 0.0, "noop": 0.0}
    with private_servers(args.workdir, storage=storage_of(args)) as servers:
        for i in range(args.repeat):
            for mode in ("real", "noop") if i % 2 == 0 else ("noop", "real"):
                if mode == "real":
                    ids = asyncio.run(fill_inbox(servers, f"{tag}r{i}", args.events, seed=i))
                else:
                    ids = [f"evt_noop{tag}_{i}_{n}" for n in range(args.events)]
                    asyncio.run(_enqueue(servers, ids))
                asyncio.run(settle(servers))
                result, rss = drain(servers, mode, env_extra)
                peak[mode] = max(peak[mode], rss.peak_mb["worker"])
                result["cpu_s"] = rss.cpu_s["worker"]
                # The share of the drain the worker spent on CPU (1.0: never waited for anything).
                result["busy"] = round(result["cpu_ms_per_event"] * (result["rate"] or 0) / 1000, 3)
                result["postgres_cpu_ms_per_event"] = round(1000 * rss.cpu_s["postgres"] / args.events, 3)
                if mode == "real":
                    result.update(asyncio.run(inbox_latency(servers, ids)))
                    lat_runs.append(result)
                    real_runs.append(result)
                else:
                    noop_runs.append(result)
                print(mode, result, file=sys.stderr)
            steal.append(steal_percent(0.5))
        versions = servers.versions

    real_rate = median([r["rate"] for r in real_runs])
    noop_rate = median([r["rate"] for r in noop_runs])
    ratio = round(real_rate / noop_rate, 3)
    figures = {
        "events_per_run": args.events,
        "repeat": args.repeat,
        "events_per_s_median": real_rate,
        "events_per_s_runs": [r["rate"] for r in real_runs],
        "job_ms_p50": median([r["job_ms"]["p50"] for r in real_runs]),
        "job_ms_p99": median([r["job_ms"]["p99"] for r in real_runs]),
        "inbox_to_committed_ms_p50": median([r["inbox_to_committed_ms"]["p50"] for r in lat_runs]),
        "inbox_to_committed_ms_p99": median([r["inbox_to_committed_ms"]["p99"] for r in lat_runs]),
        "statuses": real_runs[-1]["statuses"],
        "worker_cpu_ms_per_event": median([r["cpu_ms_per_event"] for r in real_runs]),
        "worker_busy": median([r["busy"] for r in real_runs]),
        "postgres_cpu_ms_per_event": median([r["postgres_cpu_ms_per_event"] for r in real_runs]),
        "peak_rss_mb": {"worker": peak["real"], "noop_worker": peak["noop"]},
        "steal_pct": steal,
        "targets": {"ratio_ge_0.7": ratio >= 0.7, "worker_rss_lt_150mb": peak["real"] < 150},
    }
    baseline = {
        # arq carrying the same events in the same jobs (100 ids each) with a no-op job function.
        "events_per_s_median": noop_rate,
        "events_per_s_runs": [r["rate"] for r in noop_runs],
        "job_ms_p50": median([r["job_ms"]["p50"] for r in noop_runs]),
        "worker_cpu_ms_per_event": median([r["cpu_ms_per_event"] for r in noop_runs]),
        "worker_busy": median([r["busy"] for r in noop_runs]),
    }
    record(
        "processing",
        figures,
        baseline=baseline,
        ratio=ratio,
        versions=versions,
        results=args.results,
        argv=argv,
        storage=storage_of(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
