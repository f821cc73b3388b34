"""Group commit: a batch of events must leave exactly the state that one-by-one processing leaves.

The worker hands ``EventProcessor.process_many`` whatever jobs are waiting, so a batch can hold
several events of one workspace, duplicates, events that map a customer for later ones, and
events that fail. These tests run real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from handlers.codec import parse_datetime, to_jsonable
from tests.support import stripe_factory as sf
from tests.support.helpers import history_ids
from worker.processing import batches as event_batches
from worker.processing.batches import EventBatcher
from worker.processing.unit_of_work import EventProcessor, ProcessResult
from worker.queue.enqueue import JobQueue
from worker.queue.redis import connect as connect_redis
from worker.services import load_catalog
from worker.storage import inbox, workspaces
from worker.storage.audit import audit_entries
from worker.storage.db import create_pool

NOW = sf.at(sf.T0) + timedelta(days=45)


@pytest.fixture
async def pool(migrated_pg_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(migrated_pg_url, size=4)
    yield pool
    await pool.close()


@pytest.fixture
def processor(pool: asyncpg.Pool) -> EventProcessor:
    return EventProcessor(pool, load_catalog(None), lambda: NOW)


@pytest.fixture
async def queue(redis_url: str, redis_prefix: str) -> AsyncIterator[JobQueue]:
    """A real arq queue of its own (the session's prefix: its keys are removed at the end)."""
    redis = await connect_redis(redis_url)
    prefix = f"{redis_prefix}:{secrets.token_hex(4)}"
    yield JobQueue(redis, prefix, f"{prefix}:queue")
    await redis.aclose()


class _Batches:
    """The batcher's after-commit hook: what each committed batch held, in commit order."""

    def __init__(self) -> None:
        self.committed: list[list[str]] = []

    async def __call__(self, results: Any) -> None:
        self.committed.append([r.event_id for r in results])


def _history(ids: dict[str, str]) -> list[dict[str, Any]]:
    """A subscription's lifecycle interleaved with an invoice that fails twice, then is paid;
    the invoice events name no workspace (they are mapped through the customer)."""
    payment = sf.history_payment_failure(
        **{**ids, "id_prefix": ids["id_prefix"] + "p"},
        invoice_id="in_" + ids["sub_id"],
        include_subscription=False,
        failures=2,
        start=sf.T0 + 14 * sf.DAY,
    )
    return sorted(sf.history_lifecycle(**ids) + payment, key=lambda e: e["created"])


async def _insert(pool: asyncpg.Pool, events: list[dict[str, Any]]) -> None:
    for e in events:
        await inbox.insert_event(
            pool,
            event_id=e["id"],
            event_type=e["type"],
            api_version=e.get("api_version"),
            created=datetime.fromtimestamp(e["created"], UTC),
            livemode=False,
            payload=json.dumps(e),
        )


async def _observable(pool: asyncpg.Pool, ids: dict[str, str]) -> dict[str, Any]:
    """What a user can see of a workspace — view, open invoices, audit trail — with ids masked."""
    ws = ids["workspace_id"]
    row = await workspaces.get_workspace(pool, ws)
    assert row is not None
    invoices = [dict(r) for r in await workspaces.open_invoices(pool, ws)]
    audit = [(r["version"], r["cause_kind"]) for r in await audit_entries(pool, ws, limit=1000)]
    text = json.dumps(
        to_jsonable({"view": row["view"], "open": invoices, "audit_versions": audit}), sort_keys=True
    )
    for key, value in ids.items():
        text = text.replace(value, f"<{key}>")
    return {"version": row["version"], "text": text}


async def test_any_batching_of_a_shuffled_delivery_equals_one_by_one(
    pool: asyncpg.Pool, processor: EventProcessor
):
    rng = random.Random(20261122)
    for attempt in range(8):
        one_ids, batch_ids = history_ids(f"one{attempt}"), history_ids(f"bat{attempt}")
        singly, batched = _history(one_ids), _history(batch_ids)
        await _insert(pool, singly + batched)
        # The same delivery (shuffled, half of it twice) for both workspaces.
        order = list(range(len(singly))) + rng.sample(range(len(singly)), k=len(singly) // 2)
        rng.shuffle(order)
        for i in order:
            await processor.process(singly[i]["id"])
        delivery = [batched[i]["id"] for i in order]
        while delivery:  # random batch sizes: duplicates inside and across batches
            size = rng.randint(1, len(delivery))
            batch, delivery = delivery[:size], delivery[size:]
            results = await processor.process_many(batch)
            assert [r.event_id for r in results] == batch
        # Same versions, same audit trail, same view, same open invoices.
        assert await _observable(pool, batch_ids) == await _observable(pool, one_ids), f"attempt {attempt}"
        marks = await pool.fetch(
            "SELECT attempts, status FROM webhook_events WHERE event_id = ANY($1::text[])",
            [e["id"] for e in batched],
        )
        assert sorted((r["attempts"], r["status"]) for r in marks) == [(1, "processed")] * len(batched)


async def test_one_batch_holding_a_whole_history_equals_one_by_one(
    pool: asyncpg.Pool, processor: EventProcessor
):
    reference_ids, batch_ids = history_ids("seq"), history_ids("all")
    reference, together = _history(reference_ids), _history(batch_ids)
    await _insert(pool, reference + together)
    for e in reference:
        await processor.process(e["id"])
    results = await processor.process_many([e["id"] for e in together])
    assert {r.outcome for r in results} <= {"applied", "stale"}
    # Versions count up through the batch, one audit entry per applied event.
    applied = [r.version for r in results if r.outcome == "applied"]
    assert applied == sorted(applied) and len(set(applied)) == len(applied)
    assert await _observable(pool, batch_ids) == await _observable(pool, reference_ids)


async def test_an_event_mapping_a_customer_matches_the_later_events_of_its_batch(
    pool: asyncpg.Pool, processor: EventProcessor
):
    ids = history_ids("map")
    events = _history(ids)
    created = next(e for e in events if e["type"] == "customer.subscription.created")
    invoice_events = [json.loads(json.dumps(e)) for e in events if e["type"].startswith("invoice.")]
    for e in invoice_events:  # they name no workspace: only the customer maps them
        e["data"]["object"]["parent"]["subscription_details"]["metadata"] = {}
    await _insert(pool, [created, *invoice_events])
    results = await processor.process_many([created["id"], *(e["id"] for e in invoice_events)])
    assert results[0].newly_mapped_customer == ids["customer"]
    assert all(r.workspace_id == ids["workspace_id"] and r.status == "processed" for r in results)
    assert all(r.newly_mapped_customer is None for r in results[1:])


async def _invoice_before_its_subscription(
    pool: asyncpg.Pool, tag: str
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """A stored invoice event that names no workspace, and the subscription event that maps its
    customer: the ids, the invoice, the subscription."""
    ids = history_ids(tag)
    events = _history(ids)
    created = next(e for e in events if e["type"] == "customer.subscription.created")
    invoice = json.loads(json.dumps(next(e for e in events if e["type"].startswith("invoice."))))
    invoice["data"]["object"]["parent"]["subscription_details"]["metadata"] = {}  # no workspace named
    await _insert(pool, [invoice, created])
    return ids, invoice, created


async def test_events_before_their_customer_is_known_wait_as_unmatched(
    pool: asyncpg.Pool, processor: EventProcessor
):
    ids, invoice, created = await _invoice_before_its_subscription(pool, "early")
    unmatched, mapped = await processor.process_many([invoice["id"], created["id"]])
    assert (unmatched.status, unmatched.outcome) == ("unmatched", "unmatched")
    # The event that maps the customer hands the one left waiting in its own batch to the requeue.
    assert (mapped.newly_mapped_customer, mapped.requeue) == (ids["customer"], (invoice["id"],))
    again = await processor.process(invoice["id"])  # what the requeue after the commit does
    assert (again.status, again.workspace_id) == ("processed", ids["workspace_id"])


async def test_events_stored_unmatched_are_requeued_by_the_batch_that_maps_their_customer(
    pool: asyncpg.Pool, processor: EventProcessor
):
    ids = history_ids("late")
    events = _history(ids)
    created = next(e for e in events if e["type"] == "customer.subscription.created")
    orphans = [json.loads(json.dumps(e)) for e in events if e["type"].startswith("invoice.")][:2]
    for e in orphans:
        e["data"]["object"]["parent"]["subscription_details"]["metadata"] = {}
    await _insert(pool, [*orphans, created])
    assert [r.status for r in await processor.process_many([e["id"] for e in orphans])] == ["unmatched"] * 2
    (mapped,) = await processor.process_many([created["id"]])
    assert mapped.newly_mapped_customer == ids["customer"]
    assert sorted(mapped.requeue) == sorted(e["id"] for e in orphans)


class _Failing(EventProcessor):
    """The real processor, except that one event id makes any unit of work holding it fail."""

    poison: str = ""

    async def process_batch(self, event_ids: Any, read_ahead: Any = (), fetched: Any = None) -> Any:
        if self.poison in event_ids or self.poison in read_ahead:
            raise RuntimeError("poisoned")
        return await super().process_batch(event_ids, read_ahead, fetched)


async def test_a_failing_event_fails_only_its_own_job(pool: asyncpg.Pool):
    ids = history_ids("poison")
    events = _history(ids)[:4]
    await _insert(pool, events)
    processor = _Failing(pool, load_catalog(None), lambda: NOW)
    processor.poison = events[2]["id"]
    committed: list[ProcessResult] = []

    async def after(results: Any) -> None:
        committed.extend(results)

    batcher = EventBatcher(processor, after, concurrency=1)
    outcomes = await asyncio.gather(*(batcher.process(e["id"]) for e in events), return_exceptions=True)
    assert isinstance(outcomes[2], RuntimeError)
    assert [o.status for i, o in enumerate(outcomes) if i != 2] == ["processed"] * 3  # type: ignore[union-attr]
    assert {r.event_id for r in committed} == {e["id"] for i, e in enumerate(events) if i != 2}
    row = await inbox.get_event(pool, events[2]["id"])
    assert row is not None and row["status"] == "received"  # nothing of it was written


async def test_a_lock_timeout_fails_the_whole_batch_at_once_and_writes_nothing(pool: asyncpg.Pool):
    locked_ids, free_ids = history_ids("lockd"), history_ids("free")
    locked_events, free_events = _history(locked_ids)[:2], _history(free_ids)[:1]
    await _insert(pool, locked_events + free_events)
    processor = EventProcessor(pool, load_catalog(None), lambda: NOW, lock_timeout_ms=200)
    await processor.process(locked_events[0]["id"])  # the workspace row exists now
    batcher = EventBatcher(processor, _ignore, concurrency=1)
    async with pool.acquire() as holder, holder.transaction():  # an API request holding the row
        await holder.execute(
            "SELECT 1 FROM workspaces WHERE workspace_id = $1 FOR UPDATE", locked_ids["workspace_id"]
        )
        outcomes = await asyncio.gather(
            batcher.process(locked_events[1]["id"]),
            batcher.process(free_events[0]["id"]),
            return_exceptions=True,
        )
    assert all(isinstance(o, asyncpg.exceptions.LockNotAvailableError) for o in outcomes)
    statuses = [await inbox.get_event(pool, e["id"]) for e in (locked_events[1], free_events[0])]
    assert [s["status"] for s in statuses if s is not None] == ["received", "received"]
    # Once the lock is gone, the same events go through (as arq's retry will do).
    again = await asyncio.gather(
        batcher.process(locked_events[1]["id"]), batcher.process(free_events[0]["id"])
    )
    assert [r.status for r in again] == ["processed", "processed"]


async def _ignore(results: Any) -> None:
    return None


async def test_an_unmatched_event_whose_customer_its_batch_maps_ends_matched(
    pool: asyncpg.Pool, processor: EventProcessor
):
    ids, invoice, created = await _invoice_before_its_subscription(pool, "round")
    batches = _Batches()
    batcher = EventBatcher(processor, batches, concurrency=1)
    # One batch: the invoice comes first and finds no workspace; the subscription then maps the
    # customer, so the invoice's job goes round again instead of waiting for its backoff.
    got_invoice, got_created = await asyncio.gather(
        batcher.process(invoice["id"]), batcher.process(created["id"])
    )
    assert (got_invoice.status, got_invoice.workspace_id) == ("processed", ids["workspace_id"])
    assert got_created.newly_mapped_customer == ids["customer"]
    assert batches.committed == [[invoice["id"], created["id"]], [invoice["id"]]]


async def _queued(queue: JobQueue, events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Enqueue the events as the receiver does; their jobs' (event id, score) in arq's order."""
    assert all(await queue.enqueue_events([e["id"] for e in events]))
    due = await queue.due_events(1000)
    assert sorted(e for e, _ in due) == sorted(e["id"] for e in events)
    return due


async def test_read_ahead_writes_a_backlog_in_one_batch_and_each_job_gets_its_own_result(
    pool: asyncpg.Pool, processor: EventProcessor, queue: JobQueue
):
    reference_ids, backlog_ids = history_ids("ref"), history_ids("ahead")
    reference, backlog = _history(reference_ids), _history(backlog_ids)
    await _insert(pool, reference + backlog)
    due = await _queued(queue, backlog)
    # The reference workspace gets the same history one by one, in the order arq starts the jobs.
    twin = {b["id"]: r["id"] for b, r in zip(backlog, reference, strict=True)}
    for event_id, _ in due:
        await processor.process(twin[event_id])
    batches = _Batches()
    batcher = EventBatcher(processor, batches, read_ahead=queue.due_events, concurrency=1)
    # arq has started two jobs; the rest of the backlog is still queued.
    started = await asyncio.gather(*(batcher.process(e, score) for e, score in due[:2]))
    assert len(batches.committed) == 1 and sorted(batches.committed[0]) == sorted(e for e, _ in due)
    # When arq starts the other jobs, each gets its own event's result without a transaction.
    rest = [await batcher.process(e, score) for e, score in due[2:]]
    assert [r.event_id for r in [*started, *rest]] == [e for e, _ in due]
    assert {r.status for r in [*started, *rest]} == {"processed"}
    assert len(batches.committed) == 1
    assert await _observable(pool, backlog_ids) == await _observable(pool, reference_ids)
    # A replay is a new enqueueing (a new score): it is processed, not served the kept result.
    event_id, score = due[-1]
    replayed = await batcher.process(event_id, score + 1)
    assert replayed.outcome == "duplicate" and batches.committed[1:] == [[event_id]]


async def test_read_ahead_leaves_events_locked_elsewhere_or_not_fresh_to_their_own_jobs(
    pool: asyncpg.Pool, processor: EventProcessor, queue: JobQueue
):
    ids = history_ids("skip")
    events = _history(ids)[:5]
    await _insert(pool, events)
    await pool.execute("UPDATE webhook_events SET status = 'failed' WHERE event_id = $1", events[4]["id"])
    due = dict(await _queued(queue, events))
    batches = _Batches()
    batcher = EventBatcher(processor, batches, read_ahead=queue.due_events, concurrency=1)
    async with pool.acquire() as other, other.transaction():  # another worker's batch holds it
        await other.execute("SELECT 1 FROM webhook_events WHERE event_id = $1 FOR UPDATE", events[3]["id"])
        await asyncio.gather(*(batcher.process(e["id"], due[e["id"]]) for e in events[:2]))
    assert [sorted(b) for b in batches.committed] == [sorted(e["id"] for e in events[:3])]
    for e in events[3:]:  # processed by their own jobs, each in its own transaction
        assert (await batcher.process(e["id"], due[e["id"]])).status == "processed"
    assert batches.committed[1:] == [[events[3]["id"]], [events[4]["id"]]]


async def test_a_failing_read_ahead_event_fails_only_its_own_job(pool: asyncpg.Pool, queue: JobQueue):
    ids = history_ids("badahead")
    events = _history(ids)[:4]
    await _insert(pool, events)
    due = dict(await _queued(queue, events))
    processor = _Failing(pool, load_catalog(None), lambda: NOW)
    processor.poison = events[3]["id"]
    batches = _Batches()
    batcher = EventBatcher(processor, batches, read_ahead=queue.due_events, concurrency=1)
    first = await asyncio.gather(*(batcher.process(e["id"], due[e["id"]]) for e in events[:2]))
    assert [r.status for r in first] == ["processed", "processed"]
    assert [sorted(b) for b in batches.committed] == [sorted(e["id"] for e in events[:2])]
    assert (await batcher.process(events[2]["id"], due[events[2]["id"]])).status == "processed"
    with pytest.raises(RuntimeError, match="poisoned"):
        await batcher.process(events[3]["id"], due[events[3]["id"]])
    row = await inbox.get_event(pool, events[3]["id"])
    assert row is not None and row["status"] == "received"


async def _backlog(
    pool: asyncpg.Pool, processor: EventProcessor, queue: JobQueue, tag: str, count: int, **options: Any
) -> tuple[list[tuple[str, int]], _Batches, EventBatcher]:
    """``count`` events of one history stored and queued, and a read-ahead batcher over them."""
    events = _history(history_ids(tag))[:count]
    await _insert(pool, events)
    due = await _queued(queue, events)
    batches = _Batches()
    return due, batches, EventBatcher(processor, batches, read_ahead=queue.due_events, **options)


async def test_while_a_backlog_lasts_results_are_kept_ready_up_to_the_prefetch_limit(
    pool: asyncpg.Pool, processor: EventProcessor, queue: JobQueue
):
    due, batches, batcher = await _backlog(pool, processor, queue, "prefetch", 12, max_batch=4, prefetch=8)
    await asyncio.gather(*(batcher.process(e, score) for e, score in due[:2]))
    await batcher.close()  # the flusher has stopped: the prefetch limit was reached
    # The jobs' batch (2 waiting + 2 read ahead), then batches with no job waiting until 8
    # results wait for their jobs.
    assert [len(b) for b in batches.committed] == [4, 4, 4]
    assert [e for b in batches.committed for e in b] == [e for e, _ in due]
    rest = [await batcher.process(e, score) for e, score in due[2:]]
    assert {r.status for r in rest} == {"processed"} and len(batches.committed) == 3


async def test_read_ahead_goes_on_from_the_last_score_it_took(
    pool: asyncpg.Pool, processor: EventProcessor, queue: JobQueue
):
    events = _history(history_ids("floor"))[:12]
    await _insert(pool, events)
    start = datetime.now(UTC) - timedelta(minutes=1)  # due, and within arq's job expiry
    for n, e in enumerate(events):  # one score each, in order
        assert await queue.enqueue_event(e["id"], defer_until=start + timedelta(milliseconds=n))
    due = await queue.due_events(1000)
    reads: list[tuple[int, int | None]] = []

    async def read_ahead(limit: int, from_score: int | None) -> Any:
        reads.append((limit, from_score))
        return await queue.due_events(limit, from_score)

    batches = _Batches()
    batcher = EventBatcher(processor, batches, read_ahead=read_ahead, max_batch=4, prefetch=8)
    await asyncio.gather(*(batcher.process(e, score) for e, score in due[:2]))
    await batcher.close()
    assert [e for b in batches.committed for e in b] == [e for e, _ in due]
    # The first read starts at the head; each later one where the previous batch stopped, with a
    # window of the new jobs and the same-score margin rather than everything already taken.
    assert reads[0][1] is None
    assert [f for _, f in reads[1:3]] == [due[3][1], due[7][1]]
    assert all(limit <= 4 + event_batches._SAME_SCORE_MARGIN for limit, _ in reads[1:3])
    rest = [await batcher.process(e, score) for e, score in due[2:]]
    assert {r.status for r in rest} == {"processed"} and [len(b) for b in batches.committed] == [4, 4, 4]


async def test_read_ahead_reads_from_the_head_again_when_same_score_jobs_fill_its_window(
    pool: asyncpg.Pool, processor: EventProcessor, queue: JobQueue, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(event_batches, "_SAME_SCORE_MARGIN", 0)
    # Queued in one call: every job has the same score, so a read from the last score taken
    # finds only jobs already taken until it reads from the head again.
    due, batches, batcher = await _backlog(pool, processor, queue, "ties", 12, max_batch=4, prefetch=8)
    assert len({score for _, score in due}) == 1
    await asyncio.gather(*(batcher.process(e, score) for e, score in due[:2]))
    await batcher.close()
    assert [len(b) for b in batches.committed] == [4, 4, 4]
    assert [e for b in batches.committed for e in b] == [e for e, _ in due]


async def test_a_kept_result_no_job_came_for_is_forgotten(
    pool: asyncpg.Pool, processor: EventProcessor, queue: JobQueue
):
    due, batches, batcher = await _backlog(pool, processor, queue, "stale", 3, keep_seconds=0)
    await asyncio.gather(*(batcher.process(e, score) for e, score in due[:2]))
    assert batches.committed == [[e for e, _ in due]]
    await batcher.close()
    batcher._room_ahead()  # what the next prefetch check does: another worker ran that job
    event_id, score = due[2]
    again = await batcher.process(event_id, score)
    assert again.outcome == "duplicate" and batches.committed[1:] == [[event_id]]


async def test_the_indexed_columns_always_match_the_view_document(
    pool: asyncpg.Pool, processor: EventProcessor
):
    """The batch writes a workspace's view once, as JSON; its query columns are read from it."""
    ids = history_ids("columns")
    # A trial, an upgrade and a cancellation, then on a second workspace a renewal that fails
    # twice (blocked) and is paid.
    events = _history(ids)
    failing_ids = history_ids("columns_block")
    failing = sf.history_payment_failure(**failing_ids, invoice_id="in_" + failing_ids["sub_id"], failures=2)
    await _insert(pool, events + failing)
    seen_blocked = set()
    for e, workspace_id in [
        *((e, ids["workspace_id"]) for e in events),
        *((e, failing_ids["workspace_id"]) for e in failing),
    ]:
        await processor.process(e["id"])
        row = await pool.fetchrow(
            "SELECT plan, interval, seats, status, subscription_id, trial_end, period_start, period_end, "
            "cancel_at_period_end, custom_contract, storage_addon_units, storage_quota_bytes, blocked, "
            "dunning_level, view FROM workspaces WHERE workspace_id = $1",
            workspace_id,
        )
        assert row is not None
        view = row["view"]
        expected = {
            **{k: view[k] for k in ("plan", "interval", "seats", "status", "subscription_id")},
            **{k: view[k] for k in ("cancel_at_period_end", "custom_contract", "storage_addon_units")},
            "storage_quota_bytes": view["storage_quota_bytes"],
            **{k: view[k] and parse_datetime(view[k]) for k in ("trial_end", "period_start", "period_end")},
            "blocked": view["block"] is not None,
            "dunning_level": view["block"]["level"] if view["block"] else None,
        }
        assert {k: row[k] for k in expected} == expected, e["type"]
        seen_blocked.add(row["blocked"])
    assert seen_blocked == {True, False}  # both shapes of the block were checked
