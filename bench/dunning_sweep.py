"""How long the dunning sweep takes over many workspaces, when nothing changed and when all escalate.

Usage: python -m bench.dunning_sweep [--workspaces N] [--pg postgresql://…/postgres]
Creates and drops its own database; needs Redis only for the change notifications.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import timedelta

import asyncpg
from arq.connections import create_pool

from tests.support import stripe_factory as sf
from tests.support.helpers import make_settings
from worker.infra.notifications import stream_name
from worker.jobs.dunning import BATCH, sweep_dunning
from worker.queue.redis import redis_settings
from worker.queue.worker import Job
from worker.services import Services, load_catalog
from worker.storage import inbox, workspaces
from worker.storage.db import create_pool as create_pg_pool
from worker.storage.migrate import migrate


async def main(n: int, admin_url: str, redis_url: str) -> None:
    name = f"bw_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await migrate(url)
        now = [sf.at(sf.T0)]
        settings = make_settings(url, redis_url, f"bench{uuid.uuid4().hex[:6]}")
        services = Services(
            settings,
            await create_pg_pool(url, size=10),
            await create_pool(redis_settings(redis_url)),
            load_catalog(None),
            lambda: now[0],
        )
        events = []
        for i in range(n):
            ws = f"ws_b{i}"
            hist = sf.history_payment_failure(
                workspace_id=ws, customer=f"cus_b{i}", sub_id=f"sub_b{i}", invoice_id=f"in_b{i}", outcome=None
            )
            events.extend(hist)
        for e in events:
            await inbox.insert_event(
                services.pool,
                event_id=e["id"],
                event_type=e["type"],
                api_version=e["api_version"],
                created=sf.at(e["created"]),
                livemode=False,
                payload=json.dumps(e),
            )
        now[0] = sf.at(max(e["created"] for e in events))
        sem = asyncio.Semaphore(8)

        async def one(event_id: str) -> None:
            async with sem:
                await services.processor.process(event_id)

        by_ws: dict[str, list[str]] = {}
        for e in events:
            by_ws.setdefault(e["data"]["object"].get("customer", ""), []).append(e["id"])

        async def chain(ids: list[str]) -> None:
            for event_id in ids:
                await one(event_id)

        await asyncio.gather(*(chain(ids) for ids in by_ws.values()))
        blocked = await services.pool.fetchval("SELECT count(*) FROM workspaces WHERE blocked")
        await services.pool.execute("ANALYZE")
        plan = await services.pool.fetch(f"EXPLAIN {workspaces.DUNNING_CANDIDATES}", "", BATCH)
        print("\n".join(r[0] for r in plan))
        ctx = Job(services)
        started = time.perf_counter()
        unchanged = await sweep_dunning(ctx)
        noop_s = time.perf_counter() - started
        now[0] += timedelta(days=15)
        started = time.perf_counter()
        escalated = await sweep_dunning(ctx)
        escalate_s = time.perf_counter() - started
        print(
            f"workspaces={n} blocked={blocked} no-op sweep: changed={unchanged} {noop_s:.3f}s "
            f"({noop_s / n * 1000:.2f} ms/workspace); escalation sweep: changed={escalated} {escalate_s:.3f}s"
        )
        await services.redis.delete(stream_name(settings.redis_prefix))
        await services.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    asyncio.run(main(args.workspaces, args.pg, args.redis))
