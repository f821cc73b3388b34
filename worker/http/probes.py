"""The probe and scrape endpoints every process serves: /metrics and /readyz, and a worker's own port."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.infra import metrics
from worker.infra.logging import get_logger
from worker.ops.health import CHECK_TIMEOUT, readiness, refresh_gauges
from worker.services import SERVICES, Services

log = get_logger("observability")


async def metrics_handler(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        await asyncio.wait_for(refresh_gauges(services), CHECK_TIMEOUT * 2)
    except Exception as exc:  # stale gauges beat no metrics: the counters still matter
        log.warning("metrics_refresh_failed", error=type(exc).__name__)
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def readyz_handler(request: web.Request) -> web.Response:
    ok, checks = await readiness(request.app[SERVICES])
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


async def start_worker_metrics(services: Services) -> web.AppRunner | None:
    """A worker process's own /metrics (job counters live in its memory), when a port is set."""
    port = services.settings.worker_metrics_port
    if not port:
        return None
    app = web.Application()
    app[SERVICES] = services
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/readyz", readyz_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, services.settings.internal_host, port).start()
    log.info("worker_metrics_listening", host=services.settings.internal_host, port=port)
    return runner
