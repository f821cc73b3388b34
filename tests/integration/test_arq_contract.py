"""The arq behaviour ``worker/queue/`` relies on beyond arq's documented API, on a real Redis.

``JobQueue`` enqueues event jobs with its own Lua script (arq's ``enqueue_job`` in one round trip)
and reads arq's queue sorted set directly (``due_events``); ``worker.queue.worker`` turns arq's
``ctx`` into a ``Job`` and ``RetryLater`` into ``arq.Retry``. Each test here fails with a message
naming the arq assumption that no longer holds for the installed arq:

1. a job written by our script is a job a real arq ``Worker`` runs (keys ``arq:job:<id>``,
   pickled ``{t,f,a,k,et}``, member of the queue sorted set);
2. the queue score is arq's (ms; ``to_unix_ms(defer_until)``), and our script writes the same
   score, expiry and job encoding as arq's ``enqueue_job`` for the same id;
3. an id is refused while queued, running or kept (``arq:result:<id>``); with ``keep_result=0``
   it is free again once the job ends;
4. ``RetryLater`` makes arq run the job again with ``job_try`` 2, seen as ``Job.attempt``;
5. arq's ``ctx`` has ``job_try``, ``enqueue_time`` and ``score``, and a running job holds
   ``arq:in-progress:<id>``.

Every test uses its own key prefix and queue, and deletes its keys at the end.
"""

from __future__ import annotations

import asyncio
import pickle
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.jobs import deserialize_job, deserialize_job_raw
from arq.utils import timestamp_ms, to_unix_ms
from arq.worker import Worker, func

from tests.support.services import delete_prefixed_keys
from worker.queue.enqueue import PROCESS_EVENT, JobQueue
from worker.queue.redis import connect, redis_settings
from worker.queue.retry import RetryLater
from worker.queue.worker import Job, JobFunction, JobSpec, WorkerSpec, build_arq_worker

SERVICES = object()  # what the jobs get as ``Job.services``
POLL_DELAY = 0.01
RUN_TIMEOUT = 15.0
_KEY_PREFIXES = (job_key_prefix, retry_key_prefix, in_progress_key_prefix, result_key_prefix)


@pytest_asyncio.fixture(loop_scope="session")
async def queue(redis_url: str, redis_prefix: str) -> AsyncIterator[JobQueue]:
    """A ``JobQueue`` on its own prefix and queue; every key containing the prefix (job, retry,
    in-progress and result keys carry the job id, the health check carries the queue name) is
    deleted afterwards."""
    prefix = f"{redis_prefix}-arq-{secrets.token_hex(4)}"
    redis = await connect(redis_url)
    try:
        yield JobQueue(redis, prefix, f"{prefix}:queue")
    finally:
        await redis.aclose()
        await delete_prefixed_keys(redis_url, prefix)


async def _burst(worker: Worker) -> Worker:
    try:
        await asyncio.wait_for(worker.async_run(), RUN_TIMEOUT)
    finally:
        await worker.close()
    return worker


async def _run_ours(
    redis_url: str,
    queue: JobQueue,
    function: JobFunction,
    *,
    max_tries: int = 3,
    shared: dict[str, Any] | None = None,
) -> Worker:
    """Run the queue to empty with a burst worker built by ``worker.queue.worker``."""
    spec = WorkerSpec(
        redis_url=redis_url,
        queue_name=queue.queue_name,
        max_jobs=4,
        job_timeout=10,
        poll_delay=POLL_DELAY,
        jobs=[JobSpec(PROCESS_EVENT, function, max_tries)],
        crons=[],
        shared=shared or {},
    )
    return await _burst(build_arq_worker(spec, SERVICES, handle_signals=False, burst=True))


async def _run_raw(redis_url: str, queue: JobQueue, function: Any, *, keep_result: float) -> Worker:
    """Run the queue to empty with a plain arq ``Worker`` (to see what arq itself hands a job)."""
    worker = Worker(
        functions=[func(function, name=PROCESS_EVENT)],
        redis_settings=redis_settings(redis_url),
        queue_name=queue.queue_name,
        poll_delay=POLL_DELAY,
        keep_result=keep_result,
        handle_signals=False,
        burst=True,
    )
    return await _burst(worker)


async def _keys_of(queue: JobQueue, job_id: str) -> dict[str, int]:
    """Which of arq's per-job keys exist."""
    redis = queue.redis
    return {prefix: await redis.exists(prefix + job_id) for prefix in _KEY_PREFIXES}


def test_arq_key_names_are_the_ones_we_assume() -> None:
    assumed = {
        "job_key_prefix": (job_key_prefix, "arq:job:"),
        "result_key_prefix": (result_key_prefix, "arq:result:"),
        "in_progress_key_prefix": (in_progress_key_prefix, "arq:in-progress:"),
        "retry_key_prefix": (retry_key_prefix, "arq:retry:"),
    }
    changed = {name: got for name, (got, want) in assumed.items() if got != want}
    assert not changed, (
        f"arq.constants changed its key names {changed}: JobQueue's Lua script, "
        "tests/integration/test_inbox_batcher.py and runbooks assume arq:job:/arq:result:/arq:in-progress:<id>"
    )


async def test_a_job_our_script_enqueues_runs_on_a_real_arq_worker(redis_url: str, queue: JobQueue) -> None:
    runs: list[tuple[str, Job]] = []

    async def record(job: Job, event_id: str) -> str:
        runs.append((event_id, job))
        return "done"

    ids = ["evt_single", "evt_many_1", "evt_many_2"]
    assert await queue.enqueue_event(ids[0]) is True
    assert await queue.enqueue_events(ids[1:]) == [True, True]
    for event_id in ids:
        job_id = queue.event_job_id(event_id)
        assert await queue.redis.exists(f"arq:job:{job_id}") == 1, (
            f"JobQueue wrote no arq:job:<id> key for {job_id!r}"
        )
        assert await queue.redis.zscore(queue.queue_name, job_id) is not None, (
            f"JobQueue did not add {job_id!r} to the queue sorted set {queue.queue_name!r}"
        )

    worker = await _run_ours(redis_url, queue, record)

    ran = sorted(event_id for event_id, _ in runs)
    assert ran == sorted(ids), (
        f"arq ran {ran} (complete={worker.jobs_complete} failed={worker.jobs_failed}), expected each of "
        f"{sorted(ids)} once with the event id as its only argument: a job written by JobQueue's Lua "
        "script (pickled {t,f,a,k,et} under arq:job:<id>, id in the queue sorted set) is no longer "
        "a job the installed arq Worker can run"
    )
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (3, 0, 0)
    assert all(job.services is SERVICES and job.attempt == 1 for _, job in runs)
    for event_id in ids:
        job_id = queue.event_job_id(event_id)
        assert await _keys_of(queue, job_id) == dict.fromkeys(_KEY_PREFIXES, 0), (
            f"arq left keys of the finished job {job_id!r} behind, or wrote a result with keep_result=0"
        )
    assert await queue.depth() == 0, "arq did not remove finished jobs from the queue sorted set"


async def test_due_events_sees_arq_scores_and_our_script_writes_what_arq_writes(queue: JobQueue) -> None:
    redis = queue.redis
    now = datetime.now(UTC)
    cases: dict[str, datetime | None] = {
        "evt_now": None,
        "evt_past": now - timedelta(seconds=30, microseconds=123_456),
        "evt_future": now + timedelta(hours=1),
    }
    arq_enqueued: dict[str, tuple[float, bytes, int]] = {}
    for event_id, when in cases.items():
        job_id = queue.event_job_id(event_id)
        job = await redis.enqueue_job(
            PROCESS_EVENT, event_id, _job_id=job_id, _queue_name=queue.queue_name, _defer_until=when
        )
        assert job is not None, f"arq's enqueue_job refused a new id {job_id!r}"
        score = await redis.zscore(queue.queue_name, job_id)
        raw = await redis.get(job_key_prefix + job_id)
        assert score is not None and raw is not None, (
            f"arq's enqueue_job wrote no queue entry or job for {job_id!r}"
        )
        arq_enqueued[event_id] = (score, raw, await redis.pttl(job_key_prefix + job_id))
    # A job of another kind in the same queue, which due_events skips.
    assert await queue.enqueue_reconcile("ws_contract")

    past_ms = to_unix_ms(cases["evt_past"])  # type: ignore[arg-type]
    assert arq_enqueued["evt_past"][0] == past_ms, (
        f"arq's queue score of a job deferred until a datetime is {arq_enqueued['evt_past'][0]!r}, "
        f"not to_unix_ms(defer_until) = {past_ms} (milliseconds): due_events and the batcher read "
        "scores as arq's run times in ms"
    )
    now_score = int(arq_enqueued["evt_now"][0])
    assert abs(now_score - timestamp_ms()) < 60_000, (
        f"arq's score of an immediate job ({now_score}) is not the enqueue time in ms"
    )
    due = await queue.due_events(100)
    assert due == [("evt_past", past_ms), ("evt_now", now_score)], (
        f"due_events read {due} from arq's queue sorted set; expected the due event jobs in arq's "
        f"order with arq's scores, [('evt_past', {past_ms}), ('evt_now', {now_score})] (the deferred "
        "job not yet)"
    )
    assert await queue.due_events(1) == [("evt_past", past_ms)]
    assert await queue.due_events(100, from_score=now_score) == [("evt_now", now_score)]

    # The same ids again through our script: same score, expiry and job encoding as arq's.
    for event_id, when in cases.items():
        job_id = queue.event_job_id(event_id)
        arq_score, arq_raw, arq_pttl = arq_enqueued[event_id]
        await redis.delete(job_key_prefix + job_id)
        await redis.zrem(queue.queue_name, job_id)
        assert await queue.enqueue_event(event_id, defer_until=when) is True
        our_score = await redis.zscore(queue.queue_name, job_id)
        our_raw = await redis.get(job_key_prefix + job_id)
        our_pttl = await redis.pttl(job_key_prefix + job_id)
        assert our_score is not None and our_raw is not None

        theirs, ours = deserialize_job(arq_raw), deserialize_job(our_raw)
        fields = ("function", "args", "kwargs", "job_try")
        assert [getattr(ours, f) for f in fields] == [getattr(theirs, f) for f in fields], (
            f"{event_id}: our job {ours} differs from arq's {theirs} in {fields}"
        )
        assert abs(ours.enqueue_time - theirs.enqueue_time) < timedelta(seconds=60)
        arq_dict, our_dict = pickle.loads(arq_raw), pickle.loads(our_raw)
        assert {**our_dict, "et": 0} == {**arq_dict, "et": 0}, (
            f"{event_id}: arq's serialized job {arq_dict} is not what serialize_job gives our script "
            f"({our_dict}) apart from the enqueue time"
        )
        our_et = deserialize_job_raw(our_raw)[4]
        if when is None:
            assert our_score == our_et and arq_score == deserialize_job_raw(arq_raw)[4], (
                f"{event_id}: an immediate job's score is its enqueue time (et) in arq "
                f"({arq_score} vs et {deserialize_job_raw(arq_raw)[4]}) and in ours ({our_score} vs {our_et})"
            )
        else:
            assert our_score == arq_score == to_unix_ms(when), (
                f"{event_id}: our script's score {our_score} differs from arq's {arq_score} "
                f"for defer_until={when.isoformat()}"
            )
        # Expiry: (score - enqueue time) + expires_extra_ms in both, a few ms apart at most.
        assert abs(our_pttl - arq_pttl) < 60_000, (
            f"{event_id}: job key TTL {our_pttl} ms from our script vs {arq_pttl} ms from arq's enqueue_job"
        )


async def test_an_id_coalesces_while_queued_or_running_and_is_free_after(
    redis_url: str, queue: JobQueue
) -> None:
    redis = queue.redis
    event_id = "evt_coalesce"
    job_id = queue.event_job_id(event_id)
    assert await queue.enqueue_event(event_id) is True
    assert await queue.enqueue_event(event_id) is False, "a second enqueue of a queued job id was accepted"
    assert await queue.enqueue_events([event_id, "evt_other"]) == [False, True]
    assert (
        await redis.enqueue_job(PROCESS_EVENT, event_id, _job_id=job_id, _queue_name=queue.queue_name) is None
    ), "arq's own enqueue_job accepted an id our script queued: the two no longer agree on uniqueness"

    while_running: list[bool] = []

    async def enqueue_again(job: Job, event_id_: str) -> None:
        if event_id_ == event_id:
            while_running.append(await queue.enqueue_event(event_id))

    worker = await _run_ours(redis_url, queue, enqueue_again)
    assert worker.jobs_complete == 2
    assert while_running == [False], (
        f"enqueue while the job runs returned {while_running}; arq keeps arq:job:<id> until the job "
        "ends, so a running job must refuse its id"
    )
    assert await redis.exists(result_key_prefix + job_id) == 0, (
        "arq wrote arq:result:<id> although the worker sets keep_result=0"
    )
    assert await queue.enqueue_event(event_id) is True, (
        "with keep_result=0 the id of a finished job must be free again (replays always enqueue)"
    )


async def test_a_kept_result_blocks_the_id_in_our_script_too(redis_url: str, queue: JobQueue) -> None:
    """Our script refuses an id while ``arq:result:<id>`` exists: that is the key arq writes."""
    event_id = "evt_kept"
    job_id = queue.event_job_id(event_id)
    assert await queue.enqueue_event(event_id) is True

    async def done(ctx: dict[str, Any], event_id_: str) -> str:
        return "kept"

    worker = await _run_raw(redis_url, queue, done, keep_result=60)
    assert worker.jobs_complete == 1
    assert await queue.redis.exists(f"arq:result:{job_id}") == 1, (
        "arq kept the result of a job somewhere other than arq:result:<id>, the key JobQueue's script checks"
    )
    assert await queue.enqueue_event(event_id) is False, "our script accepted an id whose result arq keeps"


async def test_retry_later_runs_the_job_again_as_attempt_2(redis_url: str, queue: JobQueue) -> None:
    runs: list[Job] = []

    async def flaky(job: Job, event_id: str) -> None:
        runs.append(job)
        if job.attempt == 1:
            raise RetryLater(0.05)

    event_id = "evt_retry"
    assert await queue.enqueue_event(event_id)
    worker = await _run_ours(redis_url, queue, flaky)
    assert [job.attempt for job in runs] == [1, 2], (
        f"attempts seen {[job.attempt for job in runs]}: RetryLater (arq.Retry) must make arq run the "
        "job again with ctx['job_try'] == 2"
    )
    assert (worker.jobs_retried, worker.jobs_complete, worker.jobs_failed) == (1, 1, 0)
    first, second = runs
    assert first.score is not None and second.score is not None
    assert second.score >= first.score + 50, (
        f"after Retry(defer=0.05 s) arq ran the job with score {second.score}, first run {first.score}: "
        "arq moves the score to now + defer and ctx['score'] reports it"
    )
    assert await _keys_of(queue, queue.event_job_id(event_id)) == dict.fromkeys(_KEY_PREFIXES, 0)


async def test_retries_past_max_tries_fail_and_free_the_id(redis_url: str, queue: JobQueue) -> None:
    attempts: list[int] = []

    async def always_later(job: Job, event_id: str) -> None:
        attempts.append(job.attempt)
        raise RetryLater(0.01)

    event_id = "evt_exhausted"
    assert await queue.enqueue_event(event_id)
    worker = await _run_ours(redis_url, queue, always_later, max_tries=2)
    assert attempts == [1, 2], f"with max_tries=2 arq ran attempts {attempts}"
    assert worker.jobs_failed == 1, "arq did not fail the job after max_tries"
    assert await _keys_of(queue, queue.event_job_id(event_id)) == dict.fromkeys(_KEY_PREFIXES, 0), (
        "after 'max retries exceeded' arq left keys behind or kept a result although the worker "
        "sets keep_result=0 (finish_failed_job reads the worker-level setting)"
    )
    assert await queue.enqueue_event(event_id) is True


async def test_ctx_and_in_progress_key_are_what_we_read(redis_url: str, queue: JobQueue) -> None:
    event_id = "evt_ctx"
    job_id = queue.event_job_id(event_id)

    # What arq itself hands a job function.
    seen: dict[str, Any] = {}

    async def raw(ctx: dict[str, Any], event_id_: str) -> None:
        seen.update(ctx=dict(ctx), in_progress=await queue.redis.exists(f"arq:in-progress:{job_id}"))

    assert await queue.enqueue_event(event_id)
    [(_, due_score)] = await queue.due_events(10)
    await _run_raw(redis_url, queue, raw, keep_result=0)
    ctx = seen["ctx"]
    missing = {"job_id", "job_try", "enqueue_time", "score"} - set(ctx)
    assert not missing, f"arq's job ctx lacks {sorted(missing)} (keys: {sorted(ctx)}); Job reads them"
    assert ctx["job_id"] == job_id and ctx["job_try"] == 1
    assert isinstance(ctx["enqueue_time"], datetime) and ctx["enqueue_time"].tzinfo is not None, (
        f"ctx['enqueue_time'] is {ctx['enqueue_time']!r}, not an aware datetime"
    )
    assert ctx["score"] == due_score, (
        f"ctx['score'] {ctx['score']!r} is not the queue score due_events read ({due_score}); the "
        "batcher matches jobs to read-ahead entries by it"
    )
    assert seen["in_progress"] == 1, f"no arq:in-progress:{job_id} key while the job ran"

    # And through our door: Job carries arq's facts, not _job_of's defaults.
    runs: list[Job] = []

    async def record(job: Job, event_id_: str) -> None:
        runs.append(job)

    before = datetime.now(UTC)
    assert await queue.enqueue_event(event_id)
    [(_, due_score)] = await queue.due_events(10)
    await _run_ours(redis_url, queue, record, shared={"batcher": "the batcher"})
    [job] = runs
    assert job.attempt == 1 and job.score == due_score, f"Job {job} lost arq's job_try or score"
    assert job.enqueued_at is not None and abs(job.enqueued_at - before) < timedelta(seconds=60), (
        f"Job.enqueued_at {job.enqueued_at!r} is not arq's enqueue time"
    )
    assert job.services is SERVICES and job.shared == {"batcher": "the batcher"}
