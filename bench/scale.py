"""Benchmark 4 (scale): per-event processing cost with 1,000 and with 1,000,000 workspaces.

Two databases on one private PostgreSQL, bulk-loaded with ``generate_series`` from one template
workspace (workspace + customer mapping + subscription + audit entry + inbox row per workspace,
three paid invoices, then ANALYZE). The same ``customer.subscription.updated`` events for random existing workspaces
are then processed one at a time through ``EventProcessor.process`` (the worker's unit of work)
in alternating blocks against the two databases, so both sides see the same machine noise.
"No scans" is checked two ways: the sequential-scan counters of the hot tables must not move
while events are processed, and EXPLAIN of the hot statements is recorded.

The period-end sweep firing 10,000 due plan changes is ``bench.plan_change_sweep``;
``--plan-changes`` runs it with ``--changes 10000`` instead of the above.

    python -m bench.scale [--small 1000] [--large 1000000] [--events 2000]
    python -m bench.scale --plan-changes     # = python -m bench.plan_change_sweep --changes 10000
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench.common import base_parser, median, percentiles, private_servers, record, storage_of
from bench.events import event_body
from worker.clock import utcnow
from worker.processing.unit_of_work import EventProcessor
from worker.services import load_catalog
from worker.storage.db import create_pool

TEMPLATE = "ws_btemplate"
HOT_TABLES = ("workspaces", "customers", "subscriptions", "invoices", "webhook_events", "audit_log")

# The statements of a batch's transaction (worker/storage/), for a batch holding the template's
# event; the write statement's joins are explained one table at a time (document-driven updates).
EXPLAINED = {
    "lock_events": "SELECT event_id, type, payload, status, attempts, created FROM webhook_events "
    "WHERE event_id = ANY('{evt_btemplate_created}'::text[]) ORDER BY event_id FOR UPDATE",
    "workspaces_for_customers": "SELECT customer_id, workspace_id FROM customers "
    "WHERE customer_id = ANY('{cus_ws_btemplate}'::text[])",
    "lock_workspaces": "SELECT workspace_id, customer_id, version, view FROM workspaces "
    "WHERE workspace_id = ANY('{ws_btemplate}'::text[]) ORDER BY workspace_id FOR UPDATE",
    "load_observations": "SELECT 's', workspace_id, snapshot FROM subscriptions "
    "WHERE workspace_id = ANY('{ws_btemplate}'::text[]) UNION ALL "
    "SELECT 'i', workspace_id, snapshot FROM invoices WHERE workspace_id = ANY('{ws_btemplate}'::text[]) "
    "AND (status IN ('open', 'uncollectible') OR invoice_id = ANY('{in_x}'::text[]))",
    "write_workspaces": "UPDATE workspaces w SET version = t.version "
    'FROM jsonb_to_recordset(\'[{"id": "ws_btemplate", "version": 1}]\') AS t(id text, version bigint) '
    "WHERE w.workspace_id = t.id AND w.workspace_id = ANY('{ws_btemplate}'::text[])",
    "write_finish_events": "UPDATE webhook_events e SET attempts = e.attempts + 1 "
    'FROM jsonb_to_recordset(\'[{"id": "evt_btemplate_created"}]\') AS t(id text) '
    "WHERE e.event_id = t.id AND e.event_id = ANY('{evt_btemplate_created}'::text[])",
    "unmatched_for_customers": "SELECT event_id FROM webhook_events WHERE status = 'unmatched' "
    "AND customer_id = ANY('{cus_ws_btemplate}'::text[])",
    "api_open_invoices": "SELECT invoice_id FROM invoices WHERE workspace_id = 'ws_btemplate' "
    "AND status IN ('open', 'uncollectible') ORDER BY invoice_created",
}


async def _template(url: str, processor: EventProcessor) -> None:
    """One real workspace, made by processing a real history (subscription, renewal invoice that
    failed then was paid): the rows every clone copies."""
    from tests.support import stripe_factory as sf

    history = sf.history_payment_failure(
        workspace_id=TEMPLATE,
        customer=f"cus_{TEMPLATE}",
        sub_id=f"sub_{TEMPLATE}",
        invoice_id="in_btemplate",
        id_prefix="evt_btemplate",
    )
    conn = await asyncpg.connect(url)
    try:
        for doc in history:
            await conn.execute(
                "INSERT INTO webhook_events (event_id, type, api_version, created, payload) "
                "VALUES ($1, $2, $3, $4, $5)",
                doc["id"],
                doc["type"],
                doc["api_version"],
                datetime.fromtimestamp(doc["created"], UTC),
                json.dumps(doc),
            )
    finally:
        await conn.close()
    for doc in history:
        result = await processor.process(doc["id"])
        assert result.status == "processed", result


async def bulk_load(url: str, count: int, invoices_per_workspace: int = 3) -> float:
    """Clone the template into ``count`` workspaces ``ws_s<n>``; returns seconds taken."""
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        # The bulk load only (this connection): it is set-up, not measured. The measured events
        # go through the service's pool with the server's synchronous_commit (on by default).
        await conn.execute("SET synchronous_commit = off")
        ws, cus, sub = "'ws_s' || g", "'cus_ws_s' || g", "'sub_ws_s' || g"
        await conn.execute(
            f"""
            INSERT INTO workspaces (workspace_id, customer_id, plan, interval, seats, status,
                subscription_id, trial_end, period_start, period_end, cancel_at_period_end,
                custom_contract, storage_addon_units, storage_quota_bytes, blocked, dunning_level,
                view, version)
            SELECT {ws}, {cus}, plan, interval, seats, status, {sub}, trial_end, period_start,
                   period_end, cancel_at_period_end, custom_contract, storage_addon_units,
                   storage_quota_bytes, blocked, dunning_level,
                   replace(view::text, '{TEMPLATE}', 'ws_s' || g)::jsonb, version
              FROM workspaces t, generate_series(1, $1) g WHERE t.workspace_id = '{TEMPLATE}'
            """,
            count,
        )
        await conn.execute(
            f"INSERT INTO customers (customer_id, workspace_id) SELECT {cus}, {ws} FROM generate_series(1, $1) g",
            count,
        )
        await conn.execute(
            f"""
            INSERT INTO subscriptions (subscription_id, workspace_id, customer_id, status, snapshot,
                                       observed_at, observed_event_id)
            SELECT {sub}, {ws}, {cus}, status,
                   replace(replace(replace(snapshot::text, 'sub_ws_btemplate', 'sub_ws_s' || g),
                                   'cus_ws_btemplate', 'cus_ws_s' || g),
                           '{TEMPLATE}', 'ws_s' || g)::jsonb,
                   observed_at, 'evt_bs' || g || '_created'
              FROM subscriptions t, generate_series(1, $1) g WHERE t.workspace_id = '{TEMPLATE}'
            """,
            count,
        )
        # Paid invoice history: ``invoices_per_workspace`` per workspace, never loaded again.
        await conn.execute(
            f"""
            INSERT INTO invoices (invoice_id, workspace_id, customer_id, subscription_id, status,
                currency, amount_due, amount_paid, amount_remaining, attempt_count,
                next_payment_attempt, billing_reason, invoice_created, first_failed_at,
                last_failed_at, snapshot, observed_at, observed_event_id)
            SELECT 'in_s' || g || '_' || k, {ws}, {cus}, {sub}, 'paid', currency, amount_due,
                   amount_paid, amount_remaining, attempt_count, next_payment_attempt,
                   billing_reason, invoice_created - k * interval '30 days', first_failed_at,
                   last_failed_at, snapshot, observed_at, 'evt_bs' || g || '_in' || k
              FROM invoices t, generate_series(1, $1) g, generate_series(1, $2) k
             WHERE t.workspace_id = '{TEMPLATE}'
            """,
            count,
            invoices_per_workspace,
        )
        await conn.execute(
            f"""
            INSERT INTO audit_log (workspace_id, version, cause_kind, cause_id, changes, before,
                                   after, effective_at)
            SELECT {ws}, version, cause_kind, 'evt_bs' || g || '_created', changes, before, after,
                   effective_at
              FROM audit_log t, generate_series(1, $1) g
             WHERE t.workspace_id = '{TEMPLATE}'
               AND t.version = (SELECT max(version) FROM audit_log WHERE workspace_id = '{TEMPLATE}')
            """,
            count,
        )
        # The inbox keeps every event; the clones' payloads are never read again, so keep them short.
        await conn.execute(
            f"""
            INSERT INTO webhook_events (event_id, type, api_version, created, payload, status,
                                        outcome, workspace_id, customer_id, attempts, processed_at)
            SELECT 'evt_bs' || g || '_created', type, api_version, created, '{{}}', 'processed',
                   'applied', {ws}, {cus}, 1, now()
              FROM webhook_events t, generate_series(1, $1) g
             WHERE t.event_id = (SELECT min(event_id) FROM webhook_events WHERE workspace_id = '{TEMPLATE}')
            """,
            count,
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def queue_events(url: str, tag: str, workspaces: list[int]) -> list[str]:
    rows = []
    for n, w in enumerate(workspaces):
        body = event_body(f"{tag}{n}", kind="updated", workspace=f"ws_s{w}")
        doc = json.loads(body)
        rows.append(
            (doc["id"], doc["type"], doc["api_version"], datetime.fromtimestamp(doc["created"], UTC), body)
        )
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "webhook_events", records=rows, columns=["event_id", "type", "api_version", "created", "payload"]
        )
        await conn.execute("ANALYZE webhook_events")
    finally:
        await conn.close()
    return [r[0] for r in rows]


async def prewarm(url: str) -> None:
    """Load every table and index into shared_buffers: the steady state of a server whose memory
    holds its data (with ``--cold`` the large side reads pages from the OS instead)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        await conn.execute(
            "SELECT pg_prewarm(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
        )
    finally:
        await conn.close()


async def block_reads(pool: asyncpg.Pool) -> tuple[int, int]:
    """(blocks read from outside shared_buffers, blocks hit) of this database so far."""
    row = await pool.fetchrow(
        "SELECT blks_read, blks_hit FROM pg_stat_database WHERE datname = current_database()"
    )
    return row["blks_read"], row["blks_hit"]


async def seq_scans(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT relname, seq_scan FROM pg_stat_user_tables WHERE relname = ANY($1::text[])", list(HOT_TABLES)
    )
    return {r["relname"]: r["seq_scan"] for r in rows}


async def flush_stats(pool: asyncpg.Pool) -> None:
    """Make every pooled connection publish its pending table counters now (a busy backend does
    so at most once a second): otherwise the scans of the template's own events, made while its
    tables held one row, landed in the measured window as "seq scans during processing"."""
    conns = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        for conn in conns:
            await conn.execute("SELECT pg_stat_force_next_flush()")  # flushed before it answers
    finally:
        for conn in conns:
            await pool.release(conn)


async def explain(pool: asyncpg.Pool) -> dict[str, str]:
    plans = {}
    async with pool.acquire() as conn, conn.transaction():
        for name, sql in EXPLAINED.items():
            lines = await conn.fetch(f"EXPLAIN {sql}")
            plans[name] = " | ".join(r[0].strip() for r in lines)
    return plans


async def run(args: Any, servers: Any) -> dict[str, Any]:
    catalog = load_catalog(None)
    sizes = {"small": args.small, "large": args.large}
    base = servers.database_url.rsplit("/", 1)[0]
    pools, processors, loads = {}, {}, {}
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        for side in sizes:
            await admin.execute(f"DROP DATABASE IF EXISTS scale_{side}")
            await admin.execute(f"CREATE DATABASE scale_{side} TEMPLATE bench")
    finally:
        await admin.close()
    for side, count in sizes.items():
        url = f"{base}/scale_{side}"
        pools[side] = await create_pool(url, size=2)
        processors[side] = EventProcessor(pools[side], catalog, utcnow)
        await _template(url, processors[side])
        loads[side] = round(await bulk_load(url, count), 1)
        print(f"loaded {count} workspaces into scale_{side} in {loads[side]} s", file=sys.stderr)
    rng = random.Random(7)
    tag = str(int(time.time()))
    ids = {
        side: await queue_events(
            f"{base}/scale_{side}", f"{tag}{side}", [rng.randint(1, n) for _ in range(args.events)]
        )
        for side, n in sizes.items()
    }
    if not args.cold:
        for side in sizes:
            await prewarm(f"{base}/scale_{side}")
    for pool in pools.values():
        await flush_stats(pool)
    scans_before = {side: await seq_scans(pools[side]) for side in sizes}
    blocks_before = {side: await block_reads(pools[side]) for side in sizes}
    timings: dict[str, list[float]] = {side: [] for side in sizes}
    cpu = dict.fromkeys(sizes, 0.0)  # this process's CPU per side: the worker-side cost
    block = 100
    for start in range(0, args.events, block):
        for side in sizes if (start // block) % 2 == 0 else reversed(list(sizes)):
            for event_id in ids[side][start : start + block]:
                t0, c0 = time.perf_counter(), time.process_time()
                result = await processors[side].process(event_id)
                timings[side].append((time.perf_counter() - t0) * 1000)
                cpu[side] += time.process_time() - c0
                assert result.status == "processed", result
    await asyncio.sleep(0.7)  # pg_stat counters are flushed at most every 0.5 s (PG 15+)
    scans_after = {side: await seq_scans(pools[side]) for side in sizes}
    blocks_after = {side: await block_reads(pools[side]) for side in sizes}
    plans = await explain(pools["large"])
    for pool in pools.values():
        await pool.close()
    out: dict[str, Any] = {
        "load_seconds": loads,
        "prewarmed": not args.cold,
        "shared_buffers": args.shared_buffers,
    }
    for side, count in sizes.items():
        out[side] = {
            "workspaces": count,
            "events": len(timings[side]),
            "ms_per_event_mean": round(sum(timings[side]) / len(timings[side]), 3),
            "ms_per_event_median": median(timings[side]),
            "ms": percentiles(timings[side]),
            "client_cpu_ms_per_event": round(1000 * cpu[side] / len(timings[side]), 3),
            "blocks_read_per_event": round((blocks_after[side][0] - blocks_before[side][0]) / args.events, 2),
            "blocks_hit_per_event": round((blocks_after[side][1] - blocks_before[side][1]) / args.events, 2),
            "seq_scans_during_processing": {
                t: scans_after[side].get(t, 0) - scans_before[side].get(t, 0) for t in HOT_TABLES
            },
        }
    out["explain_large"] = plans
    out["seq_scan_in_plans"] = [name for name, plan in plans.items() if "Seq Scan" in plan]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--cold", action="store_true", help="skip pg_prewarm after the bulk load")
    parser.add_argument("--shared-buffers", default="4GB", help="of the private PostgreSQL")
    parser.add_argument(
        "--plan-changes",
        action="store_true",
        help="run bench.plan_change_sweep --changes 10000 (the period-end sweep) instead",
    )
    args = parser.parse_args(argv)
    if args.plan_changes:
        from bench import plan_change_sweep

        extra = ["--results", str(args.results)] + (["--workdir", str(args.workdir)] if args.workdir else [])
        extra += ["--unsafe-fast-storage"] if args.unsafe_fast_storage else []
        return plan_change_sweep.main(["--changes", "10000", *extra])
    with private_servers(
        args.workdir, shared_buffers=args.shared_buffers, storage=storage_of(args)
    ) as servers:
        figures = asyncio.run(run(args, servers))
        versions = servers.versions
    small, large = figures["small"], figures["large"]
    ratio = round(large["ms_per_event_mean"] / small["ms_per_event_mean"], 3)
    figures["median_ratio"] = round(large["ms_per_event_median"] / small["ms_per_event_median"], 3)
    scans = sum(sum(side["seq_scans_during_processing"].values()) for side in (small, large))
    figures["targets"] = {
        "large_within_10pct_of_small": ratio <= 1.10,
        "no_seq_scans": scans == 0 and not figures["seq_scan_in_plans"],
    }
    record(
        "scale",
        figures,
        baseline=small,
        ratio=ratio,
        versions=versions,
        results=args.results,
        argv=argv,
        storage=storage_of(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
