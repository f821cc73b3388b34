"""Reconcile (re-fetch from Stripe, apply as observations) and backfill (Stripe's events API into
the inbox), against the local Stripe-playing server."""

from __future__ import annotations

import time
from typing import Any

from tests.support import stripe_factory as sf
from tests.support.helpers import running_service, wait_for
from tests.support.money_helpers import audit_count
from tests.support.money_helpers import ids as fresh_ids
from tests.support.scenarios import DAY, reconcile_sub_event, tied_updates
from tests.support.stripe_server import StripeServer
from worker.config import Settings


async def test_reconcile_applies_stripes_truth_once_and_orders_against_events(
    stripe_settings: Settings, stripe_server: StripeServer
):
    ids = fresh_ids("rec")
    now = int(time.time())
    async with running_service(stripe_settings) as svc:
        first = reconcile_sub_event(ids, now - 3 * DAY, seats=2, n=1)
        await svc.deliver(first)
        # Stripe has moved on (a webhook we missed): 7 seats, and an open invoice.
        truth = reconcile_sub_event(ids, now - DAY, seats=7)["data"]["object"]
        stripe_server.put({"id": ids["customer"], "object": "customer"})
        stripe_server.put(truth)
        invoice = sf.invoice_event(
            "finalized",
            api_version=sf.ENDIVE,
            created=now - DAY,
            invoice_id=f"in_{ids['sub_id']}",
            customer=ids["customer"],
            sub_id=ids["sub_id"],
            workspace_id=ids["workspace_id"],
            status="open",
            amount_due=4200,
        )["data"]["object"]
        stripe_server.put(invoice)
        audits = await audit_count(svc, ids["workspace_id"])

        status, body = await svc.api("POST", f"/v1/workspaces/{ids['workspace_id']}/reconcile")
        assert status == 200, body
        assert {a["object"] for a in body["applied"]} == {ids["sub_id"], invoice["id"]}
        state = await svc.workspace(ids["workspace_id"])
        assert state["seats"] == 7
        assert [i["invoice_id"] for i in state["open_invoices"]] == [invoice["id"]]
        assert await audit_count(svc, ids["workspace_id"]) == audits + 2
        causes = await svc.services.pool.fetch(
            "SELECT cause_kind FROM audit_log WHERE workspace_id = $1 ORDER BY version DESC LIMIT 2",
            ids["workspace_id"],
        )
        assert {r["cause_kind"] for r in causes} == {"request"}

        # Nothing changed at Stripe: a second reconcile changes nothing.
        status, body = await svc.api("POST", f"/v1/workspaces/{ids['workspace_id']}/reconcile")
        assert (status, body["applied"]) == (200, [])
        assert await audit_count(svc, ids["workspace_id"]) == audits + 2

        # An event older than the fetch (delivered late) loses; one newer than the fetch wins.
        late = reconcile_sub_event(ids, now - 2 * DAY, seats=3, n=2)
        newer = reconcile_sub_event(ids, int(time.time()) + 2, seats=9, n=3)
        for event in (late, newer):
            await svc.deliver(event)
        _, late_row = await svc.api("GET", f"/v1/events/{late['id']}")
        assert late_row["outcome"] == "stale"
        assert (await svc.workspace(ids["workspace_id"]))["seats"] == 9


async def test_reconcile_errors_are_specific(
    stripe_settings: Settings, stripe_server: StripeServer, settings: Settings
):
    ids = fresh_ids("rce")
    async with running_service(stripe_settings) as svc:
        status, body = await svc.api("POST", f"/v1/workspaces/{ids['workspace_id']}/reconcile")
        assert (status, body["error"]["code"]) == (404, "workspace_not_found")
        event = reconcile_sub_event(ids, int(time.time()) - DAY, seats=1)
        await svc.deliver(event)
        stripe_server.put({"id": ids["customer"], "object": "customer"})
        stripe_server.fail_next(3, status=503, path=r"/v1/customers/.*")  # past the SDK retries
        status, body = await svc.api("POST", f"/v1/workspaces/{ids['workspace_id']}/reconcile")
        assert (status, body["error"]["code"]) == (502, "stripe_unavailable")
    async with running_service(settings) as svc:  # no STRIPE_API_KEY
        status, body = await svc.api("POST", f"/v1/workspaces/{ids['workspace_id']}/reconcile")
        assert (status, body["error"]["code"]) == (503, "stripe_not_configured")


async def test_backfill_without_stripe_checks_the_body_before_answering_503(settings: Settings):
    """Without STRIPE_API_KEY a bad body is still the caller's 400; only a valid one gets 503."""
    now = int(time.time())
    async with running_service(settings, worker=False) as svc:
        runs = await svc.services.pool.fetchval("SELECT count(*) FROM backfill_runs")
        for body, code in [
            ({"since": True}, "invalid_since"),
            ({"since": now - 40 * DAY}, "since_out_of_range"),
            ({"run_id": 2**63}, "invalid_run_id"),
            ({"run_id": "1"}, "invalid_run_id"),
        ]:
            status, answer = await svc.api("POST", "/v1/backfill", json=body)
            assert (status, answer["error"]["code"]) == (400, code), body
        for body in ({"since": now - DAY}, {"run_id": 2**63 - 1}):
            status, answer = await svc.api("POST", "/v1/backfill", json=body)
            assert (status, answer["error"]["code"]) == (503, "stripe_not_configured"), body
        assert await svc.services.pool.fetchval("SELECT count(*) FROM backfill_runs") == runs


async def test_backfill_imports_only_missing_events_and_resumes_after_a_failure(
    stripe_settings: Settings, stripe_server: StripeServer
):
    now = int(time.time())
    histories = []
    for n in range(50):  # 250 events: three pages of 100
        ids = fresh_ids(f"bf{n}")
        histories.append(sf.history_lifecycle(**ids, start=now - 25 * DAY, trial_days=3))
    events = [e for h in histories for e in h if e["created"] <= now]
    stripe_server.events = list(events)
    # An event older than `since` must not be imported.
    old = sf.history_lifecycle(**fresh_ids("bfold"), start=now - 29 * DAY)[0]
    stripe_server.events.append(old)
    assert len(events) > 200
    async with running_service(stripe_settings) as svc:
        delivered = events[::3]  # the inbox already has a third of them
        for event in delivered:
            assert (await svc.post_event(event))[0] == 200
        since = now - 26 * DAY
        # Stripe fails from the third page on (past the SDK's own 2 retries): the run stops there.
        stripe_server.fail_next(3, status=503, path=r"/v1/events", after=2)
        status, run = await svc.api("POST", "/v1/backfill", json={"since": since})
        assert status == 202, run

        async def run_state() -> dict[str, Any]:
            return (await svc.api("GET", f"/v1/backfill/{run['run_id']}"))[1]

        failed = await wait_for(run_state, lambda r: r["status"] == "failed", what="the injected failure")
        assert failed["seen"] == 200 and failed["cursor"] is not None
        resume_from = len(stripe_server.calls("GET", r"/v1/events"))
        status, _ = await svc.api("POST", "/v1/backfill", json={"run_id": run["run_id"]})
        assert status == 202
        done = await wait_for(run_state, lambda r: r["status"] == "done", timeout=60, what="backfill done")
        assert done["seen"] == len(events)
        # The resumed run started at the stored cursor, not at the top.
        assert (
            stripe_server.calls("GET", r"/v1/events")[resume_from].flat["starting_after"] == failed["cursor"]
        )
        assert done["inserted"] == len(events) - len(delivered)
        await svc.wait_processed([e["id"] for e in events], timeout=90)
        assert (
            await svc.services.pool.fetchval(
                "SELECT count(*) FROM webhook_events WHERE event_id = $1", old["id"]
            )
            == 0
        )
        # A second run finds nothing new.
        status, again = await svc.api("POST", "/v1/backfill", json={"since": since})
        second = await wait_for(
            lambda: svc.api("GET", f"/v1/backfill/{again['run_id']}"),
            lambda r: r[1]["status"] == "done",
            what="second run",
        )
        assert second[1]["inserted"] == 0
        final = await svc.workspace(histories[0][0]["data"]["object"]["metadata"]["workspace_id"])
        assert final is not None

        status, body = await svc.api("POST", "/v1/backfill", json={"since": now - 31 * DAY})
        assert (status, body["error"]["code"]) == (400, "since_out_of_range")
        status, body = await svc.api("POST", "/v1/backfill", json={"since": "yesterday"})
        assert (status, body["error"]["code"]) == (400, "invalid_since")


async def test_two_events_tied_on_created_make_the_worker_ask_stripe(
    stripe_settings: Settings, stripe_server: StripeServer
):
    """SPEC §4: latest ``created`` wins; on a tie with different content, re-fetch from Stripe."""
    ids = fresh_ids("tie")
    now = int(time.time())
    # Two updates stamped with the same second. The deterministic tie-break (higher event id)
    # would keep the "z" one; Stripe's object says the "a" one is the truth.
    truth, other = tied_updates(ids, now - 60, "tie", stripe_server)
    async with running_service(stripe_settings) as svc:
        for event in (truth, other):
            assert (await svc.post_event(event))[0] == 200
        await svc.wait_processed([truth["id"], other["id"]])

        async def refetched() -> dict[str, Any] | None:
            return await svc.workspace(ids["workspace_id"])

        state = await wait_for(
            refetched, lambda s: s is not None and (s["seats"], s["status"]) == (7, "active"), what="refetch"
        )
        assert state["plan"] == "plus"
        assert stripe_server.calls("GET", rf"/v1/customers/{ids['customer']}")
        kinds = await svc.services.pool.fetch(
            "SELECT cause_kind FROM audit_log WHERE workspace_id = $1 ORDER BY version", ids["workspace_id"]
        )
        assert kinds[-1]["cause_kind"] == "job"  # the refetch, audited as a job
