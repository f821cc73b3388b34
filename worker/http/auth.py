"""Bearer-token authentication of the internal port."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from worker.http.errors import error
from worker.services import SERVICES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes and scrapers reach these without the token: they reveal counts, never billing data.
UNAUTHENTICATED = frozenset({"/livez", "/readyz", "/metrics"})
# The support console's static files (worker/api/console.py) hold no data: the page asks for the
# token. Decided by the route the request matched, never by the raw path (no "/console/../v1/…").
CONSOLE_ROUTE = "/console"


def _public(request: web.Request) -> bool:
    if request.method != "GET":
        return False
    if request.path in UNAUTHENTICATED:
        return True
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else ""
    return route == CONSOLE_ROUTE or route.startswith(CONSOLE_ROUTE + "/")


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _public(request):
        return await handler(request)
    expected = request.app[SERVICES].settings.internal_token or ""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    # aiohttp decodes header bytes that are not UTF-8 as lone surrogates: "surrogatepass" encodes
    # any str, so whatever bytes a caller sends are compared (and refused) instead of raising.
    ok = (
        bool(expected)
        and scheme.lower() == "bearer"
        # aiohttp decodes header bytes that are not UTF-8 as surrogates: encode them back, not fail.
        and hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected.encode())
    )
    if not ok:
        return error(401, "unauthorized", "a valid bearer token is required")
    return await handler(request)
