"""Group commit: a batch of events must leave exactly the state that one-by-one processing leaves.

A ``process_events`` job hands ``EventProcessor.process_batch`` the events of one receiver flush
(``worker.processing.batches``), so a batch can hold several events of one workspace,
duplicates, events that map a customer for later ones, and events that fail; two jobs may hold
the same events or workspaces. These tests run real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from handlers.codec import parse_datetime, to_jsonable
from tests.support import stripe_factory as sf
from tests.support.helpers import history_ids, wait_for
from tests.support.inbox import inbox_rows
from tests.support.poisoned import PoisonedProcessor
from worker.processing.batches import Outcome, apply_events
from worker.processing.transactions import EventTransactions
from worker.processing.unit_of_work import EventProcessor, ProcessResult
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


async def _no_fetch(pending: ProcessResult) -> Any:
    raise AssertionError(f"no thin event here: {pending.event_id}")


async def _apply(processor: EventProcessor, after: Any, ids: list[str]) -> dict[str, Outcome]:
    """What one ``process_events`` job carrying ``ids`` ends with: each event's final outcome."""
    outcomes: dict[str, Outcome] = {}

    def report(event_id: str, outcome: Outcome) -> None:
        assert event_id not in outcomes, f"{event_id} reported twice"
        outcomes[event_id] = outcome

    await apply_events(processor, after, _no_fetch, ids, report)
    return outcomes


async def test_a_failing_event_fails_alone_and_the_others_of_its_job_commit(pool: asyncpg.Pool):
    ids = history_ids("poison")
    events = _history(ids)[:4]
    await _insert(pool, events)
    processor = PoisonedProcessor(pool, load_catalog(None), lambda: NOW)
    processor.poison = events[2]["id"]
    batches = _Batches()
    outcomes = await _apply(processor, batches, [e["id"] for e in events])
    assert isinstance(outcomes[events[2]["id"]], RuntimeError)
    assert [outcomes[e["id"]].status for i, e in enumerate(events) if i != 2] == ["processed"] * 3  # type: ignore[union-attr]
    # The batch failed, so each event got a transaction of its own; the bus heard of the three.
    assert batches.committed == [[e["id"] for i, e in enumerate(events) if i != 2]]
    row = await inbox.get_event(pool, events[2]["id"])
    assert row is not None and row["status"] == "received"  # nothing of it was written


async def test_a_lock_timeout_fails_the_whole_batch_at_once_and_writes_nothing(pool: asyncpg.Pool):
    locked_ids, free_ids = history_ids("lockd"), history_ids("free")
    locked_events, free_events = _history(locked_ids)[:2], _history(free_ids)[:1]
    await _insert(pool, locked_events + free_events)
    processor = EventProcessor(pool, load_catalog(None), lambda: NOW, lock_timeout_ms=200)
    await processor.process(locked_events[0]["id"])  # the workspace row exists now
    job = [locked_events[1]["id"], free_events[0]["id"]]
    async with pool.acquire() as holder, holder.transaction():  # an API request holding the row
        await holder.execute(
            "SELECT 1 FROM workspaces WHERE workspace_id = $1 FOR UPDATE", locked_ids["workspace_id"]
        )
        outcomes = await _apply(processor, _ignore, job)
    assert all(isinstance(o, asyncpg.exceptions.LockNotAvailableError) for o in outcomes.values())
    assert list(outcomes) == job
    assert await inbox_rows(pool, job) == dict.fromkeys(job, "received")
    # Once the lock is gone, the same events go through (as their retry will do).
    again = await _apply(processor, _ignore, job)
    assert [r.status for r in again.values()] == ["processed", "processed"]  # type: ignore[union-attr]


async def _ignore(results: Any) -> None:
    return None


async def test_an_unmatched_event_whose_customer_its_batch_maps_ends_matched(
    pool: asyncpg.Pool, processor: EventProcessor
):
    ids, invoice, created = await _invoice_before_its_subscription(pool, "round")
    batches = _Batches()
    # One job: the invoice comes first and finds no workspace; the subscription then maps the
    # customer, so the invoice goes round again in a second transaction instead of waiting for
    # its backoff, and the bus is not asked to queue it.
    requeued: list[tuple[str, ...]] = []

    async def after(results: Any) -> None:
        await batches(results)
        requeued.extend(r.requeue for r in results if r.requeue)

    outcomes = await _apply(processor, after, [invoice["id"], created["id"]])
    got_invoice, got_created = outcomes[invoice["id"]], outcomes[created["id"]]
    assert isinstance(got_invoice, ProcessResult) and isinstance(got_created, ProcessResult)
    assert (got_invoice.status, got_invoice.workspace_id) == ("processed", ids["workspace_id"])
    assert got_created.newly_mapped_customer == ids["customer"]
    assert batches.committed == [[invoice["id"], created["id"]], [invoice["id"]]]
    assert requeued == []


async def test_the_same_event_in_two_concurrent_jobs_is_applied_once(
    pool: asyncpg.Pool, processor: EventProcessor
):
    """Job ids no longer coalesce: two jobs may carry one event. The row lock decides."""
    ids = history_ids("twice")
    events = _history(ids)[:6]
    await _insert(pool, events)
    every = [e["id"] for e in events]
    first, second = await asyncio.gather(
        _apply(processor, _ignore, every), _apply(processor, _ignore, every[::-1])
    )
    for event_id in every:
        pair = [o.outcome for o in (first[event_id], second[event_id])]  # type: ignore[union-attr]
        assert pair.count("duplicate") == 1 and {*pair} - {"duplicate"} <= {"applied", "stale"}, (
            event_id,
            pair,
        )
    audits = [r["version"] for r in await audit_entries(pool, ids["workspace_id"], limit=100)]
    assert sorted(audits) == list(range(1, len(audits) + 1))


async def test_overlapping_jobs_over_shared_workspaces_never_deadlock(
    pool: asyncpg.Pool, processor: EventProcessor
):
    """Jobs holding events of the same workspaces in opposite orders: events and workspaces are
    locked in id order, so they wait for each other instead of deadlocking."""
    histories = [_history(history_ids(f"ovl{n}")) for n in range(4)]
    await _insert(pool, [e for h in histories for e in h])
    mixed = [e["id"] for group in zip(*histories, strict=False) for e in group]
    rng = random.Random(7)
    jobs = [rng.sample(mixed, k=len(mixed) // 2) for _ in range(6)]
    results = await asyncio.gather(*(_apply(processor, _ignore, job) for job in jobs))
    failures = [o for r in results for o in r.values() if isinstance(o, BaseException)]
    assert failures == []
    applied = [o.event_id for r in results for o in r.values() if o.outcome in {"applied", "stale"}]  # type: ignore[union-attr]
    assert len(applied) == len(set(applied))  # none applied twice


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


class _Counting(EventProcessor):
    """The real processor, counting how many of its transactions run at once."""

    running: int = 0
    most: int = 0

    async def process_batch(self, event_ids: Any, fetched: Any = None) -> Any:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            return await super().process_batch(event_ids, fetched)
        finally:
            self.running -= 1


async def test_a_workers_jobs_share_its_transaction_limit(pool: asyncpg.Pool):
    """Jobs over the same workspaces serialise on their rows anyway: a worker runs at most
    ``slots`` of their transactions at once, rather than make the last wait on the others'
    locks past the lock timeout."""
    histories = [_history(history_ids(f"gate{n}")) for n in range(3)]
    await _insert(pool, [e for h in histories for e in h])
    processor = _Counting(pool, load_catalog(None), lambda: NOW)
    gate = EventTransactions(processor, slots=1)
    jobs = [[e["id"] for e in h] for h in histories] * 2  # each history twice: duplicates too

    async def job(ids: list[str]) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        await apply_events(processor, _ignore, _no_fetch, ids, outcomes.__setitem__, gate)
        return outcomes

    results = await asyncio.gather(*(job(ids) for ids in jobs))
    assert processor.most == 1
    assert not [o for r in results for o in r.values() if isinstance(o, BaseException)]


class _Calls(PoisonedProcessor):
    """The real processor (with an optional poisoned id), recording each transaction's ids; the
    first transaction waits for ``release``."""

    calls: list[list[str]]
    release: asyncio.Event

    async def process_batch(self, event_ids: Any, fetched: Any = None) -> Any:
        self.calls.append(list(event_ids))
        await self.release.wait()
        return await super().process_batch(event_ids, fetched)


def _now(read: Any) -> Any:
    """``read`` as the awaitable probe ``wait_for`` polls."""

    async def probe() -> Any:
        return read()

    return probe


async def _one_then_the_rest(
    processor: _Calls, transactions: EventTransactions, jobs: list[list[str]]
) -> list[dict[str, Outcome]]:
    """The first job's transaction starts; the other jobs wait for the slot; then it commits."""
    processor.calls, processor.release = [], asyncio.Event()
    first = asyncio.create_task(_job(processor, transactions, jobs[0]))
    await wait_for(_now(lambda: len(processor.calls)), interval=0.005, what="the first transaction started")
    rest = [asyncio.create_task(_job(processor, transactions, ids)) for ids in jobs[1:]]
    await wait_for(
        _now(lambda: transactions.waiting),
        lambda n: n == len(rest),
        interval=0.005,
        what="the others waiting",
    )
    processor.release.set()
    return [await first, *[await r for r in rest]]


async def test_jobs_waiting_for_a_transaction_are_written_together_as_if_one_after_the_other(
    pool: asyncpg.Pool,
):
    # One slot busy with a first job; three more jobs wait and go into ONE transaction once it
    # frees, each job's events after the previous job's. Every job gets its own events' results.
    histories = [_history(history_ids(f"comb{n}")) for n in range(4)]
    await _insert(pool, [e for h in histories for e in h])
    processor = _Calls(pool, load_catalog(None), lambda: NOW)
    transactions = EventTransactions(processor, slots=1)
    jobs = [[e["id"] for e in h] for h in histories]
    results = await _one_then_the_rest(processor, transactions, jobs)
    assert processor.calls == [jobs[0], jobs[1] + jobs[2] + jobs[3]]
    for ids, outcomes in zip(jobs, results, strict=True):
        assert list(outcomes) == ids
        assert all(isinstance(o, ProcessResult) and o.status == "processed" for o in outcomes.values())
    # Each workspace's history applied in order: versions 1..n, as one job at a time would.
    for outcomes in results:
        applied = [
            o.version for o in outcomes.values() if isinstance(o, ProcessResult) and o.outcome == "applied"
        ]
        assert applied == list(range(1, len(applied) + 1))


async def test_a_bad_event_in_a_combined_transaction_fails_only_itself(pool: asyncpg.Pool):
    histories = [_history(history_ids(f"combbad{n}"))[:3] for n in range(3)]
    await _insert(pool, [e for h in histories for e in h])
    processor = _Calls(pool, load_catalog(None), lambda: NOW)
    processor.poison = histories[2][1]["id"]
    transactions = EventTransactions(processor, slots=1)
    jobs = [[e["id"] for e in h] for h in histories]
    results = await _one_then_the_rest(processor, transactions, jobs)
    failed = {e for outcomes in results for e, o in outcomes.items() if isinstance(o, BaseException)}
    assert failed == {processor.poison}
    assert sum(isinstance(o, ProcessResult) for outcomes in results for o in outcomes.values()) == 8
    # The combined transaction (jobs 2 and 3) failed; each of its jobs applied its events alone.
    assert jobs[1] + jobs[2] in processor.calls
    assert [[e] for e in jobs[2]] == [c for c in processor.calls if len(c) == 1 and c[0] in jobs[2]]


async def _job(
    processor: EventProcessor, transactions: EventTransactions, ids: list[str]
) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    await apply_events(processor, _ignore, _no_fetch, ids, outcomes.__setitem__, transactions)
    return outcomes


async def test_a_stopping_worker_lets_the_transaction_being_written_commit(pool: asyncpg.Pool):
    # arq cancels a stopping worker's jobs; the transaction already being written is not undone,
    # and close() (the worker's shutdown hook) waits for it before the pool closes.
    history = _history(history_ids("stopping"))[:3]
    await _insert(pool, history)
    processor = _Calls(pool, load_catalog(None), lambda: NOW)
    processor.calls, processor.release = [], asyncio.Event()
    transactions = EventTransactions(processor)
    ids = [e["id"] for e in history]
    job = asyncio.create_task(_job(processor, transactions, ids))
    await wait_for(_now(lambda: len(processor.calls)), interval=0.005, what="the transaction started")
    job.cancel()
    closing = asyncio.create_task(transactions.close())
    await asyncio.gather(job, return_exceptions=True)
    assert not closing.done()  # the transaction still holds its slot
    processor.release.set()
    await closing
    rows = [await inbox.get_event(pool, event_id) for event_id in ids]
    assert [r["status"] for r in rows if r is not None] == ["processed"] * 3
