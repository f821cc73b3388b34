"""Group commit for event jobs: the ``process_event`` jobs running in one worker share transactions.

arq runs up to ``max_jobs`` jobs at once, one per event. Rather than one transaction (a dozen
round trips) per event, each job hands its event id to the batcher and waits for its own result.
Whatever arrives while a batch is being written goes into the next one, so a lone event is
processed at once (no timer, no added latency) and a burst shares the per-transaction cost.
Each job still ends with its own event's result or error: when a batch fails on an event (a bug,
a constraint), its events are retried one by one, so one bad event fails only its own job and
arq retries it as before; when it fails on the database (down, lock timeout, deadlock), every job
of the batch gets that error and arq's backoff.

**Read-ahead.** arq starts jobs one Redis round trip at a time, so on its own a backlog gives
batches of a few events. When a backlog shows (more than one job waiting, or the last read-ahead
found work), a batch also takes the fresh events whose jobs are next in arq's queue (up to
``max_batch`` in all; ``SKIP LOCKED``, so it never waits for them). Their results are kept,
keyed by the job's queue score (one enqueueing of it), and handed to their jobs when arq starts
them: every event still has its own job, log line and metrics, but a backlog is written in batches
of ``max_batch``. While the backlog lasts, the batcher keeps up to ``prefetch`` results ahead of
the jobs arq has started, so a job usually finds its result ready and ends at once. A kept result
no job came for (another worker ran the job) is dropped after ``keep_seconds``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from handlers.evolve import evolve
from handlers.thin import FetchedObject
from worker.infra import metrics, tracing
from worker.infra.logging import get_logger
from worker.processing.unit_of_work import EventProcessor, ProcessResult
from worker.storage.db import is_transient

log = get_logger("event_batches")

AfterCommit = Callable[[Sequence[ProcessResult]], Awaitable[None]]
# (event id, queue score) of the first ``limit`` due event jobs, in the order arq starts them,
# from a score on (None: from the start of the queue).
ReadAhead = Callable[[int, int | None], Awaitable[Sequence[tuple[str, int]]]]
# Jobs queued in the same millisecond share a score: how many of those already taken a window
# that starts at the last score taken expects to read again.
_SAME_SCORE_MARGIN = 64
Waiting = tuple[str, "asyncio.Future[ProcessResult]"]
Outcome = ProcessResult | BaseException


class EventBatcher:
    def __init__(
        self,
        processor: EventProcessor,
        after_commit: AfterCommit,
        *,
        read_ahead: ReadAhead | None = None,
        max_batch: int = 100,
        concurrency: int = 2,
        extra_flusher_after: int = 16,
        prefetch: int | None = None,
        keep_seconds: float = 60.0,
        max_kept: int = 10_000,
    ) -> None:
        self._processor = processor
        self._after_commit = after_commit
        self._read_ahead = read_ahead
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._extra_flusher_after = extra_flusher_after
        self._prefetch = 2 * max_batch if prefetch is None else prefetch
        self._keep_seconds = keep_seconds
        self._max_kept = max_kept
        self._waiting: list[Waiting] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._active = 0
        self._busy: set[str] = set()  # events of the batches being written
        # Read-ahead events being written, by (event id, score); None when their job must process
        # the event itself.
        self._ahead: dict[tuple[str, int], asyncio.Future[ProcessResult | None]] = {}
        # Read-ahead results waiting for their job, by event id: (score, kept at, result).
        self._kept: dict[str, tuple[int, float, ProcessResult]] = {}
        self._backlog = False
        # The highest queue score read ahead while the backlog lasts: the next read starts there
        # (what comes before it is taken, kept or answered) instead of at the head of the queue.
        self._from_score: int | None = None
        # Events whose jobs just got their result: still in arq's queue until arq finishes them.
        self._answered: dict[str, None] = {}
        # Thin events' related objects, fetched by their jobs, until their jobs are answered.
        self._fetched: dict[str, FetchedObject] = {}

    async def process(
        self, event_id: str, score: int | None = None, fetched: FetchedObject | None = None
    ) -> ProcessResult:
        """This event's result once the batch holding it committed (and was notified), or its
        error. ``score`` (the job's queue score) lets a job take the result of a read-ahead of
        its event; ``fetched``, a thin event's related object its job fetched. Cancelling the
        caller does not undo a batch already being written."""
        if fetched is not None:
            self._fetched[event_id] = fetched
            try:
                return await self._process_waiting(event_id)
            finally:
                self._fetched.pop(event_id, None)
        if score is not None:
            kept = self._kept.get(event_id)
            if kept is not None and kept[0] == score:
                del self._kept[event_id]
                self._answer(event_id)
                return kept[2]
            ahead = self._ahead.pop((event_id, score), None)
            if ahead is not None and (result := await ahead) is not None:
                return result
        return await self._process_waiting(event_id)

    async def _process_waiting(self, event_id: str) -> ProcessResult:
        future: asyncio.Future[ProcessResult] = asyncio.get_running_loop().create_future()
        self._wait(event_id, future)
        return await future

    async def close(self) -> None:
        """Let the batches being written finish (worker shutdown)."""
        if self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)

    def _wait(self, event_id: str, future: asyncio.Future[ProcessResult]) -> None:
        self._waiting.append((event_id, future))
        # One flusher gives the largest batches; more only when a backlog builds up behind it.
        if self._active == 0 or (
            self._active < self._concurrency and len(self._waiting) >= self._extra_flusher_after
        ):
            self._active += 1
            task = asyncio.create_task(self._flush())
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)

    async def _flush(self) -> None:
        try:
            while True:
                if self._waiting:
                    taken, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
                    batch = [(event_id, f) for event_id, f in taken if not f.done()]  # done: job cancelled
                    if batch:
                        await self._run(batch)
                elif self._backlog and self._read_ahead is not None and self._room_ahead():
                    await self._run([])  # no job waits: keep results ready for the next ones
                else:
                    break
        finally:
            # No await between the emptiness check and this line: a job arriving later starts a flusher.
            self._active -= 1

    async def _run(self, batch: list[Waiting]) -> None:
        ids = [event_id for event_id, _ in batch]
        ahead = await self._take_ahead(ids) if len(batch) > 1 or self._backlog else {}
        if not ids and not ahead:
            return
        busy = [*ids, *(event_id for event_id, _ in ahead)]
        self._busy.update(busy)
        started_ns = time.time_ns() if tracing.enabled() else 0
        try:
            metrics.EVENT_BATCH_SIZE.observe(len(busy))
            fetched = {e: self._fetched[e] for e in ids if e in self._fetched}
            outcomes, taken = await self._outcomes(ids, [event_id for event_id, _ in ahead], fetched)
        finally:
            self._busy.difference_update(busy)
        if not taken:
            self._backlog = False  # nothing read ahead was written (none left, or a failure)
        committed = [o for o in outcomes if isinstance(o, ProcessResult)] + list(taken.values())
        if started_ns and committed:
            committed = traced(committed, started_ns, time.time_ns())
        # Unmatched events whose customer this batch mapped go round again rather than end
        # unmatched: their jobs wait for the next batch, their read-ahead results are dropped.
        again = {event_id for r in committed for event_id in r.requeue}
        if committed:
            try:
                await self._after_commit(committed)
            except Exception as exc:  # the events are committed; the reactions are best effort
                log.warning("after_commit_failed", size=len(committed), error=repr(exc)[:300])
        for (event_id, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if event_id in again:
                self._wait(event_id, future)
                continue
            self._answer(event_id)
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        for (event_id, score), pending in ahead.items():
            result = None if event_id in again else taken.get(event_id)
            unclaimed = self._ahead.pop((event_id, score), None) is not None
            if result is not None and unclaimed:
                self._keep(event_id, score, result)  # no job came for it yet
            elif result is not None:
                self._answer(event_id)  # its job is waiting for it
            if not pending.done():
                pending.set_result(result)

    async def _take_ahead(
        self, ids: Sequence[str]
    ) -> dict[tuple[str, int], asyncio.Future[ProcessResult | None]]:
        """Register the next due event jobs of arq's queue (not already waiting, kept or being
        written) as read-ahead of a batch holding ``ids``."""
        if self._read_ahead is None:
            return {}
        room = self._max_batch - len(ids)
        skip = {*ids, *self._busy, *self._answered, *(event_id for event_id, _ in self._waiting)}
        bound = 10 * self._max_batch
        try:
            from_head = True
            if self._backlog and self._from_score is not None:
                # From the last score taken: a window of what may wait there, and the new jobs.
                limit = min(room + len(ids) + len(self._waiting) + _SAME_SCORE_MARGIN, bound)
                due = await self._read_ahead(limit, self._from_score)
                ahead = self._select(due, skip, room)
                # From the head again only when jobs of that score filled the whole window.
                from_head = not ahead and len(due) >= limit
            if from_head:
                # The window reaches past what is already waiting, kept, being written or
                # answered (a window holding only those would give ever smaller batches).
                known = len(self._waiting) + len(self._kept) + len(self._busy) + len(self._answered)
                due = await self._read_ahead(min(known + len(ids) + room, bound), None)
                ahead = self._select(due, skip, room)
        except Exception as exc:  # Redis is down: the jobs that wait go on without read-ahead
            log.warning("read_ahead_failed", error=repr(exc)[:300])
            return {}
        self._backlog = bool(ahead)
        self._from_score = max((score for _, score in ahead), default=None)
        self._ahead.update(ahead)
        return ahead

    def _select(
        self, due: Sequence[tuple[str, int]], skip: set[str], room: int
    ) -> dict[tuple[str, int], asyncio.Future[ProcessResult | None]]:
        """Up to ``room`` of the due jobs not already waiting, kept, being written or answered."""
        loop = asyncio.get_running_loop()
        ahead: dict[tuple[str, int], asyncio.Future[ProcessResult | None]] = {}
        for event_id, score in due:
            if len(ahead) >= room:
                break
            if event_id not in skip and event_id not in self._kept and (event_id, score) not in self._ahead:
                ahead[(event_id, score)] = loop.create_future()
        return ahead

    def _answer(self, event_id: str) -> None:
        self._answered[event_id] = None
        if len(self._answered) > 2 * self._max_batch:
            del self._answered[next(iter(self._answered))]

    def _keep(self, event_id: str, score: int, result: ProcessResult) -> None:
        self._kept.pop(event_id, None)  # a newer enqueueing's result goes to the end
        self._kept[event_id] = (score, asyncio.get_running_loop().time(), result)
        if len(self._kept) > self._max_kept:
            del self._kept[next(iter(self._kept))]

    def _room_ahead(self) -> bool:
        """Whether fewer than ``prefetch`` results wait for their jobs (after forgetting those
        kept longer than ``keep_seconds``: another worker ran their jobs)."""
        stale = asyncio.get_running_loop().time() - self._keep_seconds
        while self._kept and next(iter(self._kept.values()))[1] < stale:
            del self._kept[next(iter(self._kept))]
        return len(self._kept) + len(self._ahead) < self._prefetch

    async def _outcomes(
        self, ids: list[str], ahead: list[str], fetched: dict[str, FetchedObject]
    ) -> tuple[list[Outcome], dict[str, ProcessResult]]:
        """One outcome per waiting event, and the read-ahead events committed with them."""
        try:
            results, taken = await self._processor.process_batch(ids, ahead, fetched)
            return list(results), taken
        except Exception as exc:
            if is_transient(exc):
                # The database is down or busy (lock or statement timeout, deadlock): every event
                # of the batch gets the error and arq's backoff, rather than N slow retries now.
                return [exc] * len(ids), {}
            if ahead:  # a read-ahead event may be the bad one: it is left to its own job
                return await self._outcomes(ids, [], fetched)
            if len(ids) == 1:
                return [exc], {}
            log.info("batch_retried_singly", size=len(ids), error=f"{type(exc).__name__}: {exc}"[:300])
            return [await self._single(event_id, fetched) for event_id in ids], {}

    async def _single(self, event_id: str, fetched: dict[str, FetchedObject]) -> Outcome:
        try:
            one = {event_id: fetched[event_id]} if event_id in fetched else None
            return (await self._processor.process_batch([event_id], (), one))[0][0]
        except Exception as exc:
            return exc


def traced(committed: list[ProcessResult], start_ns: int, end_ns: int) -> list[ProcessResult]:
    """The spans of a committed batch; its results carry their event's span on (after-commit jobs).

    A batch holds events of many traces and a span has one parent, so the transaction is an
    ``event_batch`` span of its own trace, linked to the events' receiver spans, and each event
    gets a ``process_event`` span over the same transaction, a child of its receiver span (its
    webhook's trace goes on) and linked to the batch span."""
    batch = tracing.record_span(
        "event_batch",
        start_ns=start_ns,
        end_ns=end_ns,
        attributes={"batch.size": len(committed)},
        links=[r.traceparent for r in committed],
    )
    return [
        evolve(
            r,
            traceparent=tracing.record_span(
                "process_event",
                start_ns=start_ns,
                end_ns=end_ns,
                parent=r.traceparent,
                attributes={
                    "event_id": r.event_id,
                    "event_type": r.event_type,
                    "workspace_id": r.workspace_id,
                    "outcome": r.outcome,
                    "status": r.status,
                    "version": r.version,
                    "batch.size": len(committed),
                },
                links=[batch],
            ),
        )
        for r in committed
    ]
