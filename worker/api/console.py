"""The support console: a static page (HTML, a few ES modules, one stylesheet, shipped in
``worker/console/``) served at ``/console/`` on the internal port.

The page holds no data: it asks for the internal token and reads and acts through the JSON API
alone, so its files are served without the token (``worker.http.auth`` lets GETs of these routes
through). Every answer carries a Content-Security-Policy that allows the page's own script,
stylesheet and API calls and nothing else: no inline script or style, no other origin, no framing.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from aiohttp import web

from worker.errors import NotFound

PREFIX = "/console"
# name → content type: the only files the console serves (read once, when the routes are added).
ASSETS = {
    "index.html": "text/html",
    "console.css": "text/css",
    **{
        name: "text/javascript"  # ES modules: console.js imports the others
        for name in ("console.js", "common.js", "workspace.js", "events.js", "backfill.js")
    },
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
CONSOLE_FILES = web.AppKey("console_files", dict)
_ERR = {"$ref": "#/components/responses/Error"}


def load_assets() -> dict[str, bytes]:
    """The console's files from the installed package (package data, see pyproject.toml)."""
    folder = files("worker") / "console"
    return {name: (folder / name).read_bytes() for name in ASSETS}


def _answer(request: web.Request, name: str) -> web.Response:
    body = request.app[CONSOLE_FILES].get(name)
    if body is None:
        raise NotFound("not_found", f"the console has no file {name!r}")
    return web.Response(body=body, content_type=ASSETS[name], charset="utf-8", headers=HEADERS)


async def console_index(request: web.Request) -> web.Response:
    return _answer(request, "index.html")


async def console_file(request: web.Request) -> web.Response:
    return _answer(request, request.match_info["name"])


async def console_redirect(request: web.Request) -> web.Response:
    """``/console`` → ``/console/``: the page's relative links need the trailing slash."""
    raise web.HTTPPermanentRedirect(f"{PREFIX}/", headers=HEADERS)


def add_routes(app: web.Application) -> None:
    app[CONSOLE_FILES] = load_assets()
    app.router.add_get(PREFIX, console_redirect)
    app.router.add_get(f"{PREFIX}/", console_index)
    app.router.add_get(PREFIX + "/{name}", console_file)


def _page(operation_id: str, summary: str, media: str, **responses: Any) -> dict[str, Any]:
    ok = {"description": "the file", "content": {media: {"schema": {"type": "string"}}}}
    return {
        "operationId": operation_id,
        "summary": summary,
        "security": [],
        "responses": {"200": ok, **responses},
    }


PATHS: dict[str, dict[str, Any]] = {
    PREFIX: {
        "get": {
            "operationId": "consoleRedirect",
            "summary": "Redirect to the console (no token)",
            "security": [],
            "responses": {"308": {"description": "to /console/"}},
        }
    },
    f"{PREFIX}/": {
        "get": _page("consolePage", "The support console's page (no token; it asks for one)", "text/html")
    },
    PREFIX + "/{name}": {
        "get": {
            **_page("consoleFile", "One of the console's files (no token)", "*/*", **{"404": _ERR}),
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": list(ASSETS)},
                }
            ],
        }
    },
}
