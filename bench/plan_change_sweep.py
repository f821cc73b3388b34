"""The period-end sweep firing N due plan changes (issue 6): how long until all are applied.

    python -m bench.plan_change_sweep [--changes 10000] [--concurrency 8] [--timeout 1800]
                                      [--stripe-delay 0.3] [--keep]

Setup, all through the service's own code on a private PostgreSQL and Redis (``worker.dev``):
N ``customer.subscription.created`` events (Business Yearly, 5 seats, one workspace each) are
COPYed into the inbox and processed by ``EventProcessor.process`` (the worker's unit of work), then
``plan_changes.request_change`` (what ``POST /v1/workspaces/{id}/plan-changes`` calls) stores a
downgrade to Plus Monthly for each: N ``pending`` ``at_period_end`` changes, fire time = period end -
``policy.fire_lead_seconds``. The API's deferred ``fire_plan_change`` jobs are *not* queued: only
the sweep fires (the case it exists for: Redis lost the deferred jobs, or they never ran).

Measured: ``tests.support.stripe_server.StripeServer`` runs as its own process (``bench.stripe_proc``)
seeded with the N subscriptions; the service's ``build_worker`` runs as its own process
(``bench.plan_change_worker``) with its clock moved to just after the fire time, and does what it
does in production (cron ``sweep_plan_changes`` every 10 s). Figures: first sweep start → last
change ``applied``, changes/s, sweep runs and what each applied, Stripe requests (asserted: exactly
N updates, N distinct idempotency keys, nothing replayed, every change fired once), PostgreSQL
transactions / buffer hits / CPU per change, worker CPU per change, EXPLAIN of the sweep's query.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
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
    process,
    record,
    service_env,
    storage_of,
)
from handlers.plan_policy import AT_PERIOD_END, ChangeRequest
from tests.support import stripe_factory as sf
from worker.config import Settings
from worker.plan_changes import requests as plan_changes
from worker.plan_changes.store import due_changes
from worker.services import Services

START = sf.T0  # 2026-10-06T09:00Z
ANNUAL_END = sf.period_end_for("price_business_annual", START)
GB = 1024**3
TABLES = ("plan_changes", "workspaces", "subscriptions", "invoices", "audit_log", "customers")


def _ids(i: int) -> tuple[str, str, str]:
    return f"ws_pcb{i}", f"cus_pcb{i}", f"sub_pcb{i}"


def subscription_events(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        ws, cus, sub = _ids(i)
        out.append(
            sf.subscription_event(
                "created",
                api_version=sf.ENDIVE,
                created=START,
                sub_id=sub,
                customer=cus,
                workspace_id=ws,
                status="active",
                items=[("price_business_annual", 5)],
                period_start=START,
                period_end=ANNUAL_END,
                start_date=START,
                event_id=f"evt_pcb{i}",
            )
        )
    return out


@contextlib.contextmanager
def stripe_process(
    seed: Path, summary: Path, log: Path, delay: float = 0.0
) -> Iterator[tuple[subprocess.Popen[bytes], dict]]:
    """``bench.stripe_proc``; yields (process, {url, api_key}); SIGTERM makes it write ``summary``."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    argv = [PYTHON, "-m", "bench.stripe_proc", "--seed", str(seed), "--summary", str(summary)]
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [*argv, "--delay", str(delay)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"bench.stripe_proc did not start; see {log}")
            yield proc, json.loads(line)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def _gather_limited(n: int, coros: list[Any]) -> list[Any]:
    sem = asyncio.Semaphore(n)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def setup(settings: Settings, events: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    """Workspaces from real events, then one pending period-end change each via ``request_change``."""
    clock_at = [datetime.fromtimestamp(START, UTC) + timedelta(days=30)]
    services = await Services.start(settings, clock=lambda: clock_at[0])
    figures: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        rows = [
            (e["id"], e["type"], e["api_version"], datetime.fromtimestamp(e["created"], UTC), json.dumps(e))
            for e in events
        ]
        async with services.pool.acquire() as conn:
            await conn.copy_records_to_table(
                "webhook_events",
                records=rows,
                columns=["event_id", "type", "api_version", "created", "payload"],
            )
        results = await _gather_limited(concurrency, [services.processor.process(e["id"]) for e in events])
        bad = [r for r in results if r.status != "processed"]
        assert not bad, bad[:3]
        figures["workspaces_s"] = round(time.perf_counter() - t0, 1)

        t0 = time.perf_counter()
        request = ChangeRequest("plus", "monthly", 5, "billing_admin", 4, 10 * GB)
        outcomes = await _gather_limited(
            concurrency,
            [
                plan_changes.request_change(services, _ids(i)[0], request, f"req_bench_{i}")
                for i in range(len(events))
            ],
        )
        kinds = {(o.decision.kind, o.change["status"]) for o in outcomes}
        assert kinds == {(AT_PERIOD_END, "pending")}, kinds
        figures["plan_changes_s"] = round(time.perf_counter() - t0, 1)
        fire_at = {o.defer_until for o in outcomes}
        assert len(fire_at) == 1, fire_at
        figures["fire_at"] = fire_at.pop().isoformat()
        await services.pool.execute("VACUUM ANALYZE")
    finally:
        await services.close()
    return figures


async def due_query(settings: Settings, now: datetime) -> tuple[str, tuple[Any, ...]]:
    """The exact statement and arguments ``plan_changes.store.due_changes`` sends at ``now``."""
    captured: dict[str, Any] = {}

    async def fetch(sql: str, *args: Any) -> list[Any]:
        captured.update(sql=sql, args=args)
        return []

    await due_changes(SimpleNamespace(fetch=fetch), settings, now)  # type: ignore[arg-type]
    return captured["sql"], captured["args"]


async def explain(url: str, sql: str, args: tuple[Any, ...], *, analyze_first: bool = False) -> str:
    conn = await asyncpg.connect(url)
    try:
        if analyze_first:  # the steady state once autovacuum has seen the run's updates
            await conn.execute("ANALYZE plan_changes, workspaces")
        lines = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", *args)
    finally:
        await conn.close()
    return " | ".join(r[0].strip() for r in lines)


async def db_counters(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        db = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback, blks_read, blks_hit, tup_returned, tup_fetched, "
            "tup_inserted, tup_updated FROM pg_stat_database WHERE datname = current_database()"
        )
        tables = await conn.fetch(
            "SELECT relname, seq_scan, idx_scan FROM pg_stat_user_tables WHERE relname = ANY($1::text[])",
            list(TABLES),
        )
    finally:
        await conn.close()
    return {
        "db": dict(db),
        "seq_scan": {r["relname"]: r["seq_scan"] for r in tables},
        "idx_scan": {r["relname"]: r["idx_scan"] for r in tables},
    }


async def statuses(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM plan_changes GROUP BY status")
    finally:
        await conn.close()
    return {r["status"]: r["n"] for r in rows}


async def final_rows(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        return dict(
            await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'applied') AS applied, "
                "count(*) FILTER (WHERE attempts <> 1) AS attempts_not_1, "
                "min(applied_at) AS first_applied, max(applied_at) AS last_applied, "
                "count(DISTINCT idempotency_key) AS keys FROM plan_changes"
            )
        )
    finally:
        await conn.close()


def run(args: Any, servers: Servers, tmp: Path) -> dict[str, Any]:
    n = args.changes
    events = subscription_events(n)
    seed = tmp / "stripe_objects.json"
    seed.write_text(json.dumps([e["data"]["object"] for e in events]))
    summary_path = tmp / "stripe_summary.json"
    sweep_log = tmp / "sweeps.jsonl"
    figures: dict[str, Any] = {"changes": n, "stripe_delay_s": args.stripe_delay}
    stripe_log = tmp / "stripe.log"
    with stripe_process(seed, summary_path, stripe_log, args.stripe_delay) as (stripe, stripe_info):
        env = service_env(
            servers,
            STRIPE_API_KEY=stripe_info["api_key"],
            STRIPE_API_BASE=stripe_info["url"],
            BW_LOG_LEVEL="info",
        )
        settings = Settings.from_env(env)
        figures["setup"] = asyncio.run(setup(settings, events, args.concurrency))
        print(f"setup: {figures['setup']}", file=sys.stderr)
        fire_at = datetime.fromisoformat(figures["setup"]["fire_at"])
        # The worker's clock: 1 s past the fire time at the moment it starts, then moving with the wall.
        offset = (fire_at + timedelta(seconds=1) - datetime.now(UTC)).total_seconds()
        sql, qargs = asyncio.run(due_query(settings, fire_at + timedelta(seconds=1)))
        figures["explain_due_all_pending"] = asyncio.run(explain(servers.database_url, sql, qargs))
        early = asyncio.run(due_query(settings, fire_at - timedelta(days=1)))
        figures["explain_due_none_due_yet"] = asyncio.run(explain(servers.database_url, *early))
        before = asyncio.run(db_counters(servers.database_url))
        env.update(BENCH_CLOCK_OFFSET_SECONDS=str(offset), BENCH_SWEEP_LOG=str(sweep_log))
        started = time.time()
        timeline: list[tuple[float, int]] = []
        with (
            process([PYTHON, "-m", "bench.plan_change_worker"], env, log=tmp / "worker.log") as worker,
            RssSampler(
                {"worker": worker.pid, "stripe": stripe.pid}, postgres_pid=servers.postgres_pid
            ) as rss,
        ):
            deadline = time.monotonic() + args.timeout
            while True:
                time.sleep(0.5)
                counts = asyncio.run(statuses(servers.database_url))
                done = counts.get("applied", 0) + counts.get("failed", 0)
                timeline.append((round(time.time() - started, 1), counts.get("applied", 0)))
                if done >= n or worker.poll() is not None or time.monotonic() > deadline:
                    break
            time.sleep(1.0)  # a sweep still running notices nothing left; pg_stat counters flush
        after = asyncio.run(db_counters(servers.database_url))
        figures["explain_due_none_left"] = asyncio.run(
            explain(
                servers.database_url,
                *asyncio.run(due_query(settings, fire_at + timedelta(hours=1))),
                analyze_first=True,
            )
        )
    final = asyncio.run(final_rows(servers.database_url))
    stripe_summary = json.loads(summary_path.read_text())
    sweeps = [json.loads(line) for line in sweep_log.read_text().splitlines()] if sweep_log.exists() else []
    first_sweep = min((s["start"] for s in sweeps), default=started)
    last_applied = final["last_applied"].timestamp() - offset if final["last_applied"] else None
    elapsed = (last_applied - first_sweep) if last_applied else None
    working = [s for s in sweeps if s["applied"]]
    figures.update(
        statuses=asyncio.run(statuses(servers.database_url)),
        worker_start_to_first_sweep_s=round(first_sweep - started, 2),
        first_sweep_to_all_applied_s=round(elapsed, 2) if elapsed else None,
        changes_per_s=round(final["applied"] / elapsed, 1) if elapsed else None,
        sweep_runs=len(sweeps),
        sweep_runs_that_applied=len(working),
        applied_per_sweep_run=sorted({s["applied"] for s in working}),
        sweep_run_s=percentiles([s["end"] - s["start"] for s in working], (50, 100)),
        sweep_run_s_median=median([s["end"] - s["start"] for s in working]) if working else None,
        sweep_errors=[s["error"] for s in sweeps if s["error"]],
        busy_fraction=round(sum(s["end"] - s["start"] for s in working) / elapsed, 3) if elapsed else None,
        progress=timeline[:: max(1, len(timeline) // 40)],
        stripe=stripe_summary,
        rows=final
        | {"first_applied": str(final["first_applied"]), "last_applied": str(final["last_applied"])},
    )
    applied = max(final["applied"], 1)
    d = {k: after["db"][k] - before["db"][k] for k in after["db"]}
    figures["per_change"] = {
        "pg_transactions": round(d["xact_commit"] / applied, 2),
        "pg_rollbacks": round(d["xact_rollback"] / applied, 2),
        "pg_buffer_hits": round(d["blks_hit"] / applied, 1),
        "pg_buffer_reads": round(d["blks_read"] / applied, 2),
        "pg_tuples_returned": round(d["tup_returned"] / applied, 1),
        "pg_tuples_fetched": round(d["tup_fetched"] / applied, 1),
        "pg_tuples_inserted": round(d["tup_inserted"] / applied, 2),
        "pg_tuples_updated": round(d["tup_updated"] / applied, 2),
        "pg_cpu_ms": round(1000 * rss.cpu_s.get("postgres", 0) / applied, 3),
        "worker_cpu_ms": round(1000 * rss.cpu_s.get("worker", 0) / applied, 3),
        "worker_cpu_ms_in_sweeps": round(1000 * sum(s["cpu_s"] for s in working) / applied, 3),
        "stripe_server_cpu_ms": round(1000 * rss.cpu_s.get("stripe", 0) / applied, 3),
    }
    figures["cpu_s"] = rss.cpu_s
    figures["peak_rss_mb"] = rss.peak_mb
    figures["seq_scans_during_run"] = {
        t: after["seq_scan"][t] - before["seq_scan"].get(t, 0) for t in after["seq_scan"]
    }
    figures["seq_scan_in_due_plans"] = [
        k
        for k in ("explain_due_all_pending", "explain_due_none_due_yet", "explain_due_none_left")
        if "Seq Scan" in figures[k]
    ]
    figures["checks"] = {
        "all_applied": final["applied"] == n,
        "stripe_updates_exactly_n": stripe_summary["subscription_updates"] == n,
        "stripe_applied_exactly_n": stripe_summary["updates_applied"] == n,
        "no_key_sent_twice": stripe_summary["keys_sent_more_than_once"] == 0,
        "every_change_one_attempt": final["attempts_not_1"] == 0,
    }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10_000, help="workspaces with a due change")
    parser.add_argument("--concurrency", type=int, default=8, help="setup only: requests in flight")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    parser.add_argument(
        "--stripe-delay", type=float, default=0.0, help="seconds the Stripe stand-in adds to every answer"
    )
    parser.add_argument("--keep", action="store_true", help="keep the worker/Stripe logs (printed path)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bw-pcsweep-"))
    with private_servers(args.workdir, storage=storage_of(args)) as servers:
        figures = run(args, servers, tmp)
        versions = servers.versions
    if args.keep:
        print(f"logs: {tmp}", file=sys.stderr)
    else:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    record(
        "plan_change_sweep",
        figures,
        versions=versions,
        results=args.results,
        argv=argv,
        storage=storage_of(args),
    )
    failed = [k for k, ok in figures["checks"].items() if not ok]
    if failed:
        print(f"FAILED checks: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
