"""Redis connections for the queue: arq's pool with short connect timeouts."""

from __future__ import annotations

from arq.connections import ArqRedis, RedisSettings, create_pool

__all__ = ["ArqRedis", "connect", "redis_settings"]


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 2
    settings.conn_retries = 1
    settings.conn_retry_delay = 0
    return settings


async def connect(url: str) -> ArqRedis:
    """A pooled Redis client that can also enqueue arq jobs."""
    return await create_pool(redis_settings(url))
