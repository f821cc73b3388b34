"""Fixtures that build on the real services of conftest: a migrated database and settings."""

from __future__ import annotations

import pytest

from tests.support.helpers import make_settings
from worker.config import Settings
from worker.storage.migrate import migrate


@pytest.fixture(scope="session")
async def migrated_pg_url(pg_url: str) -> str:
    await migrate(pg_url)
    return pg_url


@pytest.fixture
def settings(migrated_pg_url: str, redis_url: str, redis_prefix: str) -> Settings:
    return make_settings(migrated_pg_url, redis_url, redis_prefix)
