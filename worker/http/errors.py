"""The HTTP edge of ``worker.errors``: which status each domain error answers with, and the JSON
error body ``{"error": {"code", "message", ...details}}`` shared by both HTTP apps."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from aiohttp import web

from worker.errors import BillingError, Conflict, InvalidInput, NotFound, Unavailable, UpstreamFailed
from worker.storage.db import is_transient

# The one place a domain error becomes a status; a subclass answers as its nearest listed base.
STATUS_OF: dict[type[BillingError], int] = {
    InvalidInput: 400,
    NotFound: 404,
    Conflict: 409,
    UpstreamFailed: 502,
    Unavailable: 503,
}


def status_of(exc: BillingError) -> int | None:
    """Nearest listed base's status; None for a bare ``BillingError``: a bug, answered 500 as a crash."""
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return None


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The JSON error answer; for what the edge itself decides (401, 408, parser errors …)."""
    body: dict[str, Any] = {"error": {"code": code, "message": message, **extra}}
    return web.json_response(body, status=status)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    414: "uri_too_long",
    431: "headers_too_large",
}


def error_for(exc: Exception) -> web.Response | None:
    """The JSON answer (with a code, never a traceback) for what a handler raised: a domain
    ``BillingError`` (status from ``STATUS_OF``), aiohttp's own errors (404, 405, 413 …), a
    database busy or down (503); None for anything else, which propagates (aiohttp answers 500
    through ``hardening``)."""
    if isinstance(exc, BillingError):
        status = status_of(exc)
        return None if status is None else error(status, exc.code, exc.message, **exc.details)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        response = error(exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason)
        if isinstance(exc, web.HTTPMethodNotAllowed):  # RFC 9110: a 405 names the methods allowed
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    if is_transient(exc):  # a lock wait timed out, the database restarts …: worth a retry
        return error(503, "database_unavailable", "the database is busy or unavailable; retry later")
    return None


async def read_json_object(request: web.Request, allowed: Collection[str] | None = None) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}``. Every way a body can be wrong
    has its own 400 code: ``invalid_json`` (not JSON, or nested deeper than the parser allows),
    ``invalid_body`` (JSON but not an object), ``unknown_field`` (a key outside ``allowed``)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidInput("invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("invalid_body", "the body must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(body) - set(allowed))
        if unknown:
            raise InvalidInput("unknown_field", f"unknown field(s): {', '.join(unknown)}", fields=unknown)
    return body
