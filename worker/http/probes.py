"""The probe and scrape endpoints: /livez, /readyz and /metrics, and the metrics port of a
process without the internal API (a worker, a receiver alone)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.infra import metrics
from worker.infra.logging import get_logger
from worker.ops.health import Health
from worker.services import SERVICES, Services

log = get_logger("observability")

# The process's one Health (its roles, its running checks), shared by every app it serves.
HEALTH = web.AppKey("health", Health)


async def livez_handler(request: web.Request) -> web.Response:
    """The event loop answers: no I/O, no lock, nothing a dependency can slow down."""
    return web.Response(body=b'{"status": "ok"}', content_type="application/json")


async def metrics_handler(request: web.Request) -> web.Response:
    await request.app[HEALTH].refresh_gauges()  # bounded: stale gauges beat a blocked scrape
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def readyz_handler(request: web.Request) -> web.Response:
    """The verdict for the process's roles, with each check (internal ports only)."""
    health = request.app[HEALTH]
    ok, checks = await health.readiness()
    body = {"ready": ok, "roles": list(health.roles), "checks": checks}
    return web.json_response(body, status=200 if ok else 503)


async def public_readyz_handler(request: web.Request) -> web.Response:
    """The verdict alone: the public port tells nothing about the dependencies behind it."""
    ok, _ = await request.app[HEALTH].readiness()
    return web.json_response({"ready": ok}, status=200 if ok else 503)


def attach_health(app: web.Application, services: Services, health: Health | None, role: str) -> Health:
    """Put the process's Health on ``app`` (one for ``role`` alone when none is given: tests, tools)."""
    if health is None:
        health = Health(services, (role,))

        async def close(app: web.Application) -> None:
            await health.close()

        app.on_cleanup.append(close)
    app[HEALTH] = health
    return health


async def start_metrics_port(services: Services, health: Health) -> web.AppRunner | None:
    """/metrics, /livez and /readyz of a process without the internal API, when a port is set."""
    port = services.settings.worker_metrics_port
    if not port:
        return None
    app = web.Application()
    app[SERVICES] = services
    attach_health(app, services, health, "worker")
    app.router.add_get("/livez", livez_handler)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/readyz", readyz_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, services.settings.internal_host, port).start()
    log.info(
        "metrics_port_listening", host=services.settings.internal_host, port=port, roles=list(health.roles)
    )
    return runner
