"""Bearer-token authentication of the internal port."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from worker.http.errors import error
from worker.services import SERVICES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes and scrapers reach these without the token: they reveal counts, never billing data.
UNAUTHENTICATED = frozenset({"/readyz", "/metrics"})


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in UNAUTHENTICATED and request.method == "GET":
        return await handler(request)
    expected = request.app[SERVICES].settings.internal_token or ""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    ok = (
        bool(expected)
        and scheme.lower() == "bearer"
        # aiohttp decodes header bytes that are not UTF-8 as surrogates: encode them back, not fail.
        and hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected.encode())
    )
    if not ok:
        return error(401, "unauthorized", "a valid bearer token is required")
    return await handler(request)
