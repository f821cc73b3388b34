"""What ``worker.http.hardening.harden`` (the service's one private aiohttp hook) relies on, checked
against the installed aiohttp: if one of these fails after an aiohttp upgrade, the hook no longer
does what it says, fix it before anything else. Also why the hook exists (aiohttp's own answer
quotes the input) and that no other module reaches into aiohttp's internals.

No database or Redis: a bare app served by ``start_site`` exactly as the ports are.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
import pytest_asyncio
from aiohttp import web

from tests.support.paths import ROOT
from worker.http.hardening import _JsonErrorProtocol, _JsonErrorServer
from worker.runner import start_site

LIMIT = 1024  # BW_MAX_HEADER_BYTES of the bare site, below aiohttp's 8190 default on purpose
MARK = "ECHOME"  # put in every rejected request: no answer may contain it


async def _crash(request: web.Request) -> web.Response:
    raise RuntimeError(f"{MARK} internal detail")


async def _time_out(request: web.Request) -> web.Response:
    raise TimeoutError


def _bare_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/crash", _crash)
    app.router.add_get("/time-out", _time_out)
    return app


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site() -> AsyncIterator[web.AppRunner]:
    runner = await start_site(_bare_app(), "127.0.0.1", 0, max_header_bytes=LIMIT)
    try:
        yield runner
    finally:
        await runner.cleanup()


def _port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]


async def exchange(port: int, request: bytes) -> tuple[int, str, bytes]:
    """Send raw bytes, read until the server closes: (status, content type, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(":", 1) for line in lines[1:])
    content_type = {k.lower(): v.strip() for k, v in fields.items()}.get("content-type", "")
    return int(lines[0].split(" ", 2)[1]), content_type, body


def _get(target: str, *fields: str) -> bytes:
    return "\r\n".join([f"GET {target} HTTP/1.1", "Host: x", *fields, "Connection: close", "", ""]).encode()


# ------------------------------------------------------------------ the hook's seams


def test_handle_error_has_the_signature_the_hook_overrides():
    """aiohttp calls ``handle_error(request, status, exc, message)``; ours must take the same."""
    theirs = inspect.signature(web.RequestHandler.handle_error)
    assert [(p.name, p.default) for p in theirs.parameters.values()] == [
        ("self", inspect.Parameter.empty),
        ("request", inspect.Parameter.empty),
        ("status", 500),
        ("exc", None),
        ("message", None),
    ]
    ours = inspect.signature(_JsonErrorProtocol.handle_error)
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
        (p.name, p.kind, p.default) for p in theirs.parameters.values()
    ]


async def test_the_runner_hands_out_our_protocol_with_the_configured_limits(site: web.AppRunner):
    """``runner.server`` is aiohttp's ``web.Server``, the protocol factory the site listens with;
    its own ``__call__`` makes a plain ``web.RequestHandler`` (which ours replaces slot for slot),
    and the ``AppRunner`` options reach the protocol (aiohttp drops unknown ones silently)."""
    server = site.server
    assert type(server) is _JsonErrorServer and isinstance(server, web.Server)
    assert type(web.Server.__call__(server)) is web.RequestHandler
    assert web.RequestHandler.__slots__ and _JsonErrorProtocol.__slots__ == ()
    protocol = server()
    assert type(protocol) is _JsonErrorProtocol
    assert (protocol.max_line_size, protocol.max_field_size) == (LIMIT, LIMIT)


# ------------------------------------------------------------------ the answers through the hook

MALFORMED: list[tuple[str, bytes, int, str]] = [
    ("not HTTP", b"NOT-HTTP\r\n\r\n", 400, "bad_request"),
    (
        "TLS on the HTTP port",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40,
        400,
        "bad_request",
    ),
    ("bad method", f"G@T /{MARK} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400, "bad_request"),
    ("bad version", f"GET /{MARK} HTTP/9.9\r\nHost: x\r\n\r\n".encode(), 400, "bad_request"),
    ("header without colon", _get("/", MARK), 400, "bad_request"),
    ("NUL in a header", _get("/", f"X-A: {MARK}\0"), 400, "bad_request"),
    ("bad Content-Length", _get("/", f"Content-Length: {MARK}"), 400, "bad_request"),
    (
        "Content-Length and chunked",
        _get("/", "Content-Length: 3", "Transfer-Encoding: chunked"),
        400,
        "bad_request",
    ),
    ("bare LF line ends", f"GET /{MARK} HTTP/1.1\nHost: x\n\n".encode(), 400, "bad_request"),
    ("too many headers", _get("/", *(f"X-{i}: {MARK}" for i in range(200))), 400, "bad_request"),
    ("path over the limit", _get("/" + MARK + "a" * LIMIT), 414, "uri_too_long"),
    ("absolute URI over the limit", _get("http://x/" + MARK + "a" * LIMIT), 414, "uri_too_long"),
    ("header value over the limit", _get("/", f"X-Junk: {MARK}{'a' * LIMIT}"), 431, "headers_too_large"),
    ("header name over the limit", _get("/", f"X-{MARK}{'a' * LIMIT}: 1"), 431, "headers_too_large"),
    # A header value that starts like a URI is still a header (these were answered 414 before).
    ("Referer over the limit", _get("/", f"Referer: http://x/{MARK}{'a' * LIMIT}"), 431, "headers_too_large"),
    ("path-like header over the limit", _get("/", f"X-Uri: /{MARK}{'a' * LIMIT}"), 431, "headers_too_large"),
    ("handler crash", _get("/crash"), 500, "internal_error"),
    # aiohttp's own 504 for a TimeoutError out of a handler is answered as any crash.
    ("handler TimeoutError", _get("/time-out"), 500, "internal_error"),
]


@pytest.mark.parametrize(
    ("case", "request_bytes", "status", "code"), MALFORMED, ids=[c[0] for c in MALFORMED]
)
async def test_what_aiohttp_answers_itself_is_json_without_the_input(
    site: web.AppRunner, case: str, request_bytes: bytes, status: int, code: str
):
    got, content_type, body = await exchange(_port(site), request_bytes)
    assert (got, content_type.split(";")[0]) == (status, "application/json"), (case, body[:200])
    assert json.loads(body)["error"]["code"] == code
    assert MARK.encode() not in body and b"Traceback" not in body


async def test_the_limits_are_the_configured_ones(site: web.AppRunner):
    """Around ``LIMIT`` (not aiohttp's 8190 default): a path or header below it is served, above
    it the request gets 414 or 431."""
    port = _port(site)
    assert (await exchange(port, _get("/" + "a" * (LIMIT - 100))))[0] == 404
    assert (await exchange(port, _get("/" + "a" * (LIMIT + 100))))[0] == 414
    assert (await exchange(port, _get("/", f"X-Junk: {'a' * (LIMIT - 100)}")))[0] == 404
    assert (await exchange(port, _get("/", f"X-Junk: {'a' * (LIMIT + 100)}")))[0] == 431


# ------------------------------------------------------------------ why the hook exists


async def test_without_the_hook_aiohttp_answers_text_quoting_the_input():
    """Why ``harden`` exists. If this fails, aiohttp stopped quoting what it rejects (or answers
    JSON): see whether the private hook can go."""
    runner = web.AppRunner(_bare_app(), access_log=None, max_line_size=LIMIT, max_field_size=LIMIT)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = _port(runner)
        for request in (_get("/" + MARK + "a" * LIMIT), _get("/", f"X-Junk: {MARK}{'a' * LIMIT}")):
            status, content_type, body = await exchange(port, request)
            assert (status, content_type.split(";")[0]) == (400, "text/plain")
            assert MARK.encode() in body
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------ the private surface


PUBLIC_AIOHTTP = {"aiohttp", "aiohttp.web"}


def _aiohttp_internals(path: Path) -> set[str]:
    """The aiohttp modules ``path`` imports besides the public ``aiohttp`` and ``aiohttp.web``."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            if node.module.split(".")[0] == "aiohttp":  # ``from aiohttp import web_protocol``
                package = importlib.import_module(node.module)
                modules |= {
                    f"{node.module}.{alias.name}"
                    for alias in node.names
                    if isinstance(getattr(package, alias.name, None), ModuleType)
                }
    return {m for m in modules if m.split(".")[0] == "aiohttp" and m not in PUBLIC_AIOHTTP}


def test_only_the_hook_imports_aiohttp_internals():
    sources = [*sorted((ROOT / "worker").rglob("*.py")), *sorted((ROOT / "handlers").rglob("*.py"))]
    importing = {str(p.relative_to(ROOT)): mods for p in sources if (mods := _aiohttp_internals(p))}
    assert len(importing) == 1, importing
    ((path, modules),) = importing.items()
    assert Path(path).name == "hardening.py" and modules == {"aiohttp.http_exceptions"}, importing
