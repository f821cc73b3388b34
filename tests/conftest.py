"""Real services for the tests; how they are chosen is in tests/support/services.py.

Session fixtures: ``pg_url`` (a fresh database of this session), ``redis_url``, ``redis_prefix``.
Function fixtures for fault tests: ``embedded_postgres_factory``, ``embedded_redis_factory``
(private servers, always stopped at teardown). Other fixtures live in their own modules.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.services import (
    ServiceChoice,
    acquire_postgres,
    acquire_redis,
    create_database,
    delete_prefixed_keys,
    drop_database,
    make_temp_dir,
    with_database,
)
from worker.dev.postgres import EmbeddedPostgres
from worker.dev.redis import EmbeddedRedis

# Fixtures built on these services (migrated database, settings) live in their own module.
pytest_plugins = ("tests.support.service_fixtures",)

_chosen: dict[str, str] = {}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_server() -> AsyncIterator[ServiceChoice]:
    """The PostgreSQL server of the session (``.url`` names its ``postgres`` database)."""
    choice = await acquire_postgres(os.environ.get("TEST_DATABASE_URL"))
    _chosen["postgres"] = f"{choice.source} ({choice.url})"
    try:
        yield choice
    finally:
        choice.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_url(pg_server: ServiceChoice) -> AsyncIterator[str]:
    """URL of a database created for this session, ``bw_test_<random>``; dropped at the end."""
    name = await create_database(pg_server.url)
    _chosen["postgres"] += f", database {name}"
    try:
        yield with_database(pg_server.url, name)
    finally:
        await drop_database(pg_server.url, name)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_url() -> AsyncIterator[str]:
    """URL of the Redis server of the session. Shared: use ``redis_prefix`` in every key."""
    choice = await acquire_redis(os.environ.get("TEST_REDIS_URL"))
    _chosen["redis"] = f"{choice.source} ({choice.url})"
    try:
        yield choice.url
    finally:
        choice.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """``bwtest-<random>``; every key containing it is deleted at the end of the session."""
    prefix = f"bwtest-{secrets.token_hex(6)}"
    try:
        yield prefix
    finally:
        await delete_prefixed_keys(redis_url, prefix)


@pytest.fixture
def embedded_postgres_factory() -> Iterator[Callable[..., EmbeddedPostgres]]:
    """``make(data_dir=None, start=True, **kwargs)``: a private PostgreSQL on a free port.

    Defaults to ``durable=False`` (data still survives a killed server). Pass the ``data_dir``
    of an earlier one to open the same data with a new object. Every server made is stopped (or
    killed) at teardown and its folder removed.
    """
    yield from _server_factory(EmbeddedPostgres, "pg", durable=False)


@pytest.fixture
def embedded_redis_factory() -> Iterator[Callable[..., EmbeddedRedis]]:
    """``make(data_dir=None, start=True, **kwargs)``: a private redis-server on a free port.

    Every server made is stopped (or killed) at teardown and its folder removed.
    """
    yield from _server_factory(EmbeddedRedis, "redis")


def _server_factory(server_class: Any, name: str, **defaults: Any) -> Iterator[Callable[..., Any]]:
    root = make_temp_dir(f"bw-{name}-")
    made: list[Any] = []

    def make(data_dir: Path | None = None, *, start: bool = True, **kwargs: Any) -> Any:
        server = server_class(data_dir or root / f"{name}{len(made)}", **{**defaults, **kwargs})
        made.append(server)
        return server.start() if start else server

    try:
        yield make
    finally:
        _shut_down(made)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """An empty folder of this test (outside pytest's tmp_path: short, for server sockets)."""
    path = make_temp_dir("bw-embedded-test-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _shut_down(servers: list[Any]) -> None:
    for server in servers:
        try:
            server.stop(timeout=10)
        finally:
            server.kill()


SYSTEM_TESTS = Path(__file__).resolve().parent / "system"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/system/ is ``slow``: ``-m "not slow"`` is the quick loop."""
    for item in items:
        if SYSTEM_TESTS in item.path.parents:
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, where in _chosen.items():
        terminalreporter.write_line(f"{name}: {where}")
