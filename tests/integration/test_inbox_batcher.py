"""The receiver's group commit (worker/inbox_batcher.py) on real PostgreSQL and Redis.

Many concurrent deliveries are each stored and queued exactly once; duplicates inside one batch
answer ``duplicate``; shutting down with requests pending answers every one of them. Outages of
the database or Redis: tests/system/test_inbox_batcher_faults.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.helpers import customer_event, post_signed, wait_for
from tests.support.inbox import inbox_rows, queued_event_jobs, queued_events
from tests.support.service_fixtures import service_fixture
from tests.support.services import free_port
from worker.config import Settings
from worker.receiver.app import BATCHER, create_receiver_app, inbox_row
from worker.receiver.inbox_batcher import InboxBatcher, InboxUnavailable, ReceiverStopping, Stored
from worker.runner import start_site
from worker.services import Services


async def _insert_waiting(pool: asyncpg.Pool) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE '%INSERT INTO webhook_events%'"
    )


service = service_fixture(worker=False)


async def test_many_concurrent_deliveries_are_each_stored_and_queued_once(service):
    events = [customer_event("cus_batch") for _ in range(300)]
    answers = await asyncio.gather(*(service.post_event(e) for e in events))
    ids = [e["id"] for e in events]
    assert [a for a in answers if a[0] != 200] == []
    assert {a[1]["event_id"] for a in answers} == set(ids)
    assert all(a[1] == {"received": True, "duplicate": False, "event_id": a[1]["event_id"]} for a in answers)
    assert await inbox_rows(service.services.pool, ids) == dict.fromkeys(ids, "received")
    assert await queued_events(service.services, ids) == Counter(ids)  # each in one job
    # Several events a job: the receiver queues one job per flush (at most 100 ids each).
    jobs = len(await queued_event_jobs(service.services, ids))
    assert jobs < len(ids) // 3, f"{jobs} jobs for {len(ids)} events"
    # A second round of the same deliveries (Stripe's retries): all duplicates; the rows are still
    # `received` (no worker here), so they are queued again (the worker finds them processed and
    # does nothing: Postgres, not the job id, decides), again several a job.
    again = await asyncio.gather(*(service.post_event(e) for e in events))
    assert {(a[0], a[1]["duplicate"]) for a in again} == {(200, True)}
    assert await queued_events(service.services, ids) == Counter(ids * 2)
    assert len(await queued_event_jobs(service.services, ids)) - jobs < len(ids) // 3


async def test_duplicates_inside_one_batch_insert_once_and_answer_duplicate(service):
    """Submitted in one go, the deliveries of one id land in one batch: the first inserts."""
    event, other = customer_event("cus_batch"), customer_event("cus_batch")
    batcher = InboxBatcher(service.services.pool, service.services.queue)
    batcher.start()
    try:
        rows = [inbox_row(e, json.dumps(e)) for e in (event, event, other, event)]
        results = await asyncio.gather(*(batcher.submit(r) for r in rows))
    finally:
        await batcher.stop()
    assert results == [
        Stored(True, "received"),
        Stored(False, "received"),
        Stored(True, "received"),
        Stored(False, "received"),
    ]
    assert await inbox_rows(service.services.pool, [event["id"], other["id"]]) == {
        event["id"]: "received",
        other["id"]: "received",
    }
    # Both in one job.
    jobs = await queued_event_jobs(service.services, [event["id"], other["id"]])
    assert list(jobs.values()) == [[event["id"], other["id"]]]


async def test_duplicate_http_deliveries_at_once_one_accepted_the_rest_duplicate(service):
    event = customer_event("cus_batch")
    answers = await asyncio.gather(*(service.post_event(event) for _ in range(20)))
    assert {a[0] for a in answers} == {200}
    assert sorted(a[1]["duplicate"] for a in answers) == [False] + [True] * 19
    assert await inbox_rows(service.services.pool, [event["id"]]) == {event["id"]: "received"}
    # Queued by the flush that inserted it, and by any later flush that found it still `received`.
    assert event["id"] in await queued_events(service.services, [event["id"]])


# ------------------------------------------------------------------ shutdown with requests pending


@dataclasses.dataclass
class _Receiver:
    services: Services
    runner: Any
    url: str


@pytest.fixture
async def own_receiver(settings: Settings) -> AsyncIterator[_Receiver]:
    """A receiver of this test only: the test stops it."""
    services = await Services.start(settings)
    port = free_port()
    runner = await start_site(create_receiver_app(services), "127.0.0.1", port)
    try:
        yield _Receiver(services, runner, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()  # a no-op when the test already stopped it
        await services.close()


async def _block_inserts_of(pool: asyncpg.Pool, event: dict[str, Any]) -> tuple[Any, Any]:
    """An open transaction holding ``event``'s inbox row: an INSERT of the same id waits for it."""
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    await conn.execute(
        "INSERT INTO webhook_events (event_id, type, created, payload) VALUES ($1, $2, now(), $3)",
        event["id"],
        event["type"],
        json.dumps(event),
    )
    return conn, tx


async def test_shutdown_flushes_pending_requests_before_stopping(own_receiver: _Receiver):
    pool = own_receiver.services.pool
    blocker_event = customer_event("cus_batch")
    blocker, tx = await _block_inserts_of(pool, blocker_event)
    events = [blocker_event] + [customer_event("cus_batch") for _ in range(30)]
    async with aiohttp.ClientSession() as http:
        posts = [asyncio.create_task(post_signed(http, own_receiver.url, e)) for e in events]
        # The first batch waits on the open transaction; the others queue up behind it.
        await wait_for(lambda: _insert_waiting(pool), lambda n: n >= 1, what="a blocked INSERT")
        batcher = own_receiver.runner.app[BATCHER]
        stopping = asyncio.create_task(own_receiver.runner.cleanup())
        await wait_for(_async(lambda: batcher.closing), what="the batcher to stop taking events")
        await tx.commit()  # the blocking delivery commits: the batch goes on
        await pool.release(blocker)
        answers = await asyncio.wait_for(asyncio.gather(*posts), 30)
        await asyncio.wait_for(stopping, 30)
    assert {status for status, _ in answers} == {200}
    assert answers[0][1]["duplicate"] is True  # the blocker's own delivery committed first
    ids = [e["id"] for e in events]
    assert await inbox_rows(pool, ids) == dict.fromkeys(ids, "received")
    assert set(await queued_events(own_receiver.services, ids[1:])) == set(ids[1:])


async def test_shutdown_answers_503_to_what_cannot_be_flushed_in_time(settings: Settings):
    services = await Services.start(settings)
    blocker_event = customer_event("cus_batch")
    blocker, tx = await _block_inserts_of(services.pool, blocker_event)
    batcher = InboxBatcher(services.pool, services.queue, max_in_flight=1, stop_timeout=0.5)
    batcher.start()
    try:
        events = [blocker_event] + [customer_event("cus_batch") for _ in range(10)]
        first = asyncio.create_task(batcher.submit(inbox_row(events[0], json.dumps(events[0]))))
        await wait_for(lambda: _insert_waiting(services.pool), lambda n: n >= 1, what="a blocked INSERT")
        rest = [asyncio.create_task(batcher.submit(inbox_row(e, json.dumps(e)))) for e in events[1:]]
        await asyncio.wait_for(batcher.stop(), 10)
        results = await asyncio.wait_for(asyncio.gather(first, *rest, return_exceptions=True), 10)
        assert all(
            isinstance(r, InboxUnavailable)
            and r.reason == "database"
            and isinstance(r.error, ReceiverStopping)
            for r in results
        ), results
        with pytest.raises(InboxUnavailable):  # nothing is taken once stopped
            await batcher.submit(inbox_row(customer_event("cus_batch"), "{}"))
        assert await queued_events(services, [e["id"] for e in events]) == Counter()
    finally:
        await tx.rollback()
        await services.pool.release(blocker)
        await services.close()


def _async(probe: Any) -> Any:
    async def run() -> Any:
        return probe()

    return run
