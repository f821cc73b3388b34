"""The session's PostgreSQL and Redis (tests/support/services.py) are real, and private to the session."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.support.services import fetchval


async def test_session_services_are_real_and_private(pg_url: str, redis_url: str, redis_prefix: str) -> None:
    assert (await fetchval(pg_url, "SELECT current_database()")).startswith("bw_test_")
    assert redis_prefix.startswith("bwtest-")
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set(f"{redis_prefix}:probe", "1", ex=60)
        assert await client.get(f"{redis_prefix}:probe") == b"1"
    finally:
        await client.aclose()
