"""Plan changes end to end: internal API → Postgres → firing → Stripe (tests/support/stripe_server.py) →
webhook back → final state. Real Postgres and Redis; the clock is injected and moved by the test."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.support import stripe_factory as sf
from tests.support.helpers import TOKEN, running_service, wait_for
from tests.support.plan_change_support import ANNUAL_END, GB, LEAD, START, World, ts, world_for
from worker.api.workspaces import workspace_json
from worker.config import Settings
from worker.infra.stripe_gateway import API_VERSION
from worker.jobs.plan_changes import fire_plan_change, sweep_plan_changes
from worker.plan_changes import firing
from worker.plan_changes import store as plan_change_store
from worker.storage import workspaces


async def _read_separately(world: World) -> dict[str, Any]:
    """The API's workspace document built from the three separate reads it combines in one
    statement (``plan_changes.store.workspace_status``): row, open invoices, active change."""
    pool = world.svc.services.pool
    row = await workspaces.get_workspace(pool, world.ws)
    invoices = list(await workspaces.open_invoices(pool, world.ws))
    pending = plan_change_store.change_json(await plan_change_store.active_change(pool, world.ws))
    return json.loads(json.dumps({**workspace_json(row, invoices), "pending_plan_change": pending}))


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[World]:
    async with world_for(settings) as w:
        yield w


async def test_business_yearly_to_plus_monthly_fires_once_at_the_lead_before_contract_end(world: World):
    status, body = await world.request(plan="plus", interval="monthly", dry_run=True)
    assert status == 200 and body["decision"]["kind"] == "at_period_end" and body["plan_change"] is None
    assert await world.svc.api("GET", f"/v1/workspaces/{world.ws}/plan-changes") == (
        404,
        {
            "error": {
                "code": "no_pending_plan_change",
                "message": f"workspace {world.ws!r} has no pending plan change",
            }
        },
    )

    status, body = await world.request(plan="plus", interval="monthly")
    assert status == 201, body
    decision, change = body["decision"], body["plan_change"]
    assert decision["kind"] == "at_period_end" and decision["proration_behavior"] == "none"
    assert decision["effective_at"] == sf.at(ANNUAL_END).isoformat().replace("+00:00", "Z")
    assert change["status"] == "pending" and change["idempotency_key"] == f"plan-change:{change['change_id']}"
    state = await world.svc.workspace(world.ws)
    assert state["pending_plan_change"]["change_id"] == change["change_id"]
    assert (state["plan"], state["interval"]) == ("business", "annual")

    # Not due yet: neither the deferred job (already run by the in-process worker: its real-time
    # defer is in the past) nor the sweep calls Stripe.
    assert await fire_plan_change(world.ctx, change["change_id"]) == "not_due"
    assert await sweep_plan_changes(world.ctx) == 0
    world.clock.now = sf.at(ANNUAL_END) - timedelta(seconds=LEAD + 1)
    assert await sweep_plan_changes(world.ctx) == 0
    assert world.server.calls("POST") == []

    world.clock.now = sf.at(ANNUAL_END) - timedelta(seconds=LEAD)
    await sweep_plan_changes(world.ctx)  # the worker's own cron sweep may race this one: fine
    await world.applied(change["change_id"])
    assert await sweep_plan_changes(world.ctx) == 0  # and never again
    assert await fire_plan_change(world.ctx, change["change_id"]) == "not_active"
    (call,) = world.server.calls("POST")
    assert call.path == f"/v1/subscriptions/{world.sub_id}"
    assert call.idempotency_key == f"plan-change:{change['change_id']}"
    assert call.stripe_version == API_VERSION
    assert call.params == {
        "items": [{"id": sf.item_id(world.sub_id, 0), "quantity": "5", "price": "price_plus_monthly"}],
        "metadata": {"plan_change_id": change["change_id"]},
        "proration_behavior": "none",
        "billing_cycle_anchor": {"type": "now"},  # a shorter interval starts its own cycle
    }
    row = await world.row(change["change_id"])
    assert row["status"] == "applied" and row["applied_at"] == world.clock.now

    # Stripe's webhook for our call, matched by its idempotency key, is reconciled like any other.
    fired_at = ts(world.clock.now)
    webhook = world.sub_event(
        "updated",
        fired_at,
        [("price_plus_monthly", 5)],
        period_start=fired_at,
        period_end=sf.period_end_for("price_plus_monthly", fired_at),
        request_idempotency_key=call.idempotency_key,
    )
    await world.svc.deliver(webhook)
    state = await world.svc.workspace(world.ws)
    assert (state["plan"], state["interval"], state["seats"]) == ("plus", "monthly", 5)
    assert state["pending_plan_change"] is None
    row = await world.row(change["change_id"])
    assert row["confirmed_event_id"] == webhook["id"] and row["status"] == "applied"
    assert len(world.server.calls("POST")) == 1


async def test_an_open_invoice_makes_the_change_wait_and_payment_releases_it(world: World):
    status, body = await world.request(plan="plus", interval="monthly")
    assert status == 201, body
    change_id = body["plan_change"]["change_id"]
    failed_at = ts(world.clock.now)
    common = world.invoice_fields(f"in_pc{uuid.uuid4().hex[:10]}", failed_at - 60)
    await world.svc.deliver(
        sf.invoice_event("payment_failed", created=failed_at, status="open", attempt_count=1, **common)
    )
    assert (await world.svc.workspace(world.ws))["blocked"] is True

    world.clock.now = sf.at(ANNUAL_END) - timedelta(seconds=LEAD)
    await sweep_plan_changes(world.ctx)
    row = await world.row(change_id)
    assert row["status"] == "waiting_payment" and world.server.calls("POST") == []
    state = await world.svc.workspace(world.ws)
    assert state["pending_plan_change"]["status"] == "waiting_payment"
    assert len(state["open_invoices"]) == 1 and state["pending_plan_change"]["request"]["plan"] == "plus"
    assert state == await _read_separately(world)  # the one-statement read shows the same
    await sweep_plan_changes(world.ctx)  # still blocked: still waiting, still no call
    assert world.server.calls("POST") == []

    paid = sf.invoice_event(
        "paid", created=ts(world.clock.now), status="paid", amount_paid=9600, amount_remaining=0, **common
    )
    await world.svc.deliver(paid)  # BlockLifted → after_commit releases the change to the worker
    await wait_for(lambda: world.row(change_id), lambda r: r["status"] == "applied", what="release fired")
    (call,) = world.server.calls("POST")
    assert call.idempotency_key == f"plan-change:{change_id}"
    assert call.params["items"][0]["price"] == "price_plus_monthly"


async def test_a_newer_request_supersedes_and_delete_cancels_without_firing(world: World):
    _s, first = await world.request(plan="plus", interval="annual")
    status, second = await world.request(plan="plus", interval="monthly", seats=4)
    assert status == 201
    old = await world.row(first["plan_change"]["change_id"])
    assert old["status"] == "superseded" and old["superseded_by"] == second["plan_change"]["change_id"]
    status, shown = await world.svc.api("GET", f"/v1/workspaces/{world.ws}/plan-changes")
    assert status == 200 and shown["plan_change"]["change_id"] == second["plan_change"]["change_id"]

    async with world.svc.http.delete(
        f"{world.svc.api_url}/v1/workspaces/{world.ws}/plan-changes",
        headers={"Authorization": f"Bearer {TOKEN}", "X-Request-Id": "req_cancel_1"},
    ) as resp:
        status, deleted = resp.status, await resp.json()
    assert status == 200 and deleted["plan_change"]["status"] == "canceled"
    status, again = await world.svc.api("DELETE", f"/v1/workspaces/{world.ws}/plan-changes")
    assert status == 404 and again["error"]["code"] == "no_pending_plan_change"

    # The deferred jobs were not aborted: run them (and the sweep) at the due time, nothing fires.
    world.clock.now = sf.at(ANNUAL_END)
    for change in (first, second):
        assert await fire_plan_change(world.ctx, change["plan_change"]["change_id"]) == "not_active"
    await sweep_plan_changes(world.ctx)
    assert world.server.calls("POST") == []

    audit = await world.svc.services.pool.fetch(
        "SELECT cause_kind, cause_id, changes FROM audit_log WHERE workspace_id = $1 ORDER BY version",
        world.ws,
    )
    pending_changes = [a for a in audit if a["cause_kind"] == "request"]
    keys = [k for a in pending_changes for k in a["changes"]]
    assert keys.count("pending_plan_change") == 2  # both requests are in the audit log
    assert f"plan_change.{first['plan_change']['change_id']}.status" in keys  # superseded
    assert any(a["cause_id"] == "req_cancel_1" for a in pending_changes)  # the cancel, by request id


async def test_immediate_upgrade_updates_stripe_now_with_prorations(world: World):
    status, body = await world.request(plan="enterprise", interval="annual", seats=6, has_payment_method=True)
    assert status == 200, body
    assert body["decision"]["kind"] == "immediate" and body["plan_change"]["status"] == "applied"
    (call,) = world.server.calls("POST")
    assert call.params == {
        "items": [{"id": sf.item_id(world.sub_id, 0), "quantity": "6", "price": "price_enterprise_annual"}],
        "metadata": {"plan_change_id": body["plan_change"]["change_id"]},
        "billing_cycle_anchor": {"type": "unchanged"},  # annual → annual keeps the contract end
    }  # no proration_behavior: provider proration is Stripe's default create_prorations
    assert call.idempotency_key == f"plan-change:{body['plan_change']['change_id']}"
    assert (await world.svc.workspace(world.ws))["pending_plan_change"] is None


async def test_two_workers_racing_on_a_due_change_make_one_stripe_call(world: World):
    _s, body = await world.request(plan="plus", interval="monthly")
    change_id = body["plan_change"]["change_id"]
    world.clock.now = sf.at(ANNUAL_END)
    world.server.delay_seconds = 0.3  # the first call is still in flight when the second tries
    results = await asyncio.gather(
        firing.fire(world.svc.services, change_id, cause=("job", "a")),
        firing.fire(world.svc.services, change_id, cause=("job", "b")),
        sweep_plan_changes(world.ctx),
    )
    outcomes = [r.outcome if hasattr(r, "outcome") else f"sweep:{r}" for r in results]
    assert outcomes.count("applied") + outcomes.count("sweep:1") <= 1, outcomes
    await world.applied(change_id)
    assert len(world.server.calls("POST")) == 1


class Killed(BaseException):
    """The process dies here: nothing after this point runs (not even except Exception handlers)."""


async def test_a_worker_killed_between_the_stripe_call_and_its_commit_reuses_the_key(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    _s, body = await world.request(plan="plus", interval="monthly")
    change_id = body["plan_change"]["change_id"]
    world.clock.now = sf.at(ANNUAL_END) - timedelta(seconds=LEAD)
    real_finish = firing._finish

    async def die(*args: Any, **kwargs: Any) -> Any:
        raise Killed

    monkeypatch.setattr(firing, "_finish", die)
    with pytest.raises(Killed):
        await firing.fire(world.svc.services, change_id, cause=("job", "doomed"))
    monkeypatch.setattr(firing, "_finish", real_finish)
    row = await world.row(change_id)
    assert row["status"] == "firing" and row["claimed_at"] is not None  # the commit never happened

    # While the dead worker's claim is fresh nobody fires; once it is stale the sweep does.
    assert await sweep_plan_changes(world.ctx) == 0
    world.clock.now += plan_change_store.claim_timeout(world.svc.services.settings) + timedelta(seconds=1)
    await sweep_plan_changes(world.ctx)
    await world.applied(change_id)
    first, retry = world.server.calls("POST")
    assert first.idempotency_key == retry.idempotency_key == f"plan-change:{change_id}"
    assert first.flat == retry.flat  # the very same request, so Stripe replays it
    assert retry.replayed and len(world.server.applied("POST")) == 1
    assert (await world.row(change_id))["status"] == "applied"


async def test_transient_stripe_errors_are_retried_with_the_same_key(world: World):
    _s, body = await world.request(plan="plus", interval="monthly")
    change_id = body["plan_change"]["change_id"]
    world.clock.now = sf.at(ANNUAL_END)
    world.server.fail_next(3, status=503)  # the SDK's own 2 retries, then ours
    result = await firing.fire(world.svc.services, change_id, cause=("job", "t1"))
    assert result.outcome == "retry"  # the claim is released; the worker's cron may already retry
    await sweep_plan_changes(world.ctx)
    await world.applied(change_id)
    keys = {c.idempotency_key for c in world.server.calls("POST")}
    assert keys == {f"plan-change:{change_id}"} and len(world.server.applied("POST")) == 1


async def test_a_rejected_change_is_recorded_as_failed(world: World):
    _s, body = await world.request(plan="plus", interval="monthly")
    change_id = body["plan_change"]["change_id"]
    world.clock.now = sf.at(ANNUAL_END)
    world.server.fail_next(status=400, error_type="invalid_request_error", message="No such price")
    assert await sweep_plan_changes(world.ctx) == 0
    row = await world.row(change_id)
    assert row["status"] == "failed" and "No such price" in row["last_error"]
    assert await sweep_plan_changes(world.ctx) == 0 and len(world.server.calls("POST")) == 1


async def test_paid_to_free_ends_the_subscription_at_the_contract_end(world: World):
    status, body = await world.request(
        plan="free", interval=None, seats=1, member_count=2, storage_used_bytes=GB
    )
    assert status == 201 and body["decision"]["ends_subscription"] is True
    world.clock.now = sf.at(ANNUAL_END) - timedelta(seconds=LEAD)
    await sweep_plan_changes(world.ctx)
    await world.applied(body["plan_change"]["change_id"])
    (call,) = world.server.calls("POST")
    assert call.params == {
        "cancel_at_period_end": "true",
        "metadata": {"plan_change_id": body["plan_change"]["change_id"]},
    }
    assert world.server.objects[world.sub_id]["cancel_at_period_end"] is True


async def test_requests_that_cannot_act_change_nothing(world: World):
    cases = [
        ({"plan": "plus", "interval": "monthly", "requested_by_role": "member"}, 409, "plan_change_blocked"),
        ({"plan": "business", "interval": "annual"}, 409, "no_change"),
        (
            {"plan": "plus", "interval": "monthly", "member_count": 30, "seats": 30},
            409,
            "plan_change_blocked",
        ),
    ]
    for body, status, code in cases:
        got_status, got = await world.request(**body)
        assert (got_status, got["error"]["code"]) == (status, code), (body, got)
    status, body = await world.request(
        plan="plus", interval="monthly", requested_by_role="member", dry_run=True
    )
    assert status == 200 and body["decision"] == {
        **body["decision"],
        "kind": "blocked",
        "reasons": ["not_admin"],
    }
    assert (await world.svc.workspace(world.ws))["pending_plan_change"] is None
    count = await world.svc.services.pool.fetchval(
        "SELECT count(*) FROM plan_changes WHERE workspace_id = $1", world.ws
    )
    assert count == 0


@pytest.mark.parametrize(
    ("patch", "code"),
    [
        ({"plan": "platinum"}, "unknown_plan"),
        ({"plan": 3}, "invalid_plan"),
        ({"interval": "weekly"}, "unknown_interval"),
        ({"plan": "enterprise", "interval": "six_month"}, "interval_not_offered"),
        ({"interval": None}, "missing_interval"),
        ({"plan": "free", "interval": "monthly"}, "interval_not_applicable"),
        ({"seats": 0}, "invalid_seats"),
        ({"seats": "5"}, "invalid_seats"),
        ({"seats": True}, "invalid_seats"),
        ({"seats": 2**40}, "invalid_seats"),
        ({"storage_used_bytes": 2**70}, "invalid_storage_used_bytes"),
        ({"requested_by_role": "owner"}, "invalid_requested_by_role"),
        ({"member_count": -1}, "invalid_member_count"),
        ({"storage_used_bytes": 1.5}, "invalid_storage_used_bytes"),
        ({"dry_run": "yes"}, "invalid_dry_run"),
        ({"has_payment_method": 1}, "invalid_has_payment_method"),
        ({"colour": "red"}, "unknown_field"),
    ],
)
async def test_every_field_is_validated_with_a_specific_code(
    settings: Settings, patch: dict[str, Any], code: str
):
    async with running_service(settings, worker=False) as svc:
        body = {
            "plan": "plus",
            "interval": "monthly",
            "seats": 3,
            "requested_by_role": "workspace_admin",
            "member_count": 2,
            "storage_used_bytes": 0,
            **patch,
        }
        status, answer = await svc.api("POST", "/v1/workspaces/ws_any/plan-changes", json=body)
        assert (status, answer["error"]["code"]) == (400, code)
        status, answer = await svc.api("POST", "/v1/workspaces/ws_any/plan-changes", data=b"{not json")
        assert (status, answer["error"]["code"]) == (400, "invalid_json")


async def test_without_a_stripe_key_acting_fails_clearly(settings: Settings):
    assert settings.stripe_api_key is None
    async with running_service(settings, worker=False) as svc:
        ws = f"ws_nokey_{uuid.uuid4().hex[:8]}"
        event = sf.subscription_event(
            "created",
            api_version=sf.ENDIVE,
            created=START,
            sub_id=f"sub_{ws}",
            customer=f"cus_{ws}",
            workspace_id=ws,
            status="active",
            items=[("price_plus_monthly", 3)],
            period_start=START,
            period_end=sf.period_end_for("price_plus_monthly", START),
        )
        await svc.post_event(event)
        await svc.services.processor.process(event["id"])
        body = {
            "plan": "business",
            "interval": "monthly",
            "seats": 3,
            "requested_by_role": "workspace_admin",
            "member_count": 2,
            "storage_used_bytes": 0,
        }
        status, answer = await svc.api(
            "POST", f"/v1/workspaces/{ws}/plan-changes", json={**body, "dry_run": True}
        )
        assert status == 200 and answer["decision"]["kind"] == "immediate"
        status, answer = await svc.api("POST", f"/v1/workspaces/{ws}/plan-changes", json=body)
        assert (status, answer["error"]["code"]) == (503, "stripe_not_configured")
        status, answer = await svc.api("POST", "/v1/workspaces/ws_unknown_x/plan-changes", json=body)
        assert (status, answer["error"]["code"]) == (404, "workspace_not_found")


async def test_the_confirming_webhook_is_the_earliest_whatever_the_arrival_order(world: World):
    status, body = await world.request(plan="enterprise", interval="annual", seats=6)
    assert status == 200, body
    change_id, key = body["plan_change"]["change_id"], body["plan_change"]["idempotency_key"]
    t = ts(world.clock.now)
    items = [("price_enterprise_annual", 6)]
    early = world.sub_event("updated", t, items, request_idempotency_key=key)
    late = world.sub_event("updated", t + 5, items, request_idempotency_key=key)
    await world.svc.deliver(late)  # Stripe's events arrive in any order
    await world.svc.deliver(early)
    row = await world.row(change_id)
    assert (row["confirmed_event_id"], row["status"]) == (early["id"], "applied")
    state = await world.svc.workspace(world.ws)
    assert (state["plan"], state["interval"], state["seats"]) == ("enterprise", "annual", 6)


async def test_immediate_change_when_stripe_fails(world: World):
    world.server.fail_next(status=400, error_type="invalid_request_error", message="No such price")
    status, body = await world.request(plan="enterprise", interval="annual")
    assert (status, body["error"]["code"]) == (502, "stripe_rejected")
    assert body["error"]["plan_change"]["status"] == "failed"

    world.server.fail_next(3, status=503)  # the SDK's 2 retries and the first try: all transient
    status, body = await world.request(plan="enterprise", interval="annual")
    assert status == 202 and body["plan_change"]["status"] in ("firing", "applied"), body  # (cron)
    await sweep_plan_changes(world.ctx)  # the same request again, now answered
    await world.applied(body["plan_change"]["change_id"])
    keys = [c.idempotency_key for c in world.server.calls("POST")]
    assert keys[1:] == [f"plan-change:{body['plan_change']['change_id']}"] * 4


async def test_firing_rechecks_seats_against_the_latest_reported_usage(world: World):
    status, body = await world.request(plan="plus", interval="monthly", seats=5, member_count=4)
    assert status == 201, body
    change_id = body["plan_change"]["change_id"]
    status, _ = await world.svc.api(
        "PUT", f"/v1/workspaces/{world.ws}/usage", json={"members": 12, "storage_used_bytes": 10 * GB}
    )
    assert status == 200
    world.clock.now = sf.at(ANNUAL_END) - timedelta(seconds=LEAD)
    await sweep_plan_changes(world.ctx)
    row = await wait_for(lambda: world.row(change_id), lambda r: r["status"] == "failed", what="failed")
    assert "seats" in row["last_error"] and world.server.calls("POST") == []


async def test_dunning_escalates_with_no_event_then_payment_clears_it_and_releases_the_change(world: World):
    """Issues 3 and 4 together: failed payment → payment_issue at once → restricted after 14 days by the
    sweep alone → suspended after 30 → the due change waits → payment lifts it and it fires."""
    from worker.jobs.dunning import sweep_dunning

    status, body = await world.request(plan="plus", interval="monthly")
    assert status == 201, body
    change_id = body["plan_change"]["change_id"]
    failed_at = world.clock.now
    common = world.invoice_fields(f"in_dl{uuid.uuid4().hex[:10]}", ts(failed_at) - 60)
    await world.svc.deliver(
        sf.invoice_event("payment_failed", created=ts(failed_at), status="open", attempt_count=1, **common)
    )
    assert (await world.svc.workspace(world.ws))["dunning_level"] == "payment_issue"

    for days, level in ((13, "payment_issue"), (14, "restricted"), (31, "suspended")):
        world.clock.now = failed_at + timedelta(days=days, minutes=1)
        await sweep_dunning(world.ctx)
        state = await world.svc.workspace(world.ws)
        assert (state["dunning_level"], state["blocked"]) == (level, True), days

    world.clock.now = sf.at(ANNUAL_END) - timedelta(seconds=LEAD)
    await sweep_plan_changes(world.ctx)
    assert (await world.row(change_id))["status"] == "waiting_payment"
    assert world.server.calls("POST") == []

    paid = sf.invoice_event(
        "paid", created=ts(world.clock.now), status="paid", amount_paid=9600, amount_remaining=0, **common
    )
    await world.svc.deliver(paid)
    state = await world.svc.workspace(world.ws)
    assert (state["blocked"], state["dunning_level"]) == (False, None)
    await wait_for(
        lambda: world.row(change_id), lambda r: r["status"] == "applied", what="released change fired"
    )
    assert len(world.server.calls("POST")) == 1
    levels = await world.svc.services.pool.fetch(
        "SELECT cause_kind, before->'block'->>'level' AS before, after->'block'->>'level' AS after "
        "FROM audit_log WHERE workspace_id = $1 AND changes ? 'block' ORDER BY version",
        world.ws,
    )
    transitions = [(r["cause_kind"], r["before"], r["after"]) for r in levels if r["before"] != r["after"]]
    assert transitions == [
        ("event", None, "payment_issue"),
        ("sweep", "payment_issue", "restricted"),
        ("sweep", "restricted", "suspended"),
        ("event", "suspended", None),
    ]
