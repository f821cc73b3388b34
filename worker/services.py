"""The shell's wiring: settings, pool, Redis, catalog, clock and the objects built on them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import asyncpg
from aiohttp import web

from handlers.catalog import Catalog, CatalogError, parse_catalog
from worker.clock import Clock, utcnow
from worker.config import ConfigError, Settings
from worker.errors import Unavailable
from worker.infra.logging import flush as flush_logs
from worker.infra.stripe_gateway import StripeGateway
from worker.processing.unit_of_work import EventProcessor
from worker.queue.enqueue import JobQueue
from worker.queue.redis import ArqRedis
from worker.queue.redis import connect as connect_redis
from worker.storage import db


def load_catalog(path: Path | None) -> Catalog:
    """The catalog at ``path`` or the shipped example; a bad file fails with file, key and problem."""
    if path is None:
        text = resources.files("worker").joinpath("catalog.example.toml").read_text(encoding="utf-8")
        return parse_catalog(text, "worker/catalog.example.toml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the catalog: {exc.strerror}") from None
    return parse_catalog(text, str(path))


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    redis: ArqRedis
    catalog: Catalog
    clock: Clock = field(default=utcnow)
    # Outgoing Stripe calls; None when no STRIPE_API_KEY is configured.
    stripe: StripeGateway | None = None

    @cached_property
    def queue(self) -> JobQueue:
        return JobQueue(self.redis, self.settings.redis_prefix, self.settings.queue_name)

    @cached_property
    def processor(self) -> EventProcessor:
        return EventProcessor(
            self.pool,
            self.catalog,
            self.clock,
            lock_timeout_ms=self.settings.lock_timeout_ms,
            unmatched_backoff=self.settings.unmatched_retry_seconds,
        )

    @classmethod
    async def start(
        cls, settings: Settings, *, clock: Clock = utcnow, catalog: Catalog | None = None
    ) -> Services:
        if not settings.database_url or not settings.redis_url:
            raise ConfigError("DATABASE_URL and REDIS_URL must be set (or use `billing-worker run`)")
        catalog = catalog or load_catalog(settings.catalog_path)
        pool = await db.create_pool(settings.database_url, size=settings.db_pool_size)
        try:
            redis = await connect_redis(settings.redis_url)
        except BaseException:
            await pool.close()
            raise
        gateway = (
            StripeGateway(settings.stripe_api_key, api_base=settings.stripe_api_base)
            if settings.stripe_api_key
            else None
        )
        return cls(settings, pool, redis, catalog, clock, gateway)

    def require_stripe(self) -> StripeGateway:
        """The gateway built at start-up; without STRIPE_API_KEY, Stripe cannot be read (``Unavailable``)."""
        if self.stripe is None:
            raise Unavailable("stripe_not_configured", "STRIPE_API_KEY is not set: Stripe cannot be read")
        return self.stripe

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection in a keyed transaction (``db.begin_keyed``): lock waits are bounded
        (BW_LOCK_TIMEOUT_MS), so a request that would wait longer gets a 503 instead of hanging."""
        async with self.pool.acquire() as conn, conn.transaction():
            await db.begin_keyed(conn, self.settings.lock_timeout_ms)
            yield conn

    async def close(self) -> None:
        flush_logs()  # every role ends here: the log lines still buffered go out now
        if self.stripe is not None:
            await self.stripe.close()
        await self.redis.aclose()
        await self.pool.close()


# The key under which both aiohttp apps keep the services.
SERVICES = web.AppKey("services", Services)
