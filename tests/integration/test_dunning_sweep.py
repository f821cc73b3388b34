"""The dunning ladder over time with an injected clock: a failed payment blocks at once, the cron
sweep escalates with no new event, payment lifts it; each change audited at its effective time,
notified after commit, and handed to ``after_commit`` (where waiting plan changes are released)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from handlers.codec import parse_datetime
from handlers.reducer import BlockApplied, BlockLevelChanged, BlockLifted
from tests.support import stripe_factory as sf
from tests.support.clock import MovableClock
from tests.support.helpers import RunningService
from tests.support.money_helpers import AfterCommitRecorder, changes_of, ids
from tests.support.service_fixtures import service_fixture
from worker.jobs.dunning import sweep_dunning
from worker.queue.worker import Job

# The service on the test's clock, whose dunning sweep runs only when a test runs it: the
# worker's cron (minute % 5, second 20) would sweep with the clock wherever the test has set it,
# even back at the start of the next history (a CI run lost a block that way).
service = service_fixture(at=sf.at(sf.T0), cron_sweep=False)


def _history(tag: str, **kw: Any) -> tuple[str, list[dict[str, Any]]]:
    i = ids(tag)
    events = sf.history_payment_failure(
        workspace_id=i["workspace_id"],
        customer=i["customer"],
        sub_id=i["sub_id"],
        invoice_id=f"in_{i['workspace_id']}",
        **kw,
    )
    return i["workspace_id"], events


async def _sweep(svc: RunningService, *workspaces: str) -> int:
    """Run the sweep once; how many of ``workspaces`` it changed. The test database is shared, so
    other tests' workspaces may be due at this clock too: the sweep's own count is at least that."""
    before = {ws: (await svc.workspace(ws))["version"] for ws in workspaces}
    total = await sweep_dunning(Job(svc.services))
    changed = sum([(await svc.workspace(ws))["version"] != version for ws, version in before.items()])
    assert total >= changed
    return changed


async def test_failed_payment_escalates_by_the_sweep_and_payment_clears(
    service: RunningService, clock: MovableClock, after_commit_calls: AfterCommitRecorder
):
    ws, events = _history("ladder", retry_days=20, outcome="paid")
    paid_at = next(n for n, e in enumerate(events) if e["type"] == "invoice.paid")
    failing, paying = events[:paid_at], events[paid_at:]  # payment comes 20 days after the failure

    await service.deliver(*failing, clock=clock)
    state = await service.workspace(ws)
    assert (state["dunning_level"], state["blocked"]) == ("payment_issue", True)
    since = parse_datetime(state["block"]["since"])
    assert BlockApplied("payment_issue") in after_commit_calls.effects_for(ws)

    # 13 days on: nothing is due, the sweep writes nothing.
    clock.now = since + timedelta(days=13)
    version = state["version"]
    notified = len(await changes_of(service, ws))
    assert await _sweep(service, ws) == 0
    assert (await service.workspace(ws))["version"] == version

    # Past 14 days, with no new event: the sweep escalates, audited at since + 14 days.
    clock.now = since + timedelta(days=14, hours=5)
    assert await _sweep(service, ws) == 1
    state = await service.workspace(ws)
    assert (state["dunning_level"], state["version"]) == ("restricted", version + 1)
    audit = await service.services.pool.fetchrow(
        "SELECT cause_kind, effective_at, recorded_at FROM audit_log WHERE workspace_id = $1 AND version = $2",
        ws,
        state["version"],
    )
    assert audit["cause_kind"] == "sweep"
    assert audit["effective_at"] == since + timedelta(days=14)
    assert BlockLevelChanged("payment_issue", "restricted") in after_commit_calls.effects_for(ws)
    notes = await changes_of(service, ws)
    assert len(notes) == notified + 1
    assert notes[-1]["version"] == state["version"] and "block" in notes[-1]["changed"]

    # Running again at the same level is a no-op: no version, no audit, no notification.
    clock.now += timedelta(hours=1)
    assert await _sweep(service, ws) == 0
    assert (await service.workspace(ws))["version"] == state["version"]
    assert len(await changes_of(service, ws)) == notified + 1

    # The customer pays: the block is lifted by re-evaluation, and the lift reaches after_commit.
    await service.deliver(*paying, clock=clock)
    state = await service.workspace(ws)
    assert (state["blocked"], state["dunning_level"], state["open_invoices"]) == (False, None, [])
    assert BlockLifted("restricted") in after_commit_calls.effects_for(ws)
    assert await _sweep(service, ws) == 0


async def test_uncollectible_blocking_is_configuration_and_the_sweep_applies_a_change(
    service: RunningService, clock: MovableClock, after_commit_calls: AfterCommitRecorder
):
    ws, events = _history("uncoll", outcome="uncollectible")
    await service.deliver(*events, clock=clock)
    state = await service.workspace(ws)
    assert state["blocked"] is True  # the example catalog: uncollectible money is still owed

    catalog = service.services.catalog
    service.services.catalog = dataclasses.replace(
        catalog, policy=dataclasses.replace(catalog.policy, uncollectible_blocks=False)
    )
    clock.now += timedelta(minutes=5)
    assert await _sweep(service, ws) == 1
    state = await service.workspace(ws)
    assert state["blocked"] is False
    lifted = [c for c in after_commit_calls.calls if c[0] == ws and c[3].startswith("dunning-sweep:")]
    assert [c[2] for c in lifted] == [(BlockLifted("payment_issue"),)]
    audit = await service.services.pool.fetchrow(
        "SELECT cause_kind, effective_at FROM audit_log WHERE workspace_id = $1 ORDER BY version DESC LIMIT 1",
        ws,
    )
    assert (audit["cause_kind"], audit["effective_at"]) == ("sweep", clock.now)


async def test_sweep_leaves_workspaces_without_unpaid_invoices_alone(
    service: RunningService, clock: MovableClock
):
    ws, events = _history("clean", outcome="voided")
    await service.deliver(*events, clock=clock)
    version = (await service.workspace(ws))["version"]
    clock.now += timedelta(days=60)
    await _sweep(service, ws)
    state = await service.workspace(ws)
    assert (state["blocked"], state["version"]) == (False, version)


async def test_sweep_walks_every_candidate_in_batches(
    service: RunningService, clock: MovableClock, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("worker.jobs.dunning.BATCH", 2)
    workspaces = []
    for n in range(5):
        ws, events = _history(f"batch{n}", outcome=None)
        clock.now = sf.at(sf.T0)
        await service.deliver(*events, clock=clock)
        workspaces.append(ws)
    since = parse_datetime((await service.workspace(workspaces[0]))["block"]["since"])
    clock.now = since + timedelta(days=31)
    assert await _sweep(service, *workspaces) == 5
    levels = {(await service.workspace(ws))["dunning_level"] for ws in workspaces}
    assert levels == {"suspended"}
