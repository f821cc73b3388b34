"""End to end over HTTP: signed webhooks → receiver → Redis → worker → Postgres → internal API.

Real PostgreSQL and Redis; the worker runs in-process on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import timedelta
from typing import Any

from tests.support import stripe_factory as sf
from tests.support.helpers import RunningService, history_ids, wait_for
from tests.support.service_fixtures import service_fixture

# The clock sits just after the factory's histories so dunning ages are deterministic.
service = service_fixture(at=sf.at(sf.T0) + timedelta(days=45))


async def test_subscription_lifecycle_over_http(service: RunningService):
    ids = history_ids("life")
    created, trial_will_end, active, plan_change, cancel_requested, deleted = sf.history_lifecycle(**ids)
    ws = ids["workspace_id"]

    assert await service.workspace(ws) is None  # unknown until its first event

    await service.deliver(created)
    state = await service.workspace(ws)
    assert (state["plan"], state["interval"], state["seats"], state["status"]) == (
        "plus",
        "monthly",
        3,
        "trialing",
    )
    assert state["trial_end"] is not None and state["blocked"] is False

    await service.deliver(trial_will_end)
    await service.deliver(active)
    state = await service.workspace(ws)
    assert state["status"] == "active"
    assert state["period_start"] == state["trial_end"]  # the first paid period starts at trial end

    await service.deliver(plan_change)
    state = await service.workspace(ws)
    assert (state["plan"], state["seats"], state["status"]) == ("business", 5, "active")

    await service.deliver(cancel_requested)
    assert (await service.workspace(ws))["cancel_at_period_end"] is True

    await service.deliver(deleted)
    state = await service.workspace(ws)
    assert (state["plan"], state["status"], state["cancel_at_period_end"]) == ("free", "canceled", False)
    # One audit entry per state-changing event, versions without gaps.
    versions = await service.services.pool.fetch(
        "SELECT version FROM audit_log WHERE workspace_id = $1 ORDER BY version", ws
    )
    assert [r["version"] for r in versions] == list(range(1, state["version"] + 1))


async def test_payment_failure_blocks_then_payment_lifts_it(service: RunningService):
    ids = history_ids("dun")
    events = sf.history_payment_failure(**ids, invoice_id=f"in_{ids['sub_id']}", failures=2)
    ws = ids["workspace_id"]
    by_label = {e["id"].split("_", 3)[-1]: e for e in events}

    for label in ("sub_created", "invoice_created", "invoice_finalized"):
        await service.deliver(by_label[label])
    state = await service.workspace(ws)
    assert state["blocked"] is False
    assert [i["status"] for i in state["open_invoices"]] == ["open"]  # open but not failed: no block

    await service.deliver(by_label["payment_failed_1"])
    state = await service.workspace(ws)
    assert state["blocked"] is True
    assert state["block_reasons"] == ["open_invoice"]
    assert state["block"]["invoice_ids"] == [f"in_{ids['sub_id']}"]
    assert "plan_changes" in state["block"]["blocks"]

    for label in (
        "sub_past_due",
        "payment_failed_2",
        "invoice_paid",
        "invoice_payment_succeeded",
        "sub_active",
    ):
        await service.deliver(by_label[label])
    state = await service.workspace(ws)
    assert state["blocked"] is False and state["block"] is None
    assert state["open_invoices"] == []
    assert state["status"] == "active"


async def test_unknown_event_type_is_stored_and_ignored(service: RunningService):
    event = sf.envelope(
        "customer.tax_id.created",
        data_object={"id": "txi_1", "object": "tax_id", "customer": "cus_x"},
        api_version=sf.ENDIVE,
        created=sf.T0,
        event_id=f"evt_unknown{uuid.uuid4().hex[:12]}",
    )
    await service.deliver(event)
    status, body = await service.api("GET", f"/v1/events/{event['id']}")
    assert status == 200
    assert (body["status"], body["workspace_id"], body["attempts"]) == ("ignored", None, 1)


async def test_event_of_an_unknown_customer_waits_unmatched_then_applies(service: RunningService):
    ids = history_ids("race")
    invoice_id = f"in_{ids['sub_id']}"
    events = sf.history_payment_failure(**ids, invoice_id=invoice_id, outcome=None)
    # The invoice webhook can race the app's own write: strip the metadata that names the workspace.
    failed = next(e for e in events if e["type"] == "invoice.payment_failed")
    orphan = json.loads(json.dumps(failed))
    obj = orphan["data"]["object"]
    obj["parent"]["subscription_details"]["metadata"] = {}
    assert (await service.post_event(orphan))[0] == 200
    await wait_for(lambda: service.event_status(orphan["id"]), lambda s: s == "unmatched", what="unmatched")
    _, body = await service.api("GET", f"/v1/events/{orphan['id']}")
    assert (body["status"], body["customer_id"]) == ("unmatched", ids["customer"])
    assert "no workspace" in body["last_error"]

    # The subscription (which names the workspace) arrives; the waiting invoice event follows.
    await service.deliver(events[0])
    await service.wait_processed([orphan["id"]], timeout=30)
    state = await service.workspace(ids["workspace_id"])
    assert state["blocked"] is True
    assert state["block"]["invoice_ids"] == [invoice_id]


def _comparable(state: dict[str, Any], ids: dict[str, str], invoice_id: str) -> str:
    text = json.dumps({k: v for k, v in state.items() if k not in ("version", "updated_at")}, sort_keys=True)
    for key, value in (*ids.items(), ("invoice", invoice_id)):
        text = text.replace(value, f"<{key}>")
    return text


def _history(ids: dict[str, str], invoice_id: str) -> list[dict[str, Any]]:
    lifecycle = sf.history_lifecycle(**ids)
    # A failed invoice on the same subscription, paid later, interleaved with the lifecycle.
    payment = sf.history_payment_failure(
        **{**ids, "id_prefix": ids["id_prefix"] + "p"},
        invoice_id=invoice_id,
        include_subscription=False,
        failures=2,
        start=sf.T0 + 14 * sf.DAY,
    )
    return sorted(lifecycle + payment, key=lambda e: e["created"])


async def test_shuffled_duplicated_delivery_gives_the_in_order_state(service: RunningService):
    ordered_ids, shuffled_ids = history_ids("ord"), history_ids("shf")
    ordered = _history(ordered_ids, "in_ord" + ordered_ids["sub_id"][-10:])
    shuffled = _history(shuffled_ids, "in_shf" + shuffled_ids["sub_id"][-10:])

    for event in ordered:
        await service.deliver(event)

    rng = random.Random(20261122)
    delivery = shuffled + rng.sample(shuffled, k=len(shuffled) // 2)  # half of them twice
    rng.shuffle(delivery)
    answers = await asyncio.gather(*(service.post_event(e) for e in delivery))
    assert all(status == 200 for status, _ in answers)
    await service.wait_processed([e["id"] for e in shuffled])

    in_order = await service.workspace(ordered_ids["workspace_id"])
    out_of_order = await service.workspace(shuffled_ids["workspace_id"])
    assert _comparable(out_of_order, shuffled_ids, "in_shf" + shuffled_ids["sub_id"][-10:]) == _comparable(
        in_order, ordered_ids, "in_ord" + ordered_ids["sub_id"][-10:]
    )
    # Every event was applied at most once: one processed mark each, no duplicate audit entry.
    marks = await service.services.pool.fetch(
        "SELECT attempts FROM webhook_events WHERE event_id = ANY($1::text[])", [e["id"] for e in shuffled]
    )
    assert len(marks) == len(shuffled) and all(r["attempts"] == 1 for r in marks)


async def test_internal_api_requires_the_bearer_token(service: RunningService):
    for token in (None, "wrong-token"):
        status, body = await service.api("GET", "/v1/workspaces/ws_any", token=token)
        assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_internal_api_answers_404_and_400_with_codes(service: RunningService):
    status, body = await service.api("GET", "/v1/workspaces/ws_never_seen")
    assert (status, body["error"]["code"]) == (404, "workspace_not_found")
    status, body = await service.api("GET", "/v1/events/evt_never_seen")
    assert (status, body["error"]["code"]) == (404, "event_not_found")
    status, body = await service.api("GET", "/v1/events/not-an-event-id")
    assert (status, body["error"]["code"]) == (400, "invalid_event_id")
