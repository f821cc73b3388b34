"""Benchmark 1 (ingest) and the receiver half of 5 (memory).

The load generator (``bench.loadgen``, its own process) posts validly signed ~3.5 kB webhooks with
unique ids at a fixed concurrency to the receiver (``billing-worker receiver``, its own process,
private PostgreSQL + Redis) and, in the same run and interleaved, to a bare aiohttp endpoint
(``bench.bare_server``) that only answers 200. Then an open loop at half the receiver's maximum
rate gives the latency a real (non-saturating) load sees.

    python -m bench.ingest [--repeat 3] [--concurrency 64] [--requests 10000] [--log-batch-ms 0]
        [--payload thin]

``--log-batch-ms`` sets the receiver's ``BW_LOG_BATCH_MS`` (default: the service's, 20 ms; 0:
every log line written at once), to measure what batching the log writes saves.
``--payload thin`` posts thin notifications (``v2.core.event``, ``v1.customer.subscription.created``)
instead of snapshot events: the receiver stores them without any Stripe call (it runs without
STRIPE_API_KEY here, so it also logs its one ``thin_event_without_api_key`` warning).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    ROOT,
    CpuSplit,
    RssSampler,
    base_parser,
    free_port,
    median,
    private_servers,
    process,
    record,
    service_env,
    steal_percent,
    storage_of,
    wait_http,
)

# The requests bench.loadgen sends before its clock starts (its --warmup default).
WARMUP_REQUESTS = 1000
# The processes whose CPU a closed run accounts for.
_PARTS = ("generator", "server", "postgres", "redis")


def loadgen(url: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [PYTHON, "-m", "bench.loadgen", url, *args], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def _flush(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--open-duration", type=float, default=20.0)
    parser.add_argument(
        "--log-batch-ms", type=int, default=None, help="the receiver's BW_LOG_BATCH_MS (0: unbatched)"
    )
    parser.add_argument("--payload", choices=("snapshot", "thin"), default="snapshot")
    args = parser.parse_args(argv)
    tag = f"{int(time.time())}"
    with private_servers(args.workdir, storage=storage_of(args)) as servers:
        logdir = Path("/tmp")
        rport, bport = free_port(), free_port()
        env = service_env(servers, BW_RECEIVER_HOST="127.0.0.1", BW_RECEIVER_PORT=str(rport))
        if args.log_batch_ms is not None:
            env["BW_LOG_BATCH_MS"] = str(args.log_batch_ms)
        receiver_args = [PYTHON, "-m", "worker.cli.main", "receiver"]
        with (
            process(receiver_args, env, logdir / f"bench-receiver-{tag}.log") as receiver,
            process([PYTHON, "-m", "bench.bare_server", str(bport)], env) as bare,
        ):
            wait_http(f"http://127.0.0.1:{rport}/healthz")
            wait_http(f"http://127.0.0.1:{bport}/healthz")
            rurl = f"http://127.0.0.1:{rport}/webhooks/stripe"
            burl = f"http://127.0.0.1:{bport}/webhooks/stripe"
            closed = [
                "--concurrency",
                str(args.concurrency),
                "--requests",
                str(args.requests),
                "--payload",
                args.payload,
            ]
            runs: dict[str, list[dict[str, Any]]] = {"receiver": [], "bare": []}
            steal = []
            with RssSampler({"receiver": receiver.pid, "bare": bare.pid}) as rss:
                for i in range(args.repeat):
                    order = ("bare", "receiver") if i % 2 == 0 else ("receiver", "bare")
                    for side in order:
                        url = rurl if side == "receiver" else burl
                        with CpuSplit(receiver.pid if side == "receiver" else bare.pid, servers) as split:
                            runs[side].append(loadgen(url, "--prefix", f"{tag}c{i}{side[0]}", *closed))
                        run = runs[side][-1]
                        # Per request sent: the generator's warm-up requests used the servers too.
                        split_ms = split.per_request_ms(args.requests + WARMUP_REQUESTS)
                        split_ms["generator"] = run["generator_cpu_ms_per_request"]
                        run["cpu_ms_per_request"] = split_ms["server"]
                        run["cpu_split_ms"] = split_ms
                        # Cores each process kept busy at the measured rate (2 on this machine).
                        run["cores"] = {
                            part: round(ms * run["rps"] / 1000, 2) for part, ms in split_ms.items()
                        }
                        print(side, runs[side][-1], file=sys.stderr)
                        _flush(servers.redis_url)
                    steal.append(steal_percent(0.5))
                max_rps = median([r["rps"] for r in runs["receiver"]])
                half = round(max_rps / 2)
                open_runs: dict[str, list[dict[str, Any]]] = {"receiver": [], "bare": []}
                for i in range(args.repeat):
                    for side in ("receiver", "bare"):
                        url = rurl if side == "receiver" else burl
                        open_runs[side].append(
                            loadgen(
                                url,
                                "--prefix",
                                f"{tag}o{i}{side[0]}",
                                "--rate",
                                str(half),
                                "--duration",
                                str(args.open_duration),
                                "--payload",
                                args.payload,
                            )
                        )
                        print(side, "open", open_runs[side][-1], file=sys.stderr)
                        _flush(servers.redis_url)

    def summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "rps_median": median([r["rps"] for r in rs]),
            "rps_runs": [r["rps"] for r in rs],
            "p50_ms": median([r["latency_ms"]["p50"] for r in rs]),
            "p99_ms": median([r["latency_ms"]["p99"] for r in rs]),
            "p99.9_ms": median([r["latency_ms"]["p99.9"] for r in rs]),
            "non_200": sum(v for r in rs for k, v in r["statuses"].items() if k != "200"),
            "server_cpu_ms_per_request": median([r["cpu_ms_per_request"] for r in rs]),
            # Median per part over the runs: which process ran out of CPU on this side.
            "cpu_ms_per_request": {part: median([r["cpu_split_ms"][part] for r in rs]) for part in _PARTS},
            "cores": {part: median([r["cores"][part] for r in rs]) for part in _PARTS},
        }

    def open_summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "rate": half,
            "achieved_rps_median": median([r["achieved_rps"] for r in rs]),
            "p50_ms": median([r["latency_ms"]["p50"] for r in rs]),
            "p99_ms": median([r["latency_ms"]["p99"] for r in rs]),
            "p99_runs": [r["latency_ms"]["p99"] for r in rs],
            "p99.9_ms": median([r["latency_ms"]["p99.9"] for r in rs]),
            "non_200": sum(v for r in rs for k, v in r["statuses"].items() if k != "200"),
            # Per run, how many seconds held an answer slower than the p99 target: a few means
            # stalls, most means the tail is spread over the run.
            "seconds_over_25ms": [sum(ms > 25 for ms in r["max_ms_by_second"]) for r in rs],
            "seconds": len(rs[0]["max_ms_by_second"]) if rs else 0,
        }

    rec, base = summary(runs["receiver"]), summary(runs["bare"])
    ratio = round(rec["rps_median"] / base["rps_median"], 3)
    figures = {
        "concurrency": args.concurrency,
        "payload": args.payload,
        "requests_per_run": args.requests,
        "repeat": args.repeat,
        "log_batch_ms": 20 if args.log_batch_ms is None else args.log_batch_ms,
        "receiver": rec,
        "receiver_half_rate_open_loop": open_summary(open_runs["receiver"]),
        "bare_half_rate_open_loop": open_summary(open_runs["bare"]),
        "peak_rss_mb": rss.peak_mb,
        "cpu_s": rss.cpu_s,
        "steal_pct": steal,
        "targets": {
            "ratio_ge_0.5": ratio >= 0.5,
            "half_rate_p99_le_25ms": open_summary(open_runs["receiver"])["p99_ms"] <= 25,
            "receiver_rss_lt_150mb": rss.peak_mb["receiver"] < 150,
        },
    }
    record(
        "ingest",
        figures,
        baseline=base,
        ratio=ratio,
        versions=servers.versions,
        results=args.results,
        argv=argv,
        storage=storage_of(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
