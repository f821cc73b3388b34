"""A thin notification when the receiver's private PostgreSQL is down: 503, nothing acknowledged,
then accepted and stored on Stripe's retry — the same guarantee as a snapshot event."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import stripe_factory as sf
from tests.support.helpers import history_ids, make_settings, running_service, wait_for
from tests.support.inbox import inbox_rows
from tests.support.thin_events import thin_of
from worker.storage.migrate import migrate


@pytest.fixture
async def private(embedded_postgres_factory, embedded_redis_factory) -> Any:
    postgres = embedded_postgres_factory()
    redis = embedded_redis_factory()
    await migrate(postgres.url())
    return make_settings(postgres.url(), redis.url(), "bwthin"), postgres


async def test_postgres_down_a_thin_event_gets_503_then_is_stored_on_retry(private):
    settings, postgres = private
    thin = thin_of(sf.history_lifecycle(**history_ids("thdown"))[0], context="acct_1Down")
    async with running_service(settings, worker=False) as svc:
        postgres.stop()
        status, body = await svc.post_event(thin)
        assert (status, body["error"]["code"]) == (503, "database_unavailable")
        postgres.start()

        async def retried() -> int:
            return (await svc.post_event(thin))[0]

        await wait_for(retried, lambda status: status == 200, timeout=30, what="Stripe's retry accepted")
        assert await inbox_rows(svc.services.pool, [thin["id"]]) == {thin["id"]: "received"}
