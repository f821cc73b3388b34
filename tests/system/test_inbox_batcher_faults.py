"""The receiver's group commit when a private PostgreSQL or Redis goes down: 503 to the whole batch, nothing queued or the rows kept, and every retry accepted once the server is back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.helpers import customer_event, make_settings, running_service, wait_for
from tests.support.inbox import inbox_rows, queued_events
from worker.storage.migrate import migrate


@pytest.fixture
async def private_settings(embedded_postgres_factory, embedded_redis_factory) -> Any:
    postgres = embedded_postgres_factory()
    redis = embedded_redis_factory()
    await migrate(postgres.url())
    return make_settings(postgres.url(), redis.url(), "bwbatch"), postgres, redis


async def test_postgres_down_every_request_of_the_batch_gets_503_and_nothing_is_queued(private_settings):
    settings, postgres, _ = private_settings
    events = [customer_event("cus_batch") for _ in range(40)]
    async with running_service(settings, worker=False) as svc:
        postgres.stop()
        answers = await asyncio.gather(*(svc.post_event(e) for e in events))
        assert {(status, body["error"]["code"]) for status, body in answers} == {
            (503, "database_unavailable")
        }
        assert await svc.services.queue.depth() == 0
        postgres.start()
        # Stripe's retry once the database is back: every event accepted, stored and queued once.
        ids = [e["id"] for e in events]

        async def accepted() -> list[int]:
            return [status for status, _ in await asyncio.gather(*(svc.post_event(e) for e in events))]

        await wait_for(accepted, lambda statuses: set(statuses) == {200}, timeout=30, what="retries accepted")
        assert await inbox_rows(svc.services.pool, ids) == dict.fromkeys(ids, "received")
        assert set(await queued_events(svc.services, ids)) == set(ids)


async def test_redis_down_answers_queue_unavailable_and_keeps_theinbox_rows(private_settings):
    settings, _, redis = private_settings
    events = [customer_event("cus_batch") for _ in range(40)]
    ids = [e["id"] for e in events]
    async with running_service(settings, worker=False) as svc:
        redis.stop()
        answers = await asyncio.gather(*(svc.post_event(e) for e in events))
        assert {(status, body["error"]["code"]) for status, body in answers} == {(503, "queue_unavailable")}
        assert await inbox_rows(svc.services.pool, ids) == dict.fromkeys(ids, "received")
        redis.start()

        async def retried() -> set[tuple[int, bool]]:
            answers = await asyncio.gather(*(svc.post_event(e) for e in events))
            return {(status, body.get("duplicate")) for status, body in answers}

        # Stripe's retries: duplicates of stored rows still `received`, so they are queued now.
        await wait_for(retried, lambda seen: seen == {(200, True)}, timeout=30, what="retries accepted")
        assert set(await queued_events(svc.services, ids)) == set(ids)
