"""A new deployment's tables start empty and grow: event batches must keep finding rows by key.

PostgreSQL fixes a prepared statement's generic plan after its first executions on a connection.
Planned on a near-empty table, that plan can be a sequential scan, and it stays one as the table
grows until an ANALYZE. bench.e2e caught one scan of ``workspaces`` per batch this way.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.support import stripe_factory as sf
from tests.support.helpers import wait_for
from tests.support.services import ServiceChoice, create_database, drop_database, with_database
from worker.processing.unit_of_work import EventProcessor
from worker.receiver.app import inbox_row
from worker.services import load_catalog
from worker.storage import db, inbox
from worker.storage.db import create_pool
from worker.storage.migrate import migrate

WORKSPACES = 400
BATCH = 4  # what a worker at 200 events/s commits at a time


@pytest.fixture
async def young_url(pg_server: ServiceChoice) -> AsyncIterator[str]:
    """A database of its own, migrated and never analyzed: its tables start empty."""
    name = await create_database(pg_server.url)
    url = with_database(pg_server.url, name)
    await migrate(url)
    try:
        yield url
    finally:
        await drop_database(pg_server.url, name)


async def _table_stats(url: str) -> asyncpg.Record:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchrow(
            "SELECT sum(seq_scan) FILTER (WHERE relname = 'workspaces') AS seq_scan, "
            "sum(seq_tup_read) FILTER (WHERE relname = 'workspaces') AS seq_tup_read, "
            "sum(seq_tup_read) AS seq_tup_read_all, "
            "sum(n_tup_ins) FILTER (WHERE relname = 'workspaces') AS n_tup_ins FROM pg_stat_user_tables"
        )
    finally:
        await conn.close()


async def _process_new_workspaces(url: str) -> None:
    """Subscriptions created for new workspaces, processed in batches on one connection (so
    every batch reuses the statements that connection prepared while the table was empty)."""
    events = []
    for n in range(WORKSPACES):
        u = uuid.uuid4().hex[:10]
        ids = {"workspace_id": f"ws_young_{n}_{u}", "customer": f"cus_y{u}", "sub_id": f"sub_y{u}"}
        events.append(sf.history_lifecycle(**ids, id_prefix=f"evt_y{u}")[0])
    pool = await create_pool(url, size=1)
    try:
        async with pool.acquire() as conn:
            await inbox.insert_events(conn, [inbox_row(e, json.dumps(e)) for e in events])
        processor = EventProcessor(pool, load_catalog(None), lambda: sf.at(sf.T0))
        for start in range(0, len(events), BATCH):
            results = await processor.process_many([e["id"] for e in events[start : start + BATCH]])
            assert {r.status for r in results} == {"processed"}
    finally:
        await pool.close()


async def test_event_batches_on_a_growing_table_look_workspaces_up_by_key(young_url: str):
    await _process_new_workspaces(young_url)
    # A closing backend publishes its statistics; all inserts counted means its scans are too.
    stats = await wait_for(
        lambda: _table_stats(young_url), lambda s: s["n_tup_ins"] >= WORKSPACES, what="the pool's statistics"
    )
    # The migrations' own scans of the empty table read nothing; a batch's scan reads the rows.
    assert stats["seq_tup_read"] == 0
    assert stats["seq_tup_read_all"] == 0  # nor of any other table: inbox, customers, subscriptions…


async def test_without_the_keyed_settings_the_same_batches_scan(
    young_url: str, monkeypatch: pytest.MonkeyPatch
):
    """The control: the test above can fail. With only the lock timeout set, as before, the
    plans made on the empty table scan ``workspaces`` in (nearly) every batch."""
    monkeypatch.setattr(db, "_KEYED_TRANSACTION", "SELECT set_config('lock_timeout', $1, true)")
    await _process_new_workspaces(young_url)
    stats = await wait_for(
        lambda: _table_stats(young_url), lambda s: s["n_tup_ins"] >= WORKSPACES, what="the pool's statistics"
    )
    assert stats["seq_scan"] >= WORKSPACES // BATCH // 2
    assert stats["seq_tup_read"] > WORKSPACES
