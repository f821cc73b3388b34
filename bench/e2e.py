"""Benchmark 3 (end to end): webhook posted → state visible through the internal API.

Receiver, worker and internal API run as three ``billing-worker`` processes on a private
PostgreSQL + Redis. This process posts signed ``customer.subscription.created`` webhooks for new
workspaces at a steady rate (open loop: fixed send instants, latency from the scheduled instant).
To see "visible" without hammering the API with polls it follows the change stream
(``<prefix>:workspace-changes``) and, for each change of a workspace it posted, GETs
``/v1/workspaces/{id}``; the latency ends when that GET returns the new version (if the GET is
early it polls every 5 ms). So the figure includes the API read, and the stream is only a hint.
The first ``--warmup`` seconds of the open loop are sent like the rest but reported apart
(``warmup_latency_ms``), as ``bench.loadgen`` leaves out its warm-up requests: the services'
first events pay for new pool connections and statement preparation, once per process.

    python -m bench.e2e [--rate 200] [--duration 60] [--warmup 2]
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.common import (
    PYTHON,
    SECRET,
    TOKEN,
    RssSampler,
    base_parser,
    free_port,
    percentiles,
    private_servers,
    process,
    record,
    service_env,
    steal_percent,
    storage_of,
    wait_http,
)
from bench.events import event_body, signature


async def drive(
    receiver: str, api: str, redis_url: str, rate: float, duration: float, tag: str, warmup: float = 0.0
) -> dict[str, Any]:
    warm = int(rate * warmup)
    count = warm + int(rate * duration)
    now = int(time.time())
    bodies = []
    for i in range(count):
        body = event_body(f"{tag}_{i}")
        bodies.append((f"ws_b{tag}_{i}", body.encode(), signature(body, SECRET, now)))
    sent_at: dict[str, float] = {}
    latencies: dict[str, float] = {}
    statuses: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    redis = Redis.from_url(redis_url)
    stream = "bench:workspace-changes"
    last_id = (await redis.xinfo_stream(stream))["last-generated-id"] if await redis.exists(stream) else "0"
    done = asyncio.Event()
    checks: list[asyncio.Task[None]] = []
    acked: dict[str, float] = {}  # post → receiver's 200, from the scheduled instant

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def visible(ws: str) -> None:
            while ws not in latencies:
                async with http.get(f"{api}/v1/workspaces/{ws}", headers=headers) as resp:
                    body = await resp.json() if resp.status == 200 else None
                if body and body["version"] >= 1:
                    latencies[ws] = (time.perf_counter() - sent_at[ws]) * 1000
                    if len(latencies) == count:
                        done.set()
                    return
                await asyncio.sleep(0.005)

        async def follow() -> None:
            nonlocal last_id
            while not done.is_set():
                entries = await redis.xread({stream: last_id}, count=1000, block=500)
                for _, items in entries:
                    for entry_id, fields in items:
                        last_id = entry_id
                        ws = fields[b"workspace_id"].decode()
                        if ws in sent_at and ws not in latencies:
                            checks.append(asyncio.create_task(visible(ws)))

        async def post(at: float, ws: str, body: bytes, sig: str) -> None:
            sent_at[ws] = at
            async with http.post(
                f"{receiver}/webhooks/stripe",
                data=body,
                headers={"Stripe-Signature": sig, "Content-Type": "application/json"},
            ) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
            acked[ws] = (time.perf_counter() - at) * 1000

        follower = asyncio.create_task(follow())
        start = time.perf_counter() + 0.1
        posts = []
        for i, (ws, body, sig) in enumerate(bodies):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            posts.append(asyncio.create_task(post(at, ws, body, sig)))
        await asyncio.gather(*posts)
        sent_for = time.perf_counter() - start
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
        done.set()
        await follower
    await redis.aclose()
    warm_ids = {ws for ws, _, _ in bodies[:warm]}
    values = [ms for ws, ms in latencies.items() if ws not in warm_ids]
    by_second: dict[int, float] = {}
    for ws, ms in latencies.items():
        if ws not in warm_ids:
            second = int(sent_at[ws] - start - warmup)
            by_second[second] = max(by_second.get(second, 0.0), round(ms, 1))
    return {
        "max_ms_by_second": [by_second.get(s) for s in range(int(duration) + 1)],
        "events": count - warm,
        "warmup_events": warm,
        "achieved_rps": round(count / sent_for, 1),
        "visible": len(values),
        "latency_ms": percentiles(values),
        "warmup_latency_ms": percentiles([latencies[ws] for ws in warm_ids if ws in latencies])
        if warm
        else None,
        "latency_ms_with_warmup": percentiles(list(latencies.values())),
        "receiver_ack_ms": percentiles([ms for ws, ms in acked.items() if ws not in warm_ids]),
        "statuses": {str(k): v for k, v in statuses.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent first, reported apart")
    parser.add_argument("--poll-delay", default=None, help="BW_POLL_DELAY_SECONDS of the worker")
    parser.set_defaults(repeat=1)
    args = parser.parse_args(argv)
    tag = str(int(time.time()))
    runs = []
    with private_servers(args.workdir, storage=storage_of(args)) as servers:
        rport, aport = free_port(), free_port()
        env = service_env(
            servers,
            BW_RECEIVER_HOST="127.0.0.1",
            BW_RECEIVER_PORT=str(rport),
            BW_INTERNAL_PORT=str(aport),
            **({"BW_POLL_DELAY_SECONDS": args.poll_delay} if args.poll_delay else {}),
        )
        cli = [PYTHON, "-m", "worker.cli.main"]
        logs = Path("/tmp")
        with (
            process([*cli, "receiver"], env, logs / "bench-e2e-receiver.log") as receiver,
            process([*cli, "worker"], env, logs / "bench-e2e-worker.log") as worker,
            process([*cli, "api"], env, logs / "bench-e2e-api.log") as api,
        ):
            wait_http(f"http://127.0.0.1:{rport}/healthz")
            time.sleep(1.0)
            pids = {"receiver": receiver.pid, "worker": worker.pid, "api": api.pid}
            with RssSampler(pids, postgres_pid=servers.postgres_pid) as rss:
                for i in range(args.repeat):
                    runs.append(
                        asyncio.run(
                            drive(
                                f"http://127.0.0.1:{rport}",
                                f"http://127.0.0.1:{aport}",
                                servers.redis_url,
                                args.rate,
                                args.duration,
                                f"{tag}e{i}",
                                args.warmup,
                            )
                        )
                    )
                    print(runs[-1], file=sys.stderr)
            steal = steal_percent(0.5)
        versions = servers.versions
    p99s = [r["latency_ms"]["p99"] for r in runs]
    figures = {
        "rate": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "runs": runs,
        "p50_ms": sorted(r["latency_ms"]["p50"] for r in runs)[len(runs) // 2],
        "p99_ms": sorted(p99s)[len(p99s) // 2],
        "peak_rss_mb": rss.peak_mb,
        "cpu_s": rss.cpu_s,
        "steal_pct": steal,
        "targets": {"p99_le_150ms": sorted(p99s)[len(p99s) // 2] <= 150},
    }
    record("e2e", figures, versions=versions, results=args.results, argv=argv, storage=storage_of(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
