"""``GET /v1/backfill``: the latest backfill runs, newest first, with their progress (what the
support console's Backfill screen lists)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.helpers import RunningService
from tests.support.service_fixtures import service_fixture
from worker.ops import backfill

service = service_fixture(worker=False)


async def test_lists_the_latest_runs_newest_first_with_their_progress(service: RunningService):
    now = service.services.clock()
    pool = service.services.pool
    first = await backfill.start_run(pool, now - timedelta(days=2), now)
    second = await backfill.start_run(pool, now - timedelta(days=1), now)
    await pool.execute("UPDATE backfill_runs SET seen = 7, inserted = 3 WHERE run_id = $1", first)

    status, body = await service.api("GET", "/v1/backfill", params={"limit": "100"})
    assert status == 200 and body["count"] == len(body["runs"])
    ids = [r["run_id"] for r in body["runs"]]
    assert ids == sorted(ids, reverse=True)
    assert ids.index(second) < ids.index(first)
    run = next(r for r in body["runs"] if r["run_id"] == first)
    assert (run["status"], run["seen"], run["inserted"]) == ("running", 7, 3)

    status, body = await service.api("GET", "/v1/backfill", params={"limit": "1"})
    assert status == 200 and [r["run_id"] for r in body["runs"]] == [max(ids)]
    status, body = await service.api("GET", "/v1/backfill")  # default limit
    assert status == 200 and 2 <= body["count"] <= 20


@pytest.mark.parametrize("limit", ["0", "101", "x", "-1", ""])
async def test_a_limit_out_of_range_is_a_400(service: RunningService, limit: str):
    status, body = await service.api("GET", "/v1/backfill", params={"limit": limit})
    assert (status, body["error"]["code"]) == (400, "invalid_limit")


async def test_the_list_needs_the_token(service: RunningService):
    status, body = await service.api("GET", "/v1/backfill", token=None)
    assert (status, body["error"]["code"]) == (401, "unauthorized")
