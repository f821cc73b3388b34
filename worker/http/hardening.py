"""Protections shared by both HTTP ports: a time limit per request, and JSON answers even for
errors aiohttp's HTTP parser raises before any middleware runs (huge headers, bad request lines).

Public aiohttp does what it can: the size limits are ``AppRunner`` options and
``Application(client_max_size=...)`` (set where the ports start, ``worker.runner.start_site``),
the deadline and the JSON errors of routed requests are one middleware (``guarded``). The one
private hook of the service is ``harden``, with what it relies on pinned by
``tests/integration/test_aiohttp_contract.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

# The one aiohttp-internal import of the service (the parser's exception), used by ``harden`` alone.
from aiohttp.http_exceptions import LineTooLong

from worker.http.errors import error, error_for
from worker.services import SERVICES

_PARSER_CODES = {400: "bad_request", 413: "body_too_large", 414: "uri_too_long", 431: "headers_too_large"}


# How often overdue requests are looked for: a request is answered 408 between its limit and
# its limit + this (the limit is a whole number of seconds).
SWEEP_INTERVAL = 0.1


class _Deadlines:
    """The requests in flight on one event loop and when each must end; one sweeper task cancels
    the overdue ones. Why not ``asyncio.timeout`` per request: its timer handle (created, pushed
    on the loop's heap, cancelled) was ~8 % of the receiver's CPU; here a request costs a dict
    insert and delete. The sweeper ends when nothing is in flight and the next request restarts it."""

    __slots__ = ("expired", "in_flight", "loop", "sweeper")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.in_flight: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self.sweeper: asyncio.Task[None] | None = None

    def watch(self, task: asyncio.Task[Any], limit: float) -> None:
        self.in_flight[task] = self.loop.time() + limit
        if self.sweeper is None:
            self.sweeper = self.loop.create_task(self._sweep(), name="request-deadlines")

    def release(self, task: asyncio.Task[Any]) -> bool:
        """Forget ``task``; True when the sweeper cancelled it (its cancellation is then undone)."""
        del self.in_flight[task]
        if task in self.expired:
            self.expired.discard(task)
            task.uncancel()
            return True
        return False

    async def _sweep(self) -> None:
        try:
            while self.in_flight:
                await asyncio.sleep(SWEEP_INTERVAL)
                now = self.loop.time()
                for task, deadline in list(self.in_flight.items()):
                    if deadline <= now and task not in self.expired:
                        self.expired.add(task)
                        task.cancel()
        finally:
            self.sweeper = None


_deadlines: _Deadlines | None = None


@web.middleware
async def guarded(request: web.Request, handler: Any) -> web.StreamResponse:
    """What every route of both ports gets, in one middleware (aiohttp wraps each layer in two
    coroutines per request): a request (body reading included) that takes longer than the limit
    gets a 408 ``request_timeout``, and errors are answered as JSON with a code (``error_for``)."""
    global _deadlines
    limit = request.app[SERVICES].settings.request_timeout_seconds
    loop = asyncio.get_running_loop()
    deadlines = _deadlines
    if deadlines is None or deadlines.loop is not loop:
        deadlines = _deadlines = _Deadlines(loop)
    task = asyncio.current_task(loop)
    assert task is not None  # aiohttp runs every request in a task of its own
    deadlines.watch(task, limit)
    released = False
    try:
        return await handler(request)
    except asyncio.CancelledError:
        released = True
        # As asyncio.timeout: a 408 only when the sweeper's was the only cancellation (a client
        # that went away cancels the task too, and that one propagates).
        if deadlines.release(task) and task.cancelling() == 0:
            return error(408, "request_timeout", f"the request took longer than {limit} s")
        raise
    except Exception as exc:
        if (response := error_for(exc)) is None:
            raise
        return response
    finally:
        if not released:  # a handler that swallowed the sweeper's cancellation ends normally
            deadlines.release(task)


# ------------------------------------------------------------------ the one private hook


class _JsonErrorProtocol(web.RequestHandler):
    """aiohttp's HTTP/1 connection protocol, with the answers it writes itself in JSON (``harden``)."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Never a traceback, never the parser's message: aiohttp's quotes the bytes it rejected."""
        if status >= 500:
            self.log_exception("request failed", exc_info=exc)
            resp = error(500, "internal_error", "internal error")
        else:
            if isinstance(exc, LineTooLong):
                # aiohttp's C parser names the request target it gave up on as its buffer, a
                # bytearray, and a header name or value as bytes (which may start with "/" or
                # "http" too: a Referer); its pure-Python parser names every line as bytes.
                status = 414 if exc.args and isinstance(exc.args[0], bytearray) else 431
            resp = error(status, _PARSER_CODES.get(status, "bad_request"), "the request cannot be parsed")
        resp.force_close()
        return resp


class _JsonErrorServer(web.Server):
    """The runner's protocol factory, handing out ``_JsonErrorProtocol``s."""

    def __call__(self) -> web.RequestHandler:
        protocol = super().__call__()  # aiohttp's own construction, its handler_args included
        protocol.__class__ = _JsonErrorProtocol  # same slots, one method more
        return protocol


def harden(runner: web.AppRunner) -> None:
    """After ``runner.setup()``: the answers aiohttp writes itself are JSON like every other error.

    Private because aiohttp has no public way: a request its parser rejects (bad request line,
    too long a line or header, 400/414/431) and a handler's crash (500) are answered by
    ``RequestHandler.handle_error`` before any middleware, signal or request factory of the app
    sees them (aio-libs/aiohttp#3287, #9882), and its answer is text quoting the rejected input.
    So the server's protocols get a ``handle_error`` of ours; ``tests/integration/test_aiohttp_contract.py``
    fails if aiohttp changes what this relies on.
    """
    server = runner.server
    if not isinstance(server, web.Server):
        raise TypeError(f"harden() needs runner.setup() first and an aiohttp web.Server, not {server!r}")
    server.__class__ = _JsonErrorServer
