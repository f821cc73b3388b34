"""Group commit for event jobs: the ``process_event`` jobs running in one worker share transactions.

arq runs up to ``max_jobs`` jobs at once, one per event. Rather than one transaction (a dozen
round trips) per event, each job hands its event id to the batcher and waits for its own result.
Whatever arrives while a batch is being written goes into the next one, so a lone event is
processed at once (no timer, no added latency) and a burst shares the per-transaction cost.
Each job still ends with its own event's result or error: when a batch fails on an event (a bug,
a constraint), its events are retried one by one, so one bad event fails only its own job and
arq retries it as before; when it fails on the database (down, lock timeout, deadlock), every job
of the batch gets that error and arq's backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from worker import metrics
from worker.db import is_transient
from worker.logging import get_logger
from worker.processor import EventProcessor, ProcessResult

log = get_logger("event_batches")

AfterCommit = Callable[[Sequence[ProcessResult]], Awaitable[None]]


class EventBatcher:
    def __init__(
        self,
        processor: EventProcessor,
        after_commit: AfterCommit,
        *,
        max_batch: int = 100,
        concurrency: int = 2,
        extra_flusher_after: int = 16,
    ) -> None:
        self._processor = processor
        self._after_commit = after_commit
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._extra_flusher_after = extra_flusher_after
        self._waiting: list[tuple[str, asyncio.Future[ProcessResult]]] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._active = 0

    async def process(self, event_id: str) -> ProcessResult:
        """This event's result once the batch holding it committed (and was notified), or its
        error. Cancelling the caller does not undo a batch already being written."""
        future: asyncio.Future[ProcessResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((event_id, future))
        # One flusher gives the largest batches; more only when a backlog builds up behind it.
        if self._active == 0 or (
            self._active < self._concurrency and len(self._waiting) >= self._extra_flusher_after
        ):
            self._active += 1
            task = asyncio.create_task(self._flush())
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        return await future

    async def close(self) -> None:
        """Let the batches being written finish (worker shutdown)."""
        if self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)

    async def _flush(self) -> None:
        try:
            while self._waiting:
                taken, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
                batch = [
                    (event_id, f) for event_id, f in taken if not f.done()
                ]  # done: its job was cancelled
                if batch:
                    await self._run(batch)
        finally:
            # No await between the emptiness check and this line: a job arriving later starts a flusher.
            self._active -= 1

    async def _run(self, batch: list[tuple[str, asyncio.Future[ProcessResult]]]) -> None:
        metrics.EVENT_BATCH_SIZE.observe(len(batch))
        ids = [event_id for event_id, _ in batch]
        try:
            outcomes: list[ProcessResult | BaseException] = list(await self._processor.process_many(ids))
        except Exception as exc:
            if len(batch) == 1 or is_transient(exc):
                # The database is down or busy (lock or statement timeout, deadlock): every event
                # of the batch gets the error and arq's backoff, rather than N slow retries now.
                outcomes = [exc] * len(batch)
            else:
                log.info("batch_retried_singly", size=len(batch), error=f"{type(exc).__name__}: {exc}"[:300])
                outcomes = [await self._single(event_id) for event_id in ids]
        committed = [o for o in outcomes if isinstance(o, ProcessResult)]
        if committed:
            try:
                await self._after_commit(committed)
            except Exception as exc:  # the events are committed; the reactions are best effort
                log.warning("after_commit_failed", size=len(committed), error=repr(exc)[:300])
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _single(self, event_id: str) -> ProcessResult | BaseException:
        try:
            return (await self._processor.process_many([event_id]))[0]
        except Exception as exc:
            return exc
