"""Group commit of the receiver's inbox writes: one INSERT and one Redis call for many webhooks.

Why: a webhook may be answered 200 only once its row is durable and its job queued. Done one
request at a time that is a PostgreSQL commit and a Redis round trip per webhook, which is most
of the receiver's CPU. Here every verified webhook hands its event to one batcher and waits.
One flush runs at a time, and a second (``max_in_flight`` 2) only once ``extra_flush_after``
(16) arrivals wait behind it: each flush costs two round trips, and a second one for a handful of
webhooks cost more CPU than the wait it saved. While flushes are busy, new arrivals accumulate and
the next flush takes all of them (up to ``max_batch``): one multi-row INSERT (``inbox.insert_events``),
one ``JobQueue.enqueue_events`` (one Redis round trip) queueing ONE ``process_events`` job per
100 of the events that are new or still ``received`` (the worker applies a job's events in one
transaction), then each waiting request gets its answer.
A database failure fails the whole batch (nothing is queued); a Redis failure fails the events
that needed a job (their rows stay stored for Stripe's retry and the sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Literal

import asyncpg

from worker.infra.logging import get_logger
from worker.queue.enqueue import JobQueue
from worker.storage import inbox

log = get_logger("inbox_batcher")


@dataclass(frozen=True)
class Stored:
    """The event's row is durable and, unless it was already done, its job is queued."""

    is_new: bool
    status: str | None


@dataclass(frozen=True)
class Unavailable:
    """The event could not be stored (``database``) or its job could not be queued (``queue``)."""

    reason: Literal["database", "queue"]
    error: BaseException


class ReceiverStopping(ConnectionError):
    """Shutdown came before the event was stored: transient, Stripe retries (no traceback logged)."""


def _stopping() -> Unavailable:
    return Unavailable("database", ReceiverStopping("the receiver is stopping"))


class InboxUnavailable(Exception):
    def __init__(self, failure: Unavailable) -> None:
        super().__init__(failure.reason)
        self.reason = failure.reason
        self.error = failure.error


_Pending = tuple[inbox.InboxRow, "asyncio.Future[Stored | Unavailable]"]


class InboxBatcher:
    """Stores and queues events in batches; ``submit`` answers once its event's batch is done."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queue: JobQueue,
        *,
        max_batch: int = 500,
        max_in_flight: int = 2,
        extra_flush_after: int = 16,
        stop_timeout: float = 5.0,
    ) -> None:
        self._pool = pool
        self._queue = queue
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._extra_flush_after = extra_flush_after
        self._stop_timeout = stop_timeout
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    def start(self) -> None:
        # Kept: on Python 3.11 every get_running_loop() is a getpid() syscall, once per webhook here.
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="inbox-batcher")

    @property
    def closing(self) -> bool:
        return self._closing

    async def stop(self) -> None:
        """Flush what is pending (within ``stop_timeout``), then answer anything left 503.
        Idempotent; new submissions are refused from the first call on."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._stop_timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._fail(self._pending, _stopping())
        self._pending = []

    async def submit(self, row: inbox.InboxRow) -> Stored:
        """Store and queue ``row``'s event; raises ``InboxUnavailable`` when it cannot."""
        if self._closing or self._task is None or self._task.done() or self._loop is None:
            raise InboxUnavailable(_stopping())
        future: asyncio.Future[Stored | Unavailable] = self._loop.create_future()
        self._pending.append((row, future))
        self._wakeup.set()
        result = await future
        if isinstance(result, Unavailable):
            raise InboxUnavailable(result)
        return result

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        in_flight: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            self._wakeup.set()

        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                # A second flush only for a backlog: each flush costs its own two round trips.
                while (
                    self._pending
                    and len(in_flight) < self._max_in_flight
                    and (not in_flight or len(self._pending) >= self._extra_flush_after)
                ):
                    batch = self._pending[: self._max_batch]
                    del self._pending[: self._max_batch]
                    task = loop.create_task(self._flush(batch))
                    in_flight.add(task)
                    task.add_done_callback(done)
                if self._closing and not self._pending and not in_flight:
                    return
        except asyncio.CancelledError:
            for task in list(in_flight):
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            raise

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            await self._store_and_queue(batch)
        except asyncio.CancelledError:  # shutdown ran out of time: nobody is left waiting
            self._fail(batch, _stopping())
            raise
        except Exception as exc:  # a bug: answer 503 rather than leave the requests hanging
            log.exception("inbox_batch_failed", size=len(batch))
            self._fail(batch, Unavailable("database", exc))

    async def _store_and_queue(self, batch: list[_Pending]) -> None:
        rows: dict[str, inbox.InboxRow] = {}
        for row, _ in batch:
            rows.setdefault(row.event_id, row)  # the first delivery of an id inserts, the rest are duplicates
        try:
            async with self._pool.acquire() as conn:
                stored = await inbox.insert_events(conn, list(rows.values()))
        except Exception as exc:
            self._fail(batch, Unavailable("database", exc))
            return
        to_queue = [eid for eid, (is_new, status) in stored.items() if is_new or status == "received"]
        failed: Unavailable | None = None
        try:
            await self._queue.enqueue_events(to_queue)
        except Exception as exc:  # RedisError, OSError … : the rows stay stored as `received`
            failed = Unavailable("queue", exc)
        needs_job = set(to_queue)
        seen: set[str] = set()
        for row, future in batch:
            is_new, status = stored[row.event_id]
            first = row.event_id not in seen
            seen.add(row.event_id)
            if failed is not None and row.event_id in needs_job:
                _resolve(future, failed)
            else:
                _resolve(future, Stored(is_new and first, status))

    @staticmethod
    def _fail(batch: list[_Pending], failure: Unavailable) -> None:
        for _, future in batch:
            _resolve(future, failure)


def _resolve(future: asyncio.Future[Stored | Unavailable], result: Stored | Unavailable) -> None:
    if not future.done():  # the request may have been cancelled (client gone, timeout)
        future.set_result(result)
