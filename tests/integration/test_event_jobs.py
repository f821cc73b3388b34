"""The ``process_events`` job on real PostgreSQL and Redis: an event failing inside a job of several
is counted on its own row and queued again alone, deferred to its retry time; the others of the
job are applied once and not run again; dead once its tries are used up; when the failure
cannot be recorded, the whole job retries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.support import stripe_factory as sf
from tests.support.helpers import RunningService, running_service
from tests.support.inbox import inbox_rows, queued_event_jobs
from tests.support.money_helpers import ids as fresh_ids
from tests.support.poisoned import PoisonedProcessor
from worker.config import Settings
from worker.jobs.events import process_events
from worker.queue.retry import RetryLater
from worker.queue.worker import Job
from worker.receiver.app import store_in_inbox
from worker.storage import inbox


@pytest.fixture
async def service(fast_settings: Settings) -> AsyncIterator[RunningService]:
    async with running_service(fast_settings, worker=False) as svc:
        yield svc


async def _stored_history(svc: RunningService, count: int) -> list[str]:
    events = sf.history_lifecycle(**fresh_ids("job"))[:count]
    for e in events:
        await store_in_inbox(svc.services, e, json.dumps(e))
    return [e["id"] for e in events]


def _poisoned(svc: RunningService, event_id: str) -> PoisonedProcessor:
    services = svc.services
    processor = PoisonedProcessor(services.pool, services.catalog, services.clock)
    processor.poison = event_id
    services.__dict__["processor"] = processor  # the cached property the job reads
    return processor


async def test_a_failing_event_is_counted_on_its_row_and_queued_again_alone(service: RunningService):
    ids = await _stored_history(service, 3)
    _poisoned(service, ids[1])
    await process_events(Job(service.services, id="job-1"), ids)

    assert await inbox_rows(service.services.pool, ids) == {
        ids[0]: "processed",
        ids[1]: "failed",
        ids[2]: "processed",
    }
    row = await inbox.get_event(service.services.pool, ids[1])
    assert row is not None and row["attempts"] == 1
    assert row["last_error"].startswith("error: Traceback") and "poisoned" in row["last_error"]
    # Queued again alone, in a job deferred to the retry time written on its row (1 s: 2^0).
    jobs = await queued_event_jobs(service.services, ids)
    assert list(jobs.values()) == [[ids[1]]]
    [job_id] = jobs
    score = await service.services.redis.zscore(service.services.settings.queue_name, job_id)
    assert score is not None and abs(score - row["next_retry_at"].timestamp() * 1000) <= 1
    assert row["next_retry_at"] - row["received_at"] >= timedelta(seconds=1)


async def test_an_event_whose_tries_are_used_up_is_dead_and_not_queued_again(service: RunningService):
    ids = await _stored_history(service, 2)
    _poisoned(service, ids[0])
    max_tries = service.services.settings.max_tries
    await service.services.pool.execute(
        "UPDATE webhook_events SET status = 'failed', attempts = $2 WHERE event_id = $1",
        ids[0],
        max_tries - 1,
    )
    await process_events(Job(service.services, id="job-2"), ids)
    row = await inbox.get_event(service.services.pool, ids[0])
    assert row is not None and (row["status"], row["attempts"], row["next_retry_at"]) == (
        "dead",
        max_tries,
        None,
    )
    assert await queued_event_jobs(service.services, ids) == {}
    assert (await inbox.get_event(service.services.pool, ids[1]))["status"] == "processed"  # type: ignore[index]


async def test_when_the_failure_cannot_be_recorded_the_whole_job_retries(
    service: RunningService, monkeypatch: pytest.MonkeyPatch
):
    ids = await _stored_history(service, 2)
    _poisoned(service, ids[1])

    async def database_down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("the database is down")

    monkeypatch.setattr(inbox, "record_failures", database_down)
    with pytest.raises(RetryLater) as retry:
        await process_events(Job(service.services, attempt=2, id="job-3"), ids)
    assert retry.value.defer_seconds == 2.0  # arq's backoff for the job's second try
    # Nothing lost: the failed event is still `received` for the retry (or the sweep).
    assert await inbox_rows(service.services.pool, ids) == {ids[0]: "processed", ids[1]: "received"}
    assert await queued_event_jobs(service.services, ids) == {}
