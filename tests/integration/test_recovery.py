"""Recovery sweeps and retry triggers: lost jobs come back, unmatched events end as dead letters
with their reason, and replays of old events are no-ops unless something changed."""

from __future__ import annotations

import dataclasses
import json

from tests.support import stripe_factory as sf
from tests.support.helpers import running_service, wait_for
from tests.support.money_helpers import audit_count
from tests.support.money_helpers import ids as fresh_ids
from tests.support.scenarios import orphan_invoice
from worker.config import Settings
from worker.receiver.app import store_in_inbox


async def test_unmatched_event_is_dead_lettered_with_its_reason_then_retried_after_the_fix(
    fast_settings: Settings,
):
    ids = fresh_ids("unm")
    orphan, events = orphan_invoice(ids)
    async with running_service(fast_settings) as svc:
        assert (await svc.post_event(orphan))[0] == 200
        await wait_for(lambda: svc.event_status(orphan["id"]), lambda s: s == "dead", timeout=20, what="dead")
        status, body = await svc.api("GET", f"/v1/events/{orphan['id']}")
        assert (body["outcome"], body["attempts"]) == ("unmatched", 3)  # first try + the 2 backoff steps
        assert body["last_error"].startswith("unmatched after 3 tries: no workspace")
        status, listed = await svc.api("GET", "/v1/dead-letters", params={"type": "invoice.payment_failed"})
        assert status == 200
        assert orphan["id"] in [d["event_id"] for d in listed["dead_letters"]]

        # The fix: the subscription naming the workspace arrives. A dead letter stays parked …
        await svc.deliver(events[0])
        assert await svc.event_status(orphan["id"]) == "dead"
        # … until an operator retries the type; then it applies, once.
        status, body = await svc.api(
            "POST", "/v1/dead-letters/retry", json={"type": "invoice.payment_failed"}
        )
        assert status == 202 and orphan["id"] in body["event_ids"]
        await wait_for(lambda: svc.event_status(orphan["id"]), lambda s: s == "processed", what="processed")
        _, body = await svc.api("GET", f"/v1/events/{orphan['id']}")
        assert body["outcome"] == "applied"
        state = await svc.workspace(ids["workspace_id"])
        assert state["blocked"] is True


async def test_replay_of_an_event_processed_long_ago_is_a_no_op(fast_settings: Settings):
    ids = fresh_ids("old")
    event = sf.history_lifecycle(**ids)[0]
    async with running_service(fast_settings) as svc:
        await svc.deliver(event)
        await svc.services.pool.execute(
            "UPDATE webhook_events SET received_at = now() - interval '40 days', "
            "processed_at = now() - interval '40 days' WHERE event_id = $1",
            event["id"],
        )
        before = await svc.workspace(ids["workspace_id"])
        audits = await audit_count(svc, ids["workspace_id"])

        status, body = await svc.api("POST", f"/v1/events/{event['id']}/retry")
        assert (status, body["previous_status"], body["enqueued"]) == (202, "processed", True)
        await wait_for(lambda: svc.event_status(event["id"]), lambda s: s == "processed", what="replayed")
        _, row = await svc.api("GET", f"/v1/events/{event['id']}")
        assert row["outcome"] == "stale"
        after = await svc.workspace(ids["workspace_id"])
        assert after == before  # same version, same state
        assert await audit_count(svc, ids["workspace_id"]) == audits

        status, body = await svc.api("POST", "/v1/events/evt_doesnotexist/retry")
        assert (status, body["error"]["code"]) == (404, "event_not_found")


async def test_sweep_enqueues_events_redis_never_got(fast_settings: Settings):
    """An event stored but never queued (Redis lost it) is processed once it is old enough."""
    ids = fresh_ids("swp")
    event = sf.history_lifecycle(**ids)[0]
    async with running_service(fast_settings) as svc:
        is_new, _ = await store_in_inbox(svc.services, event, json.dumps(event))
        assert is_new
        await svc.wait_processed([event["id"]], timeout=20)
        assert (await svc.workspace(ids["workspace_id"]))["status"] == "trialing"


async def test_a_handler_failing_max_tries_is_dead_lettered_with_error_and_traceback(fast_settings: Settings):
    """A workspace row held locked by someone else: every try times out, then the event is parked
    with the last error; once the lock is gone an operator retry applies it."""
    ids = fresh_ids("mxt")
    first, second = sf.history_lifecycle(**ids)[:2]
    settings = dataclasses.replace(fast_settings, max_tries=2, lock_timeout_ms=100)
    async with running_service(settings) as svc:
        await svc.deliver(first)
        async with svc.services.pool.acquire() as holder, holder.transaction():
            await holder.execute(
                "SELECT 1 FROM workspaces WHERE workspace_id = $1 FOR UPDATE", ids["workspace_id"]
            )
            assert (await svc.post_event(second))[0] == 200
            await wait_for(
                lambda: svc.event_status(second["id"]), lambda s: s == "dead", timeout=20, what="dead"
            )
        _, row = await svc.api("GET", f"/v1/events/{second['id']}")
        assert row["attempts"] == 2
        assert row["last_error"].startswith("transient: Traceback")
        assert "LockNotAvailableError" in row["last_error"]
        status, _ = await svc.api("POST", f"/v1/events/{second['id']}/retry")
        assert status == 202
        await wait_for(lambda: svc.event_status(second["id"]), lambda s: s == "processed", what="processed")
