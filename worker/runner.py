"""Running the service: receiver, internal API and worker in one event loop, or any of them; or
the worker in processes of its own beside them (``worker_processes``, worker/runner_processes.py).

Used by the CLI. Graceful stop on SIGTERM/SIGINT: stop taking webhooks, let running jobs end
(arq re-queues what it must cancel; worker processes get SIGTERM and the job timeout), close pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence

from aiohttp import web

from worker.api.app import create_internal_app
from worker.clock import Clock, utcnow
from worker.config import Settings
from worker.http.hardening import harden
from worker.http.probes import start_metrics_port
from worker.infra import tracing
from worker.infra.logging import get_logger, install_exit_flush, set_batch_delay
from worker.jobs.worker import build_worker
from worker.ops.health import Health, dependencies, warn_unless_noeviction
from worker.receiver.app import create_receiver_app
from worker.runner_processes import WorkerProcesses, signal_ready, stop_at_parent_exit
from worker.services import SERVICES, Services
from worker.storage.migrate import migrate

log = get_logger("runner")
ROLES = ("receiver", "api", "worker")


async def start_site(
    app: web.Application, host: str, port: int, *, max_header_bytes: int | None = None
) -> web.AppRunner:
    """Serve ``app``; header limits come from the app's settings unless given (bench baselines)."""
    limit = max_header_bytes if max_header_bytes is not None else app[SERVICES].settings.max_header_bytes
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=10,
        keepalive_timeout=15,
        max_line_size=limit,
        max_field_size=limit,
    )
    await runner.setup()
    harden(runner)
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    return runner


async def serve(
    settings: Settings,
    roles: Sequence[str] = ROLES,
    *,
    clock: Clock = utcnow,
    run_migrations: bool = False,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], None] | None = None,
    worker_processes: int = 0,
    stop_at_stdin_eof: bool = False,
    ready_fd: int | None = None,
) -> None:
    """Serve ``roles`` until SIGTERM/SIGINT or ``stop``; ``on_ready`` runs once all of them serve.

    ``worker_processes`` > 0 (and ``worker`` among the roles): the worker runs in that many child
    processes, not in this one. ``stop_at_stdin_eof``: stop when stdin ends (a worker process
    whose main process has gone). ``ready_fd``: a pipe told once the worker takes jobs (how a
    worker process's main process knows it is ready)."""
    assert settings.database_url is not None
    dependencies(roles)  # unknown roles fail here, before anything starts
    set_batch_delay(settings.log_batch_ms / 1000)
    if settings.tracing:  # before the apps and the Stripe client are built: they look once
        tracing.configure(service_name=settings.service_name)
    if run_migrations:
        await migrate(settings.database_url)
    services = await Services.start(settings, clock=clock)
    children = WorkerProcesses(settings, worker_processes) if "worker" in roles and worker_processes else None
    # One verdict per process: the union of its roles' needs (and its worker processes).
    health = Health(services, roles, children.status if children is not None else None)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if stop_at_stdin_eof:
        stop_at_parent_exit(stop)
    runners: list[web.AppRunner] = []
    worker_task = None
    stopping = None
    try:
        await _start_sites(services, health, roles, runners)
        if "worker" in roles:
            await warn_unless_noeviction(services)
            if children is not None:
                await children.start()
            else:
                on_started = signal_ready(ready_fd) if ready_fd is not None else None
                worker_task = asyncio.create_task(supervise_worker(services, stop, on_started))
        if on_ready is not None:
            on_ready()
        await stop.wait()
    finally:
        log.info("stopping", roles=list(roles))
        stop.set()
        if children is not None:  # they finish their jobs while the ports close
            stopping = asyncio.create_task(children.stop())
        for runner in runners:
            await runner.cleanup()
        if stopping is not None:
            await stopping
        if worker_task is not None:
            await asyncio.gather(worker_task, return_exceptions=True)
        await health.close()
        await services.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        install_exit_flush()  # removing ours restored SIGTERM's default action
        tracing.shutdown()  # the spans that wait for their batch are exported


async def _start_sites(
    services: Services, health: Health, roles: Sequence[str], runners: list[web.AppRunner]
) -> None:
    """The HTTP ports of ``roles``, each appended to ``runners`` as soon as it serves (so that a
    failure to start the next one still stops those)."""
    settings = services.settings
    if "receiver" in roles:
        app = create_receiver_app(services, health)
        runners.append(await start_site(app, settings.receiver_host, settings.receiver_port))
        log.info("receiver_listening", host=settings.receiver_host, port=settings.receiver_port)
    if "api" in roles:
        app = create_internal_app(services, health)
        runners.append(await start_site(app, settings.internal_host, settings.internal_port))
        log.info("internal_api_listening", host=settings.internal_host, port=settings.internal_port)
    if set(roles) - {"api"}:  # a worker's job counters, or a receiver's without the API's port
        metrics_runner = await start_metrics_port(services, health)
        if metrics_runner is not None:
            runners.append(metrics_runner)


async def supervise_worker(
    services: Services, stop: asyncio.Event, on_started: Callable[[], None] | None = None
) -> None:
    """Run the arq worker until ``stop``; if Redis drops it, start it again with backoff.
    ``on_started``: called each time the worker is connected and takes jobs."""
    delay = 0.5
    while not stop.is_set():
        worker = build_worker(services, handle_signals=False, on_started=on_started)
        run = asyncio.create_task(worker.async_run())
        log.info("worker_started", queue=services.settings.queue_name, max_jobs=services.settings.max_jobs)
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([run, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if run.done() and run.exception() is not None:
            log.warning("worker_crashed", error=repr(run.exception()), restart_in_s=delay)
        try:
            await worker.close()
        except Exception as exc:
            log.warning("worker_close_failed", error=repr(exc))
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10)
