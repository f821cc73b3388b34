"""The headline benchmark: Stripe events/s the service, run as a user runs it, takes in and applies.

``billing-worker run`` (every role, one command, ``--service-args`` appended) against a private
durable PostgreSQL and Redis receives the committed event set (``bench/data/
throughput-events.jsonl.gz``, made by ``bench.make_throughput_events``: ~2,100 distinct events of
9 types for 380 workspaces, ~5 % posted twice, ~10 % posted before an earlier event of their
workspace) from ``bench.loadgen`` (its own process; bodies signed before the clock) at each
concurrency. Each service run gets a new database, an empty Redis and a freshly started service,
ready before the clock. Per run:

* **acknowledged/s**: 2xx answers over the posting window (first send → last answer);
* **fully processed/s**: distinct events over first send → the commit that made the last event
  terminal (``processed``/``ignored``/``dead``); afterwards every workspace is read through
  ``GET /v1/workspaces/{id}`` and must show the state its events imply (``bench.throughput_expect``),
  else the run fails;
* **post → visible** p50/p99 per event: its first send instant → the commit timestamp of the
  transaction that made its inbox row terminal (``track_commit_timestamp = on`` on the private
  server: exact, and the service does nothing extra; ``processed_at`` is stamped before the
  commit and is reported beside it);
* **CPU ms per fully processed event** of the service (the ``run`` process and all its
  children), PostgreSQL (postmaster and backends), Redis and the generator apart.

In the same invocation, interleaved (service c16, bare c16, service c64, bare c64, repeated),
``bench.bare_server`` (aiohttp answering 200) gets the same posts from the same generator: the
machine's speed. Medians and min-max of ``--repeat`` rounds.

    python -m bench.throughput [--repeat 5] [--concurrency 16 64] [--limit N] [--service-args "..."]
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from bench.common import (
    PYTHON,
    ROOT,
    TOKEN,
    Servers,
    TreeCpu,
    base_parser,
    free_port,
    median,
    percentiles,
    private_servers,
    process,
    record,
    service_env,
    steal_percent,
    storage_of,
    wait_http,
)
from bench.make_throughput_events import OUT as EVENTS
from bench.throughput_expect import expected_states, mismatches

TERMINAL = ("processed", "ignored", "dead")


def _bodies(limit: int | None) -> list[str]:
    with gzip.open(EVENTS, "rt", encoding="utf-8") as fh:
        bodies = [line.rstrip("\n") for line in fh if line.strip()]
    return bodies[:limit] if limit else bodies


def _loadgen(url: str, concurrency: int, limit: int | None, sent_out: Path) -> dict[str, Any]:
    args = [PYTHON, "-m", "bench.loadgen", url, "--events-file", str(EVENTS)]
    args += ["--concurrency", str(concurrency), "--sent-out", str(sent_out)]
    args += ["--limit", str(limit)] if limit else []
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


async def _fresh_database(servers: Servers, name: str) -> str:
    admin = servers.database_url.rsplit("/", 1)[0] + "/postgres"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    r = Redis.from_url(servers.redis_url)
    await r.flushall()
    await r.aclose()
    return servers.database_url.rsplit("/", 1)[0] + f"/{name}"


async def _drop_database(servers: Servers, name: str) -> None:
    conn = await asyncpg.connect(servers.database_url.rsplit("/", 1)[0] + "/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _wal_and_xid(url: str) -> tuple[str, int]:
    """The WAL position and the next transaction id: their growth over a run is the WAL written
    and the write transactions committed (each takes an id; read-only ones take none)."""
    conn = await asyncpg.connect(url)
    try:
        lsn, xid = await conn.fetchrow(
            "SELECT pg_current_wal_lsn()::text, pg_current_xact_id()::text::bigint"
        )
        return str(lsn), int(xid)
    finally:
        await conn.close()


async def _wal_bytes(url: str, since: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", since)
        )
    finally:
        await conn.close()


async def _wait_terminal(url: str, distinct: int, timeout: float) -> list[asyncpg.Record]:
    """Poll (every 50 ms, an index-only count) until every event is stored and terminal."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            total, open_ = await conn.fetchrow(
                "SELECT count(*), count(*) FILTER (WHERE status <> ALL($1::text[])) FROM webhook_events",
                list(TERMINAL),
            )
            if total >= distinct and open_ == 0:
                break
            if time.monotonic() > deadline:
                stuck = await conn.fetch(
                    "SELECT status, outcome, count(*) FROM webhook_events GROUP BY 1, 2 ORDER BY 3 DESC"
                )
                raise RuntimeError(
                    f"not fully processed after {timeout:.0f} s: {total}/{distinct} stored, {open_} "
                    f"not terminal; {[tuple(r) for r in stuck]}"
                )
            await asyncio.sleep(0.05)
        return await conn.fetch(
            "SELECT event_id, status, outcome, extract(epoch FROM processed_at) AS stamped, "
            "extract(epoch FROM pg_xact_commit_timestamp(xmin)) AS committed FROM webhook_events"
        )
    finally:
        await conn.close()


async def _verify(api: str, expected: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Read every workspace through the internal API; the differences from ``expected``."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    wrong: dict[str, Any] = {}
    sem = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as http:

        async def one(ws: str) -> None:
            async with sem, http.get(f"{api}/v1/workspaces/{ws}", headers=headers) as resp:
                doc = await resp.json() if resp.status == 200 else {"http_status": resp.status}
            if diff := mismatches(expected[ws], doc):
                wrong[ws] = diff

        await asyncio.gather(*(one(ws) for ws in expected))
    return wrong


def service_run(
    servers: Servers, args: Any, concurrency: int, name: str, expected: dict[str, Any], distinct: int
) -> dict[str, Any]:
    url = asyncio.run(_fresh_database(servers, name))
    rport, aport = free_port(), free_port()
    env = service_env(servers, BW_RECEIVER_HOST="127.0.0.1", BW_RECEIVER_PORT=str(rport))
    env.update(DATABASE_URL=url, BW_INTERNAL_HOST="127.0.0.1", BW_INTERNAL_PORT=str(aport))
    command = [PYTHON, "-m", "worker.cli.main", "run", *shlex.split(args.service_args)]
    log = Path(tempfile.gettempdir()) / f"bench-throughput-{name}.log"
    with process(command, env, log) as service, tempfile.NamedTemporaryFile(suffix=".json") as sent:
        wait_http(f"http://127.0.0.1:{rport}/readyz", timeout=60)
        wait_http(f"http://127.0.0.1:{aport}/readyz", timeout=60)
        cpu = TreeCpu(
            {"service": service.pid, "postgres": servers.postgres_pid, "redis": servers.redis_pid},
            alone={"service_main": service.pid},  # receiver + API (+ the worker with 0 processes)
        )
        lsn, xid = asyncio.run(_wal_and_xid(url))
        cpu.start()
        gen = _loadgen(f"http://127.0.0.1:{rport}/webhooks/stripe", concurrency, args.limit, Path(sent.name))
        rows = asyncio.run(_wait_terminal(url, distinct, args.timeout))
        cpu_s = cpu.stop()
        wal = asyncio.run(_wal_bytes(url, lsn))
        transactions = asyncio.run(_wal_and_xid(url))[1] - xid - 1  # the second read takes one
        sends = json.loads(Path(sent.name).read_text())
        wrong = asyncio.run(_verify(f"http://127.0.0.1:{aport}", expected))
        if service.poll() is not None:
            raise RuntimeError(f"the service exited ({service.returncode}); log: {log}")
    asyncio.run(_drop_database(servers, name))
    first_send: dict[str, float] = {}
    for event_id, at, _ms, _status in sorted(sends, key=lambda s: s[1]):
        first_send.setdefault(event_id, at)
    committed = [float(r["committed"]) for r in rows]
    visible = [(float(r["committed"]) - first_send[r["event_id"]]) * 1000 for r in rows]
    stamped = [(float(r["stamped"]) - first_send[r["event_id"]]) * 1000 for r in rows if r["stamped"]]
    window = max(committed) - gen["first_send"]
    outcomes: dict[str, int] = {}
    for r in rows:
        key = f"{r['status']}/{r['outcome']}"
        outcomes[key] = outcomes.get(key, 0) + 1
    run = {
        "side": "service",
        "concurrency": concurrency,
        "posts": gen["requests"],
        "distinct_events": len(rows),
        "statuses": gen["statuses"],
        "acked_per_s": gen["acked_rps"],
        "ack_ms": gen["latency_ms"],
        "processed_per_s": round(len(rows) / window, 1),
        "fully_processed_s": round(window, 3),
        "visible_ms": percentiles(visible, (50, 99)),
        "stamped_ms": percentiles(stamped, (50, 99)),
        "outcomes": outcomes,
        "cpu_ms_per_event": {k: round(1000 * v / len(rows), 3) for k, v in cpu_s.items()}
        | {"generator": round(1000 * gen["generator_cpu_s"] / len(rows), 3)},
        "mismatched_workspaces": len(wrong),
        # PostgreSQL's side of durability: WAL written and write transactions (commits, each a
        # WAL flush) per event, the service's and the bench's few.
        "wal_bytes_per_event": round(wal / len(rows)),
        "write_transactions_per_event": round(transactions / len(rows), 4),
    }
    if wrong or gen["acked"] != gen["requests"]:
        print(json.dumps(run, indent=2), file=sys.stderr)
        sample = dict(list(wrong.items())[:5])
        raise RuntimeError(
            f"{len(wrong)} workspaces differ from their events' final state (e.g. {sample}); "
            f"{gen['requests'] - gen['acked']} posts not acknowledged; log: {log}"
        )
    return run


def bare_run(port: int, pid: int, concurrency: int, limit: int | None) -> dict[str, Any]:
    cpu = TreeCpu({"bare": pid})
    with tempfile.NamedTemporaryFile(suffix=".json") as sent:
        cpu.start()
        gen = _loadgen(f"http://127.0.0.1:{port}/webhooks/stripe", concurrency, limit, Path(sent.name))
        cpu_s = cpu.stop()["bare"]
    return {
        "side": "bare",
        "concurrency": concurrency,
        "posts": gen["requests"],
        "statuses": gen["statuses"],
        "rps": gen["rps"],
        "ms": gen["latency_ms"],
        "cpu_ms_per_request": {
            "bare": round(1000 * cpu_s / gen["requests"], 3),
            "generator": gen["generator_cpu_ms_per_request"],
        },
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": median(values), "min": min(values), "max": max(values)}


def _all_cpu(cpu: dict[str, float]) -> float:
    return round(cpu["service"] + cpu["postgres"] + cpu["redis"], 3)


def summarise(runs: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    svc = [r for r in runs if r["side"] == "service" and r["concurrency"] == concurrency]
    bare = [r for r in runs if r["side"] == "bare" and r["concurrency"] == concurrency]
    parts = svc[0]["cpu_ms_per_event"].keys()
    ratios = [s["processed_per_s"] / b["rps"] for s, b in zip(svc, bare, strict=True)]
    return {
        "acked_per_s": _spread([r["acked_per_s"] for r in svc]),
        "processed_per_s": _spread([r["processed_per_s"] for r in svc]),
        "visible_p50_ms": _spread([r["visible_ms"]["p50"] for r in svc]),
        "visible_p99_ms": _spread([r["visible_ms"]["p99"] for r in svc]),
        "cpu_ms_per_event": {p: median([r["cpu_ms_per_event"][p] for r in svc]) for p in parts},
        # Service + PostgreSQL + Redis per event, each round's sum (the "all processes").
        "cpu_ms_per_event_all": _spread([_all_cpu(r["cpu_ms_per_event"]) for r in svc]),
        "wal_bytes_per_event": median([r["wal_bytes_per_event"] for r in svc]),
        "write_transactions_per_event": median([r["write_transactions_per_event"] for r in svc]),
        "bare_rps": _spread([r["rps"] for r in bare]),
        "bare_cpu_ms_per_request": median([r["cpu_ms_per_request"]["bare"] for r in bare]),
        # At a whole core the bare side measures the generator (2 vCPU here), not aiohttp.
        "bare_generator_cpu_ms_per_request": median([r["cpu_ms_per_request"]["generator"] for r in bare]),
        # Per round (same minute), then the median: the machine's speed moves between rounds.
        "ratio_processed_to_bare": _spread([round(x, 3) for x in ratios]),
    }


def _table(summary: dict[int, dict[str, Any]], storage: str) -> str:
    """The medians as a Markdown table (min-max in brackets), ready for bench/README.md."""

    def sp(d: dict[str, float], fmt: str = ".0f") -> str:
        return f"{d['median']:{fmt}} ({d['min']:{fmt}}-{d['max']:{fmt}})"

    lines = [
        f"storage: {storage}",
        "| concurrency | acknowledged/s | fully processed/s | post → visible p50 / p99 ms "
        "| CPU ms/event: service (main), PostgreSQL, Redis = all; generator "
        "| bare aiohttp req/s | processed ÷ bare |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, s in summary.items():
        cpu = s["cpu_ms_per_event"]
        lines.append(
            f"| {c} | {sp(s['acked_per_s'])} | {sp(s['processed_per_s'])} "
            f"| {s['visible_p50_ms']['median']:.0f} / {s['visible_p99_ms']['median']:.0f} "
            f"| {cpu['service']:.3f} ({cpu['service_main']:.3f}), {cpu['postgres']:.3f}, {cpu['redis']:.3f} "
            f"= {s['cpu_ms_per_event_all']['median']:.3f}; {cpu['generator']:.3f} "
            f"| {sp(s['bare_rps'])} | {sp(s['ratio_processed_to_bare'], '.3f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.set_defaults(repeat=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--limit", type=int, default=None, help="post only the set's first N bodies")
    parser.add_argument("--service-args", default="", help="appended to `billing-worker run` (default: none)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for full processing")
    args = parser.parse_args(argv)
    storage = storage_of(args)
    bodies = _bodies(args.limit)
    expected = expected_states(bodies)
    distinct = len({json.loads(b)["id"] for b in bodies})
    tag = str(int(time.time()))
    runs: list[dict[str, Any]] = []
    steal: list[float] = []
    # Exact commit instants (post → visible); the service's work is unchanged by it.
    with private_servers(args.workdir, storage=storage, settings={"track_commit_timestamp": "on"}) as servers:
        bport = free_port()
        env = service_env(servers)
        with process([PYTHON, "-m", "bench.bare_server", str(bport)], env) as bare:
            wait_http(f"http://127.0.0.1:{bport}/healthz")
            for i in range(args.repeat):
                for c in args.concurrency:
                    runs.append(service_run(servers, args, c, f"tp_{tag}_{i}_{c}", expected, distinct))
                    print(json.dumps(runs[-1]), file=sys.stderr)
                    runs.append(bare_run(bport, bare.pid, c, args.limit))
                    print(json.dumps(runs[-1]), file=sys.stderr)
                steal.append(steal_percent(0.5))
        versions = servers.versions
    summary = {c: summarise(runs, c) for c in args.concurrency}
    figures = {
        "storage": storage,
        "service_command": " ".join(["billing-worker", "run", *shlex.split(args.service_args)]),
        "event_set": {"file": str(EVENTS.relative_to(ROOT)), "posts": len(bodies), "distinct": distinct},
        "workspaces": len(expected),
        "repeat": args.repeat,
        "medians": summary,
        "runs": runs,
        "steal_pct": steal,
    }
    # The result line's ratio: fully processed ÷ bare at the highest concurrency.
    ratio = summary[max(args.concurrency)]["ratio_processed_to_bare"]["median"]
    record(
        "throughput",
        figures,
        baseline={c: s["bare_rps"] for c, s in summary.items()},
        ratio=ratio,
        versions=versions,
        results=args.results,
        argv=argv,
        storage=storage,
    )
    print(_table(summary, storage))
    return 0


if __name__ == "__main__":
    sys.exit(main())
