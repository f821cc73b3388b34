"""The event transactions of one worker process: a few at once, and the jobs that wait for one
written together.

arq runs up to ``BW_MAX_JOBS`` jobs of a worker process at once, and each ``process_events`` job
carries the events of one receiver flush (20-odd under load). Their transactions are few at a
time (``slots``): jobs of events over the same workspaces serialise on the workspace rows anyway,
and more at once only makes the last wait past the lock timeout. A job that finds every slot busy
waits; when a slot frees, the jobs waiting then go into ONE transaction (up to ``max_events``
events, each job's events after the previous job's, as if the jobs ran one after the other), so
a backlog is written in fewer, larger transactions: fewer round trips per event, and a backlog
drains faster. A lone job is written at once (no timer, no added latency).

A worker that stops cancels its jobs (arq); a transaction already being written still ends (its
writer is not the job's task), and ``close`` waits for it before the pool closes. Its events'
after-commit reactions are then skipped, as after a crash right after a commit: they are best
effort by design, with sweeps behind them.

A combined transaction that fails hands its error to every job in it; each job then does what it
does when its own transaction fails (``worker.processing.batches``): a database error fails its
events (recorded and retried), any other error makes it apply its events one at a time
(``alone``: never combined), so one bad event fails only itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from handlers.thin import FetchedObject
from worker.processing.unit_of_work import EventProcessor, ProcessResult

# Event transactions one worker process runs at once.
SLOTS = 2
# Events one combined transaction takes at most (a job is never split).
MAX_EVENTS = 500


@dataclass
class _Request:
    ids: list[str]
    fetched: Mapping[str, FetchedObject] | None
    alone: bool
    future: asyncio.Future[list[ProcessResult]] = field(repr=False)


class EventTransactions:
    """``apply`` a job's events in the next free transaction slot, with the jobs waiting beside it."""

    def __init__(
        self, processor: EventProcessor, *, slots: int = SLOTS, max_events: int = MAX_EVENTS
    ) -> None:
        self._processor = processor
        self._slots = slots
        self._max_events = max_events
        self._waiting: deque[_Request] = deque()
        self._running = 0
        self._writers: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Let the transactions being written end (worker shutdown)."""
        if self._writers:
            await asyncio.gather(*self._writers, return_exceptions=True)

    @property
    def waiting(self) -> int:
        """Jobs waiting for a transaction slot."""
        return sum(not request.future.done() for request in self._waiting)

    async def apply(
        self, ids: list[str], fetched: Mapping[str, FetchedObject] | None = None
    ) -> list[ProcessResult]:
        """One result per id, once the transaction holding them committed; raises what that
        transaction raised. Cancelling the caller does not undo a transaction being written."""
        return await self._submit(ids, fetched, alone=False)

    async def alone(
        self, ids: list[str], fetched: Mapping[str, FetchedObject] | None = None
    ) -> list[ProcessResult]:
        """``apply`` in a transaction of their own (a failed transaction's events one at a time)."""
        return await self._submit(ids, fetched, alone=True)

    async def _submit(
        self, ids: list[str], fetched: Mapping[str, FetchedObject] | None, *, alone: bool
    ) -> list[ProcessResult]:
        future: asyncio.Future[list[ProcessResult]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Request(ids, fetched, alone, future))
        if self._running < self._slots:
            self._running += 1
            writer = asyncio.create_task(self._write())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        return await future

    async def _write(self) -> None:
        """One slot: write what waits, a combined transaction at a time, until nothing waits."""
        try:
            while self._waiting:
                taken = self._take()
                if taken:
                    await self._commit(taken)
        finally:
            # No await between the emptiness check and this line: a later job starts a writer.
            self._running -= 1

    def _take(self) -> list[_Request]:
        """The waiting jobs of the next transaction: a lone request, or jobs up to ``max_events``."""
        taken: list[_Request] = []
        size = 0
        while self._waiting:
            request = self._waiting[0]
            if request.future.done():  # its job was cancelled while it waited
                self._waiting.popleft()
                continue
            if taken and (request.alone or size + len(request.ids) > self._max_events):
                break
            self._waiting.popleft()
            taken.append(request)
            size += len(request.ids)
            if request.alone:
                break
        return taken

    async def _commit(self, taken: list[_Request]) -> None:
        ids = [event_id for request in taken for event_id in request.ids]
        fetched: dict[str, FetchedObject] = {}
        for request in taken:
            fetched.update(request.fetched or {})
        try:
            results = await self._processor.process_batch(ids, fetched or None)
        except Exception as exc:
            for request in taken:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        start = 0
        for request in taken:
            part = list(results[start : start + len(request.ids)])
            start += len(request.ids)
            if not request.future.done():
                request.future.set_result(part)
