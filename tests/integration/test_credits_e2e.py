"""AI credits end to end on real Postgres and Redis: grants through webhooks exactly once, the
consume endpoint (idempotency, refusals, concurrency) and the ledger listing."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.support import credit_events as ce
from tests.support import stripe_factory as sf
from tests.support.helpers import RunningService
from tests.support.money_helpers import changes_of, ids
from tests.support.service_fixtures import service_fixture

service = service_fixture(at=sf.at(sf.T0 + 2 * sf.DAY))


async def _ledger(svc: RunningService, ws: str, query: str = "") -> dict[str, Any]:
    status, body = await svc.api("GET", f"/v1/workspaces/{ws}/ai-credits/ledger{query}")
    assert status == 200, body
    return body


async def _consume(svc: RunningService, ws: str, amount: Any, key: Any, **extra: Any) -> tuple[int, Any]:
    return await svc.api(
        "POST",
        f"/v1/workspaces/{ws}/ai-credits/consume",
        json={"amount": amount, "idempotency_key": key, **extra},
    )


async def _funded(svc: RunningService, tag: str, packs: int = 1) -> str:
    i = ids(tag)
    ws = i["workspace_id"]
    event = ce.pack_checkout(
        workspace_id=ws, customer=i["customer"], session_id=f"cs_{ws}", packs=((ce.PACK_1000, packs),)
    )
    await svc.deliver(event)
    return ws


async def test_same_pack_delivered_three_ways_grants_once(service: RunningService):
    i = ids("pack")
    ws, cus = i["workspace_id"], i["customer"]
    # Checkout created an invoice for the purchase: both event types describe one purchase.
    checkout = ce.pack_checkout(workspace_id=ws, customer=cus, session_id=f"cs_{ws}", invoice_id=f"in_{ws}")
    invoice = ce.pack_invoice(workspace_id=None, customer=cus, invoice_id=f"in_{ws}")  # maps by customer

    await service.deliver(checkout)
    await service.deliver(checkout)  # Stripe's duplicate delivery (same event id)
    replay = await service.services.processor.process(checkout["id"])  # an operator's replay
    assert replay.outcome == "duplicate"
    await service.deliver(invoice)  # the one-off invoice of the same purchase

    state = await service.workspace(ws)
    assert state["ai_credit_balance"] == 1_000
    ledger = await _ledger(service, ws)
    assert ledger["balance"] == 1_000
    assert [(e["source_key"], e["amount"], e["kind"]) for e in ledger["entries"]] == [
        (f"pack:invoice:in_{ws}:{ce.PACK_1000}", 1_000, "pack")
    ]
    # The invoice is recorded, but its audit entry shows no credit change.
    changes = await service.services.pool.fetchval(
        "SELECT changes FROM audit_log WHERE workspace_id = $1 AND cause_id = $2", ws, invoice["id"]
    )
    assert changes and "ai_credit_balance" not in changes


async def test_cycle_invoice_paid_twice_grants_once_and_proration_never(service: RunningService):
    i = ids("cycle")
    ws = i["workspace_id"]
    paid = ce.cycle_invoice(
        workspace_id=ws, customer=i["customer"], invoice_id=f"in_{ws}", sub_id=i["sub_id"]
    )
    succeeded = ce.cycle_invoice(
        workspace_id=ws,
        customer=i["customer"],
        invoice_id=f"in_{ws}",
        sub_id=i["sub_id"],
        kind="payment_succeeded",
    )
    await service.deliver(paid, succeeded)
    await service.deliver(paid)
    ledger = await _ledger(service, ws)
    assert [(e["source_key"], e["amount"]) for e in ledger["entries"]] == [(f"cycle:in_{ws}", 500)]
    assert (await service.workspace(ws))["ai_credit_balance"] == 500


async def test_consumption_with_a_reused_key_consumes_once(service: RunningService):
    ws = await _funded(service, "reuse")
    first = await _consume(service, ws, 300, "job-42", reason="summarise")
    second = await _consume(service, ws, 300, "job-42", reason="summarise")
    assert first[0] == 201 and second[0] == 200, (first, second)
    assert first[1]["balance"] == second[1]["balance"] == 700
    assert second[1]["replayed"] is True and second[1]["entry"] == first[1]["entry"]

    status, body = await _consume(service, ws, 50, "job-42")
    assert (status, body["error"]["code"]) == (409, "idempotency_key_reused")
    state = await service.workspace(ws)
    assert state["ai_credit_balance"] == 700 and len((await _ledger(service, ws))["entries"]) == 2
    # One notification per committed change: the grant and the single consumption.
    assert [c["version"] for c in await changes_of(service, ws)] == [1, 2]


async def test_consumption_never_goes_below_zero_and_refusals_change_nothing(service: RunningService):
    ws = await _funded(service, "short")
    status, body = await _consume(service, ws, 1_001, "too-much")
    assert status == 409
    assert body["error"]["code"] == "insufficient_credits"
    assert (body["error"]["balance"], body["error"]["requested"]) == (1_000, 1_001)
    state = await service.workspace(ws)
    assert (state["ai_credit_balance"], state["version"]) == (1_000, 1)

    for payload, code in [
        ({"amount": 0, "idempotency_key": "k"}, "invalid_field"),
        ({"amount": "5", "idempotency_key": "k"}, "invalid_field"),
        ({"amount": 5}, "invalid_idempotency_key"),
        ({"amount": 5, "idempotency_key": "has space"}, "invalid_idempotency_key"),
        ({"amount": 5, "idempotency_key": "k", "reason": 7}, "invalid_field"),
        ({"amount": 5, "idempotency_key": "k", "user": "x"}, "unknown_field"),
    ]:
        got, answer = await service.api("POST", f"/v1/workspaces/{ws}/ai-credits/consume", json=payload)
        assert (got, answer["error"]["code"]) == (400, code), payload
    got, answer = await _consume(service, "ws_never_seen", 1, "k")
    assert (got, answer["error"]["code"]) == (404, "workspace_not_found")
    assert (await service.workspace(ws))["version"] == 1
    assert len((await _ledger(service, ws))["entries"]) == 1


async def test_concurrent_consumption_is_serialised_and_the_ledger_is_the_balance(service: RunningService):
    ws = await _funded(service, "race", packs=2)  # 2,000 credits
    results = await asyncio.gather(*(_consume(service, ws, 300, f"c{n}") for n in range(10)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [201] * 6 + [409] * 4
    pool = service.services.pool
    row = await pool.fetchrow(
        "SELECT w.ai_credit_balance, (SELECT sum(amount) FROM ai_credit_ledger l "
        "WHERE l.workspace_id = w.workspace_id) AS total, (w.view->>'ai_credit_balance')::bigint AS shown "
        "FROM workspaces w WHERE workspace_id = $1",
        ws,
    )
    assert row["ai_credit_balance"] == row["total"] == row["shown"] == 200
    # Every entry's balance_after is the running sum, in insertion order.
    entries = await pool.fetch(
        "SELECT amount, balance_after FROM ai_credit_ledger WHERE workspace_id = $1 ORDER BY id", ws
    )
    running = 0
    for e in entries:
        running += e["amount"]
        assert e["balance_after"] == running >= 0
    # The same key sent concurrently still consumes once: the others answer the replay.
    same = await asyncio.gather(*(_consume(service, ws, 100, "same") for _ in range(5)))
    assert sorted(s for s, _ in same) == [200] * 4 + [201]
    assert {b["balance"] for _, b in same} == {100}
    assert (await service.workspace(ws))["ai_credit_balance"] == 100
    # Append-only at the database level.
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await pool.execute("UPDATE ai_credit_ledger SET amount = 1 WHERE workspace_id = $1", ws)


async def test_ledger_is_paginated_newest_first(service: RunningService):
    ws = await _funded(service, "pages")
    for n in range(4):
        assert (await _consume(service, ws, 10, f"p{n}"))[0] == 201
    page1 = await _ledger(service, ws, "?limit=3")
    page2 = await _ledger(service, ws, f"?limit=3&before={page1['next_before']}")
    keys = [e["source_key"] for e in page1["entries"] + page2["entries"]]
    assert keys[:3] == [f"consume:{ws}:p{n}" for n in (3, 2, 1)]
    assert keys[3:] == [f"consume:{ws}:p0", f"pack:checkout:cs_{ws}:{ce.PACK_1000}"]
    assert page2["next_before"] is None and page1["balance"] == 960
    bad, answer = await service.api("GET", f"/v1/workspaces/{ws}/ai-credits/ledger?limit=0")
    assert (bad, answer["error"]["code"]) == (400, "invalid_query")
