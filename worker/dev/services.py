"""The embedded PostgreSQL and Redis that ``billing-worker run`` starts when no URLs are set."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from worker.dev.postgres import EmbeddedPostgres
from worker.dev.redis import EmbeddedRedis
from worker.dev.server import log

__all__ = ["EmbeddedServices", "embedded_services"]


@dataclass(frozen=True)
class EmbeddedServices:
    """The two servers of the CLI's embedded mode, running."""

    postgres: EmbeddedPostgres
    redis: EmbeddedRedis

    @property
    def database_url(self) -> str:
        return self.postgres.url()

    @property
    def redis_url(self) -> str:
        return self.redis.url()


@contextmanager
def embedded_services(
    data_dir: Path,
    *,
    postgres_port: int | None = None,
    redis_port: int | None = None,
    durable: bool = True,
) -> Iterator[EmbeddedServices]:
    """Start PostgreSQL (``data_dir/postgres``) and Redis (``data_dir/redis``); stop both after.

    Redis's binary is looked up before anything starts, so a missing one fails fast.
    """
    data_dir = Path(data_dir).absolute()
    redis = EmbeddedRedis(data_dir / "redis", redis_port)
    postgres = EmbeddedPostgres(data_dir / "postgres", postgres_port, durable=durable)
    with postgres, redis:
        services = EmbeddedServices(postgres, redis)
        log.info(
            "embedded_services_ready",
            database_url=services.database_url,
            redis_url=services.redis_url,
            data_dir=str(data_dir),
        )
        yield services
