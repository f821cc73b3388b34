"""The arq behaviour ``worker/queue/`` relies on beyond arq's documented API, on a real Redis.

``JobQueue`` enqueues event jobs with its own Lua script (arq's ``enqueue_job`` for many jobs in
one round trip); ``worker.queue.worker`` turns arq's ``ctx`` into a ``Job`` and ``RetryLater``
into ``arq.Retry``. Each test here fails with a message naming the arq assumption that no longer
holds for the installed arq:

1. a job written by our script is a job a real arq ``Worker`` runs (keys ``arq:job:<id>``,
   pickled ``{t,f,a,k,et}``, member of the queue sorted set): ``process_events`` with the list of
   event ids (at most ``MAX_JOB_EVENTS``) as its only argument, id ``<prefix>:evts:<uuid4 hex>``;
2. the queue score is arq's (ms; ``to_unix_ms(defer_until)``), and our script writes the same
   score, expiry and job encoding as arq's ``enqueue_job``;
3. every enqueueing is a job of its own, and with ``keep_result=0`` nothing of a job is left
   once it ends (no ``arq:result:<id>``);
4. ``RetryLater`` makes arq run the same job again with ``job_try`` 2, seen as ``Job.attempt``;
5. arq's ``ctx`` has ``job_id``, ``job_try``, ``enqueue_time`` and ``score``, and a running job
   holds ``arq:in-progress:<id>``;
6. ``ClaimingWorker`` overrides ``Worker.start_jobs(job_ids)`` and reads ``Worker.tasks``: a job
   another worker runs is never started, a job this worker runs is not started again, and every
   queued job still starts once.

Every test uses its own key prefix and queue, and deletes its keys at the end.
"""

from __future__ import annotations

import asyncio
import inspect
import pickle
import re
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
from worker.queue.enqueue import MAX_JOB_EVENTS, PROCESS_EVENTS, JobQueue
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
    spec = _spec(redis_url, queue, function, max_tries=max_tries, shared=shared)
    return await _burst(build_arq_worker(spec, SERVICES, handle_signals=False, burst=True))


def _spec(
    redis_url: str,
    queue: JobQueue,
    function: JobFunction,
    *,
    max_tries: int = 3,
    shared: dict[str, Any] | None = None,
) -> WorkerSpec:
    """Our worker's description with ``function`` as the event job, on the test's queue."""
    return WorkerSpec(
        redis_url=redis_url,
        queue_name=queue.queue_name,
        max_jobs=4,
        job_timeout=10,
        poll_delay=POLL_DELAY,
        jobs=[JobSpec(PROCESS_EVENTS, function, max_tries)],
        crons=[],
        shared=shared or {},
    )


async def _run_raw(redis_url: str, queue: JobQueue, function: Any, *, keep_result: float) -> Worker:
    """Run the queue to empty with a plain arq ``Worker`` (to see what arq itself hands a job)."""
    worker = Worker(
        functions=[func(function, name=PROCESS_EVENTS)],
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
    runs: list[tuple[list[str], Job]] = []

    async def record(job: Job, event_ids: list[str]) -> str:
        runs.append((event_ids, job))
        return "done"

    many = [f"evt_many_{n}" for n in range(MAX_JOB_EVENTS + 5)]
    assert await queue.enqueue_event("evt_single") is True
    job_ids = await queue.enqueue_events(many)
    assert len(job_ids) == 2, f"{len(many)} ids gave {len(job_ids)} jobs; expected chunks of {MAX_JOB_EVENTS}"
    for job_id in job_ids:
        assert re.fullmatch(rf"{re.escape(queue.prefix)}:evts:[0-9a-f]{{32}}", job_id), (
            f"event job id {job_id!r} is not <prefix>:evts:<uuid4 hex>"
        )
        assert await queue.redis.exists(f"arq:job:{job_id}") == 1, (
            f"JobQueue wrote no arq:job:<id> key for {job_id!r}"
        )
        assert await queue.redis.zscore(queue.queue_name, job_id) is not None, (
            f"JobQueue did not add {job_id!r} to the queue sorted set {queue.queue_name!r}"
        )

    worker = await _run_ours(redis_url, queue, record)

    ran = sorted(ids for ids, _ in runs)
    expected = sorted([["evt_single"], many[:MAX_JOB_EVENTS], many[MAX_JOB_EVENTS:]])
    assert ran == expected, (
        f"arq ran {ran} (complete={worker.jobs_complete} failed={worker.jobs_failed}), expected each "
        "chunk once with the list of event ids as its only argument: a job written by JobQueue's Lua "
        "script (pickled {t,f,a,k,et} under arq:job:<id>, id in the queue sorted set) is no longer "
        "a job the installed arq Worker can run"
    )
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (3, 0, 0)
    assert all(job.services is SERVICES and job.attempt == 1 for _, job in runs)
    assert {job.id for _, job in runs} >= set(job_ids), "Job.id is not arq's job id"
    for job_id in job_ids:
        assert await _keys_of(queue, job_id) == dict.fromkeys(_KEY_PREFIXES, 0), (
            f"arq left keys of the finished job {job_id!r} behind, or wrote a result with keep_result=0"
        )
    assert await queue.depth() == 0, "arq did not remove finished jobs from the queue sorted set"


async def test_our_script_writes_what_arq_writes(queue: JobQueue) -> None:
    redis = queue.redis
    now = datetime.now(UTC)
    cases: dict[str, datetime | None] = {
        "now": None,
        "past": now - timedelta(seconds=30, microseconds=123_456),
        "future": now + timedelta(hours=1),
    }
    ids = ["evt_a", "evt_b"]
    for case, when in cases.items():
        arq_id = f"{queue.prefix}:arq:{case}"
        job = await redis.enqueue_job(
            PROCESS_EVENTS, ids, _job_id=arq_id, _queue_name=queue.queue_name, _defer_until=when
        )
        assert job is not None, f"arq's enqueue_job refused a new id {arq_id!r}"
        arq_score = await redis.zscore(queue.queue_name, arq_id)
        arq_raw = await redis.get(job_key_prefix + arq_id)
        arq_pttl = await redis.pttl(job_key_prefix + arq_id)
        assert arq_score is not None and arq_raw is not None

        [job_id] = await queue.enqueue_events(ids, defer_until=when)
        our_score = await redis.zscore(queue.queue_name, job_id)
        our_raw = await redis.get(job_key_prefix + job_id)
        our_pttl = await redis.pttl(job_key_prefix + job_id)
        assert our_score is not None and our_raw is not None

        theirs, ours = deserialize_job(arq_raw), deserialize_job(our_raw)
        fields = ("function", "args", "kwargs", "job_try")
        assert [getattr(ours, f) for f in fields] == [getattr(theirs, f) for f in fields], (
            f"{case}: our job {ours} differs from arq's {theirs} in {fields}"
        )
        assert ours.args == (ids,), (
            f"{case}: the job's only argument is the list of event ids, got {ours.args}"
        )
        assert abs(ours.enqueue_time - theirs.enqueue_time) < timedelta(seconds=60)
        arq_dict, our_dict = pickle.loads(arq_raw), pickle.loads(our_raw)
        assert {**our_dict, "et": 0} == {**arq_dict, "et": 0}, (
            f"{case}: arq's serialized job {arq_dict} is not what serialize_job gives our script "
            f"({our_dict}) apart from the enqueue time"
        )
        our_et = deserialize_job_raw(our_raw)[4]
        if when is None:
            assert our_score == our_et and arq_score == deserialize_job_raw(arq_raw)[4], (
                f"an immediate job's score is its enqueue time (et) in arq ({arq_score} vs et "
                f"{deserialize_job_raw(arq_raw)[4]}) and in ours ({our_score} vs {our_et})"
            )
            assert abs(our_score - timestamp_ms()) < 60_000
        else:
            assert our_score == arq_score == to_unix_ms(when), (
                f"{case}: our script's score {our_score} differs from arq's {arq_score} "
                f"for defer_until={when.isoformat()}: arq's scores are run times in ms"
            )
        # Expiry: (score - enqueue time) + expires_extra_ms in both, a few ms apart at most.
        assert abs(our_pttl - arq_pttl) < 60_000, (
            f"{case}: job key TTL {our_pttl} ms from our script vs {arq_pttl} ms from arq's enqueue_job"
        )


async def test_every_enqueueing_is_a_job_of_its_own(redis_url: str, queue: JobQueue) -> None:
    """Job ids do not coalesce: the same event queued twice is two jobs (Postgres makes the
    second a no-op); with keep_result=0 nothing of either is left once they end."""
    first = await queue.enqueue_events(["evt_twice"])
    second = await queue.enqueue_events(["evt_twice"])
    assert len(first) == len(second) == 1 and first != second
    runs: list[list[str]] = []

    async def record(job: Job, event_ids: list[str]) -> None:
        runs.append(event_ids)

    worker = await _run_ours(redis_url, queue, record)
    assert runs == [["evt_twice"], ["evt_twice"]] and worker.jobs_complete == 2
    for job_id in first + second:
        assert await _keys_of(queue, job_id) == dict.fromkeys(_KEY_PREFIXES, 0), (
            f"arq left keys of {job_id!r} behind or kept its result although the worker sets keep_result=0"
        )


async def test_retry_later_runs_the_job_again_as_attempt_2(redis_url: str, queue: JobQueue) -> None:
    runs: list[Job] = []

    async def flaky(job: Job, event_ids: list[str]) -> None:
        runs.append(job)
        if job.attempt == 1:
            raise RetryLater(0.05)

    [job_id] = await queue.enqueue_events(["evt_retry"])
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
    assert first.id == second.id == job_id, "a retry is the same job (same id)"
    assert await _keys_of(queue, job_id) == dict.fromkeys(_KEY_PREFIXES, 0)


async def test_retries_past_max_tries_fail_and_leave_nothing(redis_url: str, queue: JobQueue) -> None:
    attempts: list[int] = []

    async def always_later(job: Job, event_ids: list[str]) -> None:
        attempts.append(job.attempt)
        raise RetryLater(0.01)

    [job_id] = await queue.enqueue_events(["evt_exhausted"])
    worker = await _run_ours(redis_url, queue, always_later, max_tries=2)
    assert attempts == [1, 2], f"with max_tries=2 arq ran attempts {attempts}"
    assert worker.jobs_failed == 1, "arq did not fail the job after max_tries"
    assert await _keys_of(queue, job_id) == dict.fromkeys(_KEY_PREFIXES, 0), (
        "after 'max retries exceeded' arq left keys behind or kept a result although the worker "
        "sets keep_result=0 (finish_failed_job reads the worker-level setting)"
    )


async def test_ctx_and_in_progress_key_are_what_we_read(redis_url: str, queue: JobQueue) -> None:
    # What arq itself hands a job function.
    seen: dict[str, Any] = {}
    [job_id] = await queue.enqueue_events(["evt_ctx"])
    due_score = await queue.redis.zscore(queue.queue_name, job_id)

    async def raw(ctx: dict[str, Any], event_ids: list[str]) -> None:
        seen.update(ctx=dict(ctx), in_progress=await queue.redis.exists(f"arq:in-progress:{job_id}"))

    await _run_raw(redis_url, queue, raw, keep_result=0)
    ctx = seen["ctx"]
    missing = {"job_id", "job_try", "enqueue_time", "score"} - set(ctx)
    assert not missing, f"arq's job ctx lacks {sorted(missing)} (keys: {sorted(ctx)}); Job reads them"
    assert ctx["job_id"] == job_id and ctx["job_try"] == 1
    assert isinstance(ctx["enqueue_time"], datetime) and ctx["enqueue_time"].tzinfo is not None, (
        f"ctx['enqueue_time'] is {ctx['enqueue_time']!r}, not an aware datetime"
    )
    assert ctx["score"] == due_score, (
        f"ctx['score'] {ctx['score']!r} is not the job's queue score ({due_score})"
    )
    assert seen["in_progress"] == 1, f"no arq:in-progress:{job_id} key while the job ran"

    # And through our door: Job carries arq's facts, not _job_of's defaults.
    runs: list[Job] = []

    async def record(job: Job, event_ids: list[str]) -> None:
        runs.append(job)

    before = datetime.now(UTC)
    [job_id] = await queue.enqueue_events(["evt_ctx"])
    due_score = await queue.redis.zscore(queue.queue_name, job_id)
    await _run_ours(redis_url, queue, record, shared={"thing": "shared"})
    [job] = runs
    assert job.attempt == 1 and job.score == due_score and job.id == job_id, f"Job {job} lost arq's facts"
    assert job.enqueued_at is not None and abs(job.enqueued_at - before) < timedelta(seconds=60), (
        f"Job.enqueued_at {job.enqueued_at!r} is not arq's enqueue time"
    )
    assert job.services is SERVICES and job.shared == {"thing": "shared"}


async def test_the_claiming_worker_skips_running_jobs_and_starts_each_job_once(
    redis_url: str, queue: JobQueue
) -> None:
    # ClaimingWorker overrides arq's start_jobs(job_ids) and reads its tasks (job id → task).
    params = list(inspect.signature(Worker.start_jobs).parameters)
    assert params == ["self", "job_ids"], (
        f"arq's Worker.start_jobs now takes {params}: ClaimingWorker overrides it"
    )
    # A job another worker runs (its in-progress key is set) is left alone; a long job of this
    # worker's, still in the queue while it runs across many polls, runs once; the first job
    # runs as soon as the other worker's key is gone.
    [elsewhere] = await queue.enqueue_events(["evt_elsewhere"])
    [long_job] = await queue.enqueue_events(["evt_long"])
    await queue.redis.psetex(in_progress_key_prefix + elsewhere, 60_000, b"1")
    runs: list[list[str]] = []
    release = asyncio.Event()

    async def record(job: Job, event_ids: list[str]) -> None:
        runs.append(event_ids)
        if event_ids == ["evt_long"]:
            await release.wait()

    worker = build_arq_worker(_spec(redis_url, queue, record), SERVICES, handle_signals=False, burst=False)
    assert isinstance(worker.tasks, dict), "arq's Worker.tasks is no longer a dict of job id → task"
    polls = [0]
    start_jobs = worker.start_jobs  # counted, not replaced: each poll that reads due jobs calls it

    async def counted(job_ids: list[bytes]) -> None:
        polls[0] += 1
        await start_jobs(job_ids)

    worker.start_jobs = counted  # type: ignore[method-assign]
    running = asyncio.create_task(worker.async_run())
    try:
        await _until(lambda: runs == [["evt_long"]], "the long job started")
        seen = polls[0]
        await _until(lambda: polls[0] >= seen + 20, "20 more polls")
        assert runs == [["evt_long"]], f"a running job was started again, or the other worker's: {runs}"
        await queue.redis.delete(in_progress_key_prefix + elsewhere)
        await _until(lambda: ["evt_elsewhere"] in runs, "the freed job started")
        release.set()
        await _until(lambda: not _busy(worker), "both jobs completed")
        assert sorted(runs) == [["evt_elsewhere"], ["evt_long"]], f"a job ran twice or not at all: {runs}"
        assert await queue.redis.zcard(queue.queue_name) == 0, "a finished job is still queued"
        assert long_job not in worker.tasks or worker.tasks[long_job].done()
    finally:
        release.set()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()


def _busy(worker: Worker) -> bool:
    """Whether the worker still runs a job."""
    return any(not task.done() for task in worker.tasks.values())


async def _until(condition: Any, what: str, timeout: float = RUN_TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(POLL_DELAY)
