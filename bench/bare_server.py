"""The ingest baseline: an aiohttp endpoint that reads the body and answers 200, nothing else.

Started exactly like the receiver (``worker.runner.start_site``: same AppRunner and TCPSite
settings, same body-size cap) so the ratio measures our per-request work, not aiohttp's.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from worker.config import Settings
from worker.runner import start_site


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"received": True})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def serve(port: int) -> None:
    app = web.Application(client_max_size=1048576 + 1)
    app.router.add_post("/webhooks/stripe", accept)
    app.router.add_get("/healthz", healthz)
    limit = Settings.from_env().max_header_bytes  # the receiver's own limit
    runner = await start_site(app, "127.0.0.1", port, max_header_bytes=limit)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
