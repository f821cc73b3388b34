"""Backfill missed events from Stripe's events API into the inbox, resumably.

Stripe keeps events for 30 days and lists them newest first; ``starting_after`` pagination is
stable while new events arrive (they go on top). A run is a row in ``backfill_runs`` whose
``cursor`` is the last event id read, saved after every page, so a crash or a Stripe error
resumes where it stopped. Each event goes through the receiver's own insert (idempotent on the
event id: only events the inbox does not have are new); the new events of a page are enqueued
together, oldest first (``process_events`` jobs, several ids each); if Redis is down they stay
``received`` and the inbox sweep enqueues them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from handlers.codec import json_int, to_jsonable
from handlers.normalize import PayloadError, validate_event_envelope
from worker.errors import Conflict, InvalidInput, NotFound
from worker.infra.logging import get_logger
from worker.infra.stripe_gateway import StripeGateway
from worker.receiver.app import store_in_inbox
from worker.services import Services

log = get_logger("backfill")

HORIZON = timedelta(days=30)  # Stripe's events API retention
BACKFILL_LOCK = 0x6266  # "bf": first key of the per-run advisory lock (the run id is the second)


MAX_RUN_ID = 2**63 - 1  # backfill_runs.run_id is a bigint


def check_since(since: datetime, now: datetime) -> datetime:
    """``since`` must lie within Stripe's 30-day horizon and not in the future."""
    if since < now - HORIZON:
        raise InvalidInput("since_out_of_range", "Stripe keeps events for 30 days: `since` is older")
    if since > now:
        raise InvalidInput("since_out_of_range", "`since` is in the future")
    return since


def check_run_id(value: int | None) -> int:
    """A run id as a caller gives it (None: not a whole number): positive, fits the bigint column."""
    if value is None or isinstance(value, bool) or not 1 <= value <= MAX_RUN_ID:
        raise InvalidInput("invalid_run_id", f"`run_id` must be an integer from 1 to {MAX_RUN_ID}")
    return value


async def start_run(pool: asyncpg.Pool, since: datetime, now: datetime) -> int:
    """Record a new run; ``since`` must lie within Stripe's 30-day horizon and not in the future."""
    check_since(since, now)
    return await pool.fetchval("INSERT INTO backfill_runs (since) VALUES ($1) RETURNING run_id", since)


async def get_run(pool: asyncpg.Pool, run_id: int) -> dict[str, Any] | None:
    row = await pool.fetchrow("SELECT * FROM backfill_runs WHERE run_id = $1", run_id)
    return None if row is None else to_jsonable(dict(row))


async def list_runs(pool: asyncpg.Pool, limit: int) -> list[dict[str, Any]]:
    """The latest ``limit`` runs, newest first (by the primary key)."""
    rows = await pool.fetch("SELECT * FROM backfill_runs ORDER BY run_id DESC LIMIT $1", limit)
    return [to_jsonable(dict(r)) for r in rows]


@dataclass(frozen=True)
class PageRead:
    """Progress after one page: ``pages`` read by this call, the run's totals so far (``skipped``:
    events the inbox already had, or malformed ones) and the cursor a resume starts after."""

    run_id: int
    pages: int
    fetched: int
    inserted: int
    skipped: int
    cursor: str | None
    done: bool


OnPage = Callable[[PageRead], None]


class BackfillBusy(Conflict):
    """Another process is reading this run right now."""

    def __init__(self, run_id: int) -> None:
        super().__init__("backfill_busy", f"backfill run {run_id} is being read by another process")


async def run_pages(
    services: Services,
    gateway: StripeGateway,
    run_id: int,
    *,
    max_pages: int | None = None,
    on_page: OnPage | None = None,
) -> dict[str, Any]:
    """Read pages from the stored cursor on; stops when done or after ``max_pages`` (then the
    run stays ``running`` and the caller continues it). Stripe errors mark the run ``failed``.
    One reader per run at a time (a session advisory lock): a second one gets ``BackfillBusy``."""
    # Its own connection, not a pooled one: closing it frees the lock whatever happens, and pooled
    # connections never carry session state (worker.db.keep_session relies on that).
    lock = await asyncpg.connect(services.settings.database_url)
    try:
        if not await lock.fetchval("SELECT pg_try_advisory_lock($1, $2)", BACKFILL_LOCK, run_id):
            raise BackfillBusy(run_id)
        return await _read(services, gateway, run_id, max_pages, on_page)
    finally:
        await lock.close()


async def _read(
    services: Services, gateway: StripeGateway, run_id: int, max_pages: int | None, on_page: OnPage | None
) -> dict[str, Any]:
    pool = services.pool
    run = await pool.fetchrow(
        "UPDATE backfill_runs SET status = 'running', last_error = NULL WHERE run_id = $1 "
        "AND status <> 'done' RETURNING since, cursor",
        run_id,
    )
    if run is None:
        current = await get_run(pool, run_id)
        if current is None:
            raise NotFound("backfill_not_found", f"no backfill run {run_id}")
        return current
    cursor, pages = run["cursor"], 0
    while max_pages is None or pages < max_pages:
        try:
            events, has_more = await gateway.events_page(int(run["since"].timestamp()), cursor)
        except Exception as exc:
            await pool.execute(
                "UPDATE backfill_runs SET status = 'failed', last_error = $2, updated_at = now() "
                "WHERE run_id = $1",
                run_id,
                f"{type(exc).__name__}: {exc}"[:1000],
            )
            log.warning("backfill_failed", run_id=run_id, error=type(exc).__name__)
            raise
        new = [event["id"] for event in events if await _store(services, event)]
        inserted = len(new)
        if new:
            try:
                await services.queue.enqueue_events(new[::-1])  # a page lists newest first
            except (RedisError, OSError) as exc:  # they stay `received`: the sweep enqueues them
                log.warning("backfill_enqueue_failed", count=len(new), error=type(exc).__name__)
        cursor = events[-1]["id"] if events else cursor
        pages += 1
        done = not has_more or not events
        totals = await pool.fetchrow(
            "UPDATE backfill_runs SET cursor = $2, seen = seen + $3, inserted = inserted + $4, "
            "status = $5, updated_at = now(), finished_at = CASE WHEN $5 = 'done' THEN now() END "
            "WHERE run_id = $1 RETURNING seen, inserted",
            run_id,
            cursor,
            len(events),
            inserted,
            "done" if done else "running",
        )
        if on_page is not None:
            seen, stored = totals["seen"], totals["inserted"]
            on_page(PageRead(run_id, pages, seen, stored, seen - stored, cursor, done))
        if done:
            break
    result = await get_run(pool, run_id)
    assert result is not None
    log.info("backfill_progress", run_id=run_id, status=result["status"], inserted=result["inserted"])
    return result


async def _store(services: Services, event: dict[str, Any]) -> bool:
    """Insert ``event`` into the inbox; whether it is new (a malformed envelope is skipped)."""
    try:
        validate_event_envelope(event)
    except PayloadError as exc:
        log.warning("backfill_skipped", event_id=str(event.get("id"))[:80], error=str(exc)[:200])
        return False
    is_new, _ = await store_in_inbox(services, event, json.dumps(event))
    return is_new


def parse_since(value: Any) -> datetime:
    """``since`` as an operator gives it: unix seconds, or an ISO-8601 time with a zone."""
    seconds = json_int(value)
    if seconds is not None:
        if not 0 <= seconds < 2**33:
            raise InvalidInput("invalid_since", "`since` is out of range")
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    raise InvalidInput("invalid_since", "`since` must be a unix time or an ISO-8601 time with a zone")
