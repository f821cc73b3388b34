"""Protections shared by both HTTP ports: a time limit per request, and JSON answers even for
errors aiohttp's HTTP parser raises before any middleware runs (huge headers, bad request lines).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from worker.http_errors import error
from worker.services import SERVICES

_PARSER_CODES = {400: "bad_request", 413: "body_too_large", 414: "uri_too_long", 431: "headers_too_large"}


@web.middleware
async def request_timeout(request: web.Request, handler: Any) -> web.StreamResponse:
    """A request (body reading included) that takes longer than the limit gets a 408."""
    limit = request.app[SERVICES].settings.request_timeout_seconds
    try:
        async with asyncio.timeout(limit):
            return await handler(request)
    except TimeoutError:
        return error(408, "request_timeout", f"the request took longer than {limit} s")


class _JsonErrorHandler(RequestHandler):
    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        # Never a traceback, never the parser's raw message (it may echo the input).
        if status >= 500:
            self.log_exception("request failed", exc_info=exc)
            resp = error(500, "internal_error", "internal error")
        else:
            if isinstance(exc, LineTooLong):
                line = exc.args[0] if exc.args else b""
                # The parser names the line it gave up on: a path for the request line.
                head = bytes(line[:8]) if isinstance(line, bytes | bytearray) else str(line).encode()
                status = 414 if head.startswith((b"/", b"http")) else 431
            resp = error(status, _PARSER_CODES.get(status, "bad_request"), "the request cannot be parsed")
        resp.force_close()
        return resp


class _JsonErrorServer(Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


def harden(runner: web.AppRunner) -> None:
    """After ``runner.setup()``: parser-level errors answer JSON like every other error."""
    runner.server.__class__ = _JsonErrorServer  # type: ignore[union-attr]
