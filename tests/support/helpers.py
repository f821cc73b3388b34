"""Test helpers: signing, a running service (receiver + internal API + worker), delivering signed
events to it, waiting."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import stripe

from handlers.catalog import Catalog
from tests.support.clock import MovableClock
from tests.support.services import free_port
from worker.api.app import create_internal_app
from worker.clock import Clock, utcnow
from worker.config import Settings
from worker.ops.health import Health
from worker.receiver.app import create_receiver_app
from worker.runner import start_site, supervise_worker
from worker.services import Services

SECRET_A = "whsec_test_primary_0123456789abcdef"
SECRET_B = "whsec_test_rotated_fedcba9876543210"
TOKEN = "internal-test-token"
T = TypeVar("T")


def sign(body: str, secret: str = SECRET_A, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)


def signed_headers(body: str, secret: str = SECRET_A) -> dict[str, str]:
    """The headers Stripe sends with ``body``: its signature with ``secret``, and JSON."""
    return {"Stripe-Signature": sign(body, secret), "Content-Type": "application/json"}


async def post_raw(
    http: aiohttp.ClientSession, receiver_url: str, body: bytes | str, headers: Mapping[str, str]
) -> tuple[int, Any]:
    """POST ``body`` to a receiver's webhook path; the status and the JSON answer (else its text)."""
    async with http.post(f"{receiver_url}/webhooks/stripe", data=body, headers=dict(headers)) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def post_signed(
    http: aiohttp.ClientSession, receiver_url: str, event: Mapping[str, Any], secret: str = SECRET_A
) -> tuple[int, Any]:
    """POST ``event`` to a receiver as Stripe does: JSON, signed with ``secret``."""
    body = json.dumps(event)
    return await post_raw(http, receiver_url, body, signed_headers(body, secret))


def make_settings(pg_url: str, redis_url: str, prefix: str, **overrides: Any) -> Settings:
    env = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "STRIPE_WEBHOOK_SECRETS": f"{SECRET_A},{SECRET_B}",
        "BW_INTERNAL_TOKEN": TOKEN,
        "BW_REDIS_PREFIX": prefix,
        "BW_UNMATCHED_RETRY_SECONDS": "1,1,2,2,4,8",
        "BW_SWEEP_RECEIVED_AFTER_SECONDS": "5",
        "BW_LOG_LEVEL": "warning",
        "BW_DB_POOL_SIZE": "10",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return Settings.from_env(env)


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool] = bool,
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until ``done(value)``; fail with the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")
        await asyncio.sleep(interval)


async def kill_mid_job(
    workers: list[subprocess.Popen[bytes]],
    processed: Callable[[], Awaitable[int]],
    at_least: int,
    in_progress: Callable[[], Awaitable[list[bytes]]],
    *,
    timeout: float = 90.0,
) -> tuple[int, list[bytes]]:
    """SIGKILL ``workers`` once ``at_least`` events are processed and some job is running.

    Between arq's polls a worker may hold no running job, and a kill then tests nothing. So the
    workers are stopped (SIGSTOP) first and killed only if arq's in-progress keys show running
    jobs; otherwise they go on and the check is repeated. Returns (processed, in-progress keys)
    as seen while they were stopped: what the kill interrupted."""

    async def stopped_mid_job() -> tuple[int, list[bytes]]:
        count = await processed()
        if count < at_least:
            return count, []
        for proc in workers:
            proc.send_signal(signal.SIGSTOP)
        running = await in_progress()
        if not running:
            for proc in workers:
                proc.send_signal(signal.SIGCONT)
        return await processed(), running

    try:
        seen = await wait_for(
            stopped_mid_job,
            lambda seen: bool(seen[1]),
            timeout=timeout,
            interval=0.005,
            what=f"{at_least} events processed while jobs are running",
        )
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
    return seen


@dataclasses.dataclass
class RunningService:
    services: Services
    receiver_url: str
    api_url: str
    http: aiohttp.ClientSession

    async def post_raw(self, body: bytes | str, headers: Mapping[str, str]) -> tuple[int, Any]:
        return await post_raw(self.http, self.receiver_url, body, headers)

    async def post_event(self, event: Mapping[str, Any], secret: str = SECRET_A) -> tuple[int, Any]:
        return await post_signed(self.http, self.receiver_url, event, secret)

    async def deliver(self, *events: Mapping[str, Any], clock: MovableClock | None = None) -> None:
        """Post each event signed (each answered 200) and wait until all are processed. With
        ``clock`` one at a time, the clock first moved on to the event's ``created``: the worker
        sees them as they happen."""
        if clock is None:
            for event in events:
                status, body = await self.post_event(event)
                assert status == 200, body
            await self.wait_processed([e["id"] for e in events])
            return
        for event in events:
            clock.now = max(clock.now, datetime.fromtimestamp(event["created"], UTC))
            await self.deliver(event)

    async def api(
        self, method: str, path: str, *, token: str | None = TOKEN, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", None) or {})
        async with self.http.request(method, f"{self.api_url}{path}", headers=headers, **kwargs) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def workspace(self, workspace_id: str) -> dict[str, Any] | None:
        status, body = await self.api("GET", f"/v1/workspaces/{workspace_id}")
        return body if status == 200 else None

    async def event_status(self, event_id: str) -> str | None:
        status, body = await self.api("GET", f"/v1/events/{event_id}")
        return body["status"] if status == 200 else None

    async def wait_processed(self, event_ids: list[str], timeout: float = 60.0) -> None:
        async def count() -> int:
            return await self.services.pool.fetchval(
                "SELECT count(*) FROM webhook_events WHERE event_id = ANY($1::text[]) "
                "AND status IN ('processed', 'ignored', 'dead')",
                event_ids,
            )

        await wait_for(
            count,
            lambda n: n == len(set(event_ids)),
            timeout=timeout,
            what=f"{len(set(event_ids))} events processed",
        )


@asynccontextmanager
async def running_service(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    catalog: Catalog | None = None,
    worker: bool = True,
) -> AsyncIterator[RunningService]:
    """Receiver and internal API on free loopback ports, plus (optionally) an in-process worker."""
    settings = dataclasses.replace(
        settings,
        receiver_host="127.0.0.1",
        receiver_port=free_port(),
        internal_host="127.0.0.1",
        internal_port=free_port(),
    )
    services = await Services.start(settings, clock=clock, catalog=catalog)
    health = Health(services, ("receiver", "api", "worker") if worker else ("receiver", "api"))
    stop = asyncio.Event()
    runners = [
        await start_site(
            create_receiver_app(services, health), settings.receiver_host, settings.receiver_port
        ),
        await start_site(
            create_internal_app(services, health), settings.internal_host, settings.internal_port
        ),
    ]
    worker_task = asyncio.create_task(supervise_worker(services, stop)) if worker else None
    http = aiohttp.ClientSession()
    try:
        yield RunningService(
            services,
            f"http://127.0.0.1:{settings.receiver_port}",
            f"http://127.0.0.1:{settings.internal_port}",
            http,
        )
    finally:
        stop.set()
        await http.close()
        for runner in runners:
            await runner.cleanup()
        if worker_task is not None:
            await asyncio.gather(worker_task, return_exceptions=True)
        await health.close()
        await services.close()


def history_ids(tag: str) -> dict[str, str]:
    """Fresh ids for one workspace's history (``stripe_factory.history_*`` keyword arguments)."""
    u = uuid.uuid4().hex[:10]
    return {
        "workspace_id": f"ws_{tag}_{u}",
        "customer": f"cus_{tag}{u}",
        "sub_id": f"sub_{tag}{u}",
        "id_prefix": f"evt_{tag}{u}",
    }


def customer_event(customer_id: str, event_id: str | None = None) -> dict[str, Any]:
    """A minimal, valid ``customer.created`` event (the worker ignores it): for receiver tests."""
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2026-09-30.endive",
        "created": int(time.time()),
        "type": "customer.created",
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": {"id": customer_id, "object": "customer", "metadata": {}}},
    }
