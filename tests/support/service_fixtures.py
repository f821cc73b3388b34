"""Fixtures that build on the real services of conftest (a plugin of tests/conftest.py, so they
are available everywhere): a migrated database, settings, the one ``service`` fixture factory,
the service's clock, Stripe's stand-in, and the recorder of after-commit calls."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import pytest

from tests.support.clock import MovableClock
from tests.support.helpers import RunningService, make_settings, running_service
from tests.support.money_helpers import AfterCommitRecorder
from tests.support.stripe_server import StripeServer
from worker.clock import utcnow
from worker.config import Settings
from worker.processing import after_commit as bus
from worker.storage.migrate import migrate


@pytest.fixture(scope="session")
async def migrated_pg_url(pg_url: str) -> str:
    await migrate(pg_url)
    return pg_url


@pytest.fixture
def settings(migrated_pg_url: str, redis_url: str, redis_prefix: str) -> Settings:
    return make_settings(migrated_pg_url, redis_url, redis_prefix)


@pytest.fixture
def fast_settings(migrated_pg_url: str, redis_url: str, redis_prefix: str) -> Settings:
    """Settings of a test of its own (own Redis prefix) whose retries and sweeps come within seconds."""
    return make_settings(
        migrated_pg_url,
        redis_url,
        f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
        BW_UNMATCHED_RETRY_SECONDS="1,1",
        BW_SWEEP_INTERVAL_SECONDS="1",
        BW_SWEEP_RECEIVED_AFTER_SECONDS="1",
    )


@pytest.fixture
async def stripe_server() -> AsyncIterator[StripeServer]:
    """The Stripe stand-in (tests/support/stripe_server.py) of one test."""
    async with StripeServer() as server:
        yield server


@pytest.fixture
def stripe_settings(settings: Settings, stripe_server: StripeServer) -> Settings:
    """``settings`` pointed at the ``stripe_server`` fixture."""
    return dataclasses.replace(
        settings, stripe_api_key=stripe_server.api_key, stripe_api_base=stripe_server.url
    )


def service_fixture(
    *, at: datetime | None = None, worker: bool = True, cron_sweep: bool = True, **changes: Any
) -> Any:
    """A test module's ``service`` fixture (``service = service_fixture(...)``): a
    :func:`running_service` on the ``settings`` fixture with ``changes`` (``Settings`` fields).

    ``at``: the service runs on a :class:`MovableClock` set there (the ``clock`` fixture hands it
    to the test); without it, on the real clock. ``worker=False``: receiver and internal API only.
    ``cron_sweep=False``: the worker's dunning cron sweeps nothing, so only a test's own sweep
    runs, at the clock where the test has set it.
    """

    @pytest.fixture(name="service")
    async def service(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningService]:
        if not cron_sweep:

            async def no_cron_sweep(ctx: dict[str, Any]) -> int:
                return 0

            monkeypatch.setattr("worker.jobs.worker.sweep_dunning", no_cron_sweep)
        clock = MovableClock(at) if at is not None else utcnow
        configured = dataclasses.replace(settings, **changes)
        async with running_service(configured, clock=clock, worker=worker) as svc:
            yield svc

    return service


@pytest.fixture
def clock(service: RunningService) -> MovableClock:
    """The clock of the ``service`` fixture (made with ``service_fixture(at=...)``)."""
    assert isinstance(service.services.clock, MovableClock), "service_fixture(at=...) makes a movable clock"
    return service.services.clock


@pytest.fixture
def after_commit_calls(monkeypatch: pytest.MonkeyPatch) -> AfterCommitRecorder:
    """Every change committed in the test, as ``after_commits`` is handed it (which still runs)."""
    recorder = AfterCommitRecorder()
    real = bus.after_commits

    async def recording(services: Any, committed: Sequence[tuple[Any, tuple[Any, ...]]]) -> None:
        for change, effects in committed:
            recorder.calls.append((change.workspace_id, change.version, tuple(effects), change.cause))
        await real(services, committed)

    monkeypatch.setattr(bus, "after_commits", recording)
    return recorder
