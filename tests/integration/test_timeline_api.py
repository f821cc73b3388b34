"""The support desk's view through the internal API, after a real sequence of signed webhooks and
plan-change requests: a workspace's timeline (order, every kind, cursor paging without gaps or
repeats while new rows arrive), the plan-change history, the event browser and its filters, an
event's transitions, finding a workspace, and every bad input answered with its own code. And the
plan of a timeline page: index scans only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest

from handlers.timeline import NUMERIC_KINDS, decode_cursor
from tests.support import stripe_factory as sf
from tests.support.credit_events import pack_checkout
from tests.support.plan_change_support import GB, START, World, ts, world_for
from worker.config import Settings
from worker.storage.timeline import timeline_sql


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[World]:
    async with world_for(settings) as w:
        yield w


async def _all_pages(world: World, path: str, limit: int, cursor: str | None = None) -> list[dict[str, Any]]:
    """Every item from ``cursor`` on (from the newest without one), following next_cursor."""
    items: list[dict[str, Any]] = []
    for _ in range(100):  # pages: a cursor that never ends the listing fails instead of looping
        sep = "&" if "?" in path else "?"
        query = f"{sep}limit={limit}" + (f"&cursor={quote(cursor)}" if cursor else "")
        status, body = await world.svc.api("GET", path + query)
        assert status == 200, body
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError(f"{path}: still a next_cursor after 100 pages; cursors: {cursor}")


async def _history(world: World) -> dict[str, Any]:
    """Events, two plan changes (one superseded, one canceled), a credit grant and a spend."""
    updated = world.sub_event("updated", START + 60, [("price_business_annual", 6)])
    world.server.put(updated["data"]["object"])
    await world.svc.deliver(updated)
    status, first = await world.request(plan="plus", interval="monthly")
    assert status == 201, first
    world.clock.now += timedelta(seconds=5)
    status, second = await world.request(plan="plus", interval="annual")
    assert status == 201, second
    world.clock.now += timedelta(seconds=5)
    status, canceled = await world.svc.api("DELETE", f"/v1/workspaces/{world.ws}/plan-changes")
    assert status == 200 and canceled["plan_change"]["status"] == "canceled"
    world.clock.now += timedelta(seconds=5)
    pack = pack_checkout(
        workspace_id=world.ws,
        customer=world.customer,
        session_id=f"cs_{world.ws}",
        created=ts(world.clock.now),
    )
    await world.svc.deliver(pack, clock=world.clock)
    world.clock.now += timedelta(seconds=5)
    status, spent = await world.svc.api(
        "POST",
        f"/v1/workspaces/{world.ws}/ai-credits/consume",
        json={"amount": 30, "idempotency_key": "k1", "reason": "summaries"},
    )
    assert status == 201, spent
    # A replay of an event the state already reflects: processed again, stale.
    status, _ = await world.svc.api("POST", f"/v1/events/{updated['id']}/retry")
    assert status == 202
    await world.svc.wait_processed([updated["id"]])
    return {
        "updated": updated,
        "pack": pack,
        "first": first["plan_change"]["change_id"],
        "second": second["plan_change"]["change_id"],
    }


async def test_timeline_shows_every_kind_newest_first_and_pages_without_gaps(world: World):
    h = await _history(world)
    items = await _all_pages(world, f"/v1/workspaces/{world.ws}/timeline", limit=200)
    ats = [i["at"] for i in items]
    assert ats == sorted(ats, reverse=True)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_kind.setdefault(item["kind"], []).append(item)
        assert item["summary"]

    events = {i["event_id"]: i for i in by_kind["event"]}
    created_id = next(e for e, i in events.items() if i["type"] == "customer.subscription.created")
    assert events[h["updated"]["id"]]["status"] == "stale"  # replayed: changed nothing the 2nd time
    assert events[created_id]["status"] == "processed"
    assert events[h["pack"]["id"]]["type"] == "checkout.session.completed"
    assert events[created_id]["api_version"] == sf.ENDIVE

    transitions = by_kind["transition"]
    assert [t["version"] for t in transitions] == sorted((t["version"] for t in transitions), reverse=True)
    by_event = next(t for t in transitions if t["cause"]["id"] == h["updated"]["id"])
    assert by_event["cause"] == {
        "kind": "event",
        "id": h["updated"]["id"],
        "event_type": "customer.subscription.updated",
        "api_version": sf.ENDIVE,
    }
    assert by_event["changes"]["seats"] == [5, 6]
    assert any(t["cause"]["kind"] == "request" for t in transitions)

    changes = {c["change_id"]: c for c in by_kind["plan_change"]}
    first, second = changes[h["first"]], changes[h["second"]]
    assert [s["status"] for s in first["history"]] == ["requested", "pending", "superseded"]
    assert [s["status"] for s in second["history"]] == ["requested", "pending", "canceled"]
    assert second["idempotency_key"] == f"plan-change:{h['second']}"
    assert (second["from_plan"], second["to_plan"], second["to_interval"]) == ("business", "plus", "annual")

    credits = by_kind["credit"]
    assert [c["delta"] for c in credits] == [-30, 1000]
    assert credits[0]["balance_after"] == 970 and credits[0]["reason"] == "summaries"

    # Small pages give the same items, each once, in the same order.
    assert await _all_pages(world, f"/v1/workspaces/{world.ws}/timeline", limit=3) == items


async def test_paging_is_stable_while_new_rows_arrive(world: World):
    await _history(world)
    path = f"/v1/workspaces/{world.ws}/timeline"
    before = await _all_pages(world, path, limit=200)
    status, page = await world.svc.api("GET", f"{path}?limit=4")
    assert status == 200 and page["items"] == before[:4]
    # Meanwhile: a usage report, a spend and a Stripe event, all newer than the first page.
    world.clock.now += timedelta(minutes=1)
    status, _ = await world.svc.api(
        "PUT", f"/v1/workspaces/{world.ws}/usage", json={"members": 3, "storage_used_bytes": GB}
    )
    assert status == 200
    status, _ = await world.svc.api(
        "POST", f"/v1/workspaces/{world.ws}/ai-credits/consume", json={"amount": 1, "idempotency_key": "k2"}
    )
    assert status == 201
    later = world.sub_event("updated", ts(world.clock.now), [("price_business_annual", 7)])
    await world.svc.deliver(later)
    rest = await _all_pages(world, path, limit=3, cursor=page["next_cursor"])
    assert page["items"] + rest == before  # nothing skipped, nothing twice
    now = await _all_pages(world, path, limit=200)
    assert now[len(now) - len(before) :] == before and len(now) >= len(before) + 5


async def test_plan_change_history_and_the_pending_change_as_before(world: World):
    h = await _history(world)
    status, body = await world.svc.api("GET", f"/v1/workspaces/{world.ws}/plan-changes?status=all")
    assert status == 200
    assert [c["change_id"] for c in body["plan_changes"]] == [h["second"], h["first"]]
    assert [c["status"] for c in body["plan_changes"]] == ["canceled", "superseded"]
    assert body["plan_changes"][1]["superseded_by"] == h["second"]
    # Without `status` the answer is what it was: the active change only.
    status, body = await world.svc.api("GET", f"/v1/workspaces/{world.ws}/plan-changes")
    assert (status, body["error"]["code"]) == (404, "no_pending_plan_change")
    status, body = await world.svc.api("GET", "/v1/workspaces/ws_nobody_here/plan-changes?status=all")
    assert (status, body["error"]["code"]) == (404, "workspace_not_found")


async def test_event_browser_filters_pages_and_shows_what_an_event_caused(world: World):
    h = await _history(world)
    ws = world.ws
    everything = await _all_pages(world, f"/v1/events?workspace_id={ws}", limit=200)
    assert {e["workspace_id"] for e in everything} == {ws} and len(everything) == 3
    assert len({e["event_id"] for e in everything}) == len(everything)
    assert await _all_pages(world, f"/v1/events?workspace_id={ws}", limit=1) == everything

    updates = await _all_pages(world, f"/v1/events?workspace_id={ws}&type=customer.subscription.updated", 10)
    assert [e["event_id"] for e in updates] == [h["updated"]["id"]]
    stale = await _all_pages(world, f"/v1/events?workspace_id={ws}&status=stale", 10)
    assert [e["event_id"] for e in stale] == [h["updated"]["id"]]
    processed = await _all_pages(world, f"/v1/events?workspace_id={ws}&status=processed", 10)
    assert h["updated"]["id"] not in {e["event_id"] for e in processed} and len(processed) == 2
    start = sf.at(START + 30).isoformat().replace("+00:00", "Z")
    since = await _all_pages(world, f"/v1/events?workspace_id={ws}&since={quote(start)}", 10)
    assert h["updated"]["id"] in {e["event_id"] for e in since} and len(since) == 2
    until = await _all_pages(world, f"/v1/events?workspace_id={ws}&until={quote(start)}", 10)
    assert [e["type"] for e in until] == ["customer.subscription.created"]
    everyone = await _all_pages(world, "/v1/events?type=checkout.session.completed", 200)
    assert h["pack"]["id"] in {e["event_id"] for e in everyone}

    status, event = await world.svc.api("GET", f"/v1/events/{h['updated']['id']}")
    assert status == 200 and event["workspace_id"] == ws and event["desk_status"] == "stale"
    (transition,) = event["transitions"]
    assert transition["changes"]["seats"] == [5, 6] and transition["workspace_id"] == ws


async def test_lookup_by_workspace_customer_or_subscription(world: World):
    for q, matched in ((world.ws, "workspace"), (world.customer, "customer"), (world.sub_id, "subscription")):
        status, body = await world.svc.api("GET", f"/v1/lookup?q={q}")
        assert (status, body) == (200, {"workspace_id": world.ws, "matched": matched})
    status, body = await world.svc.api("GET", "/v1/lookup?q=cus_nobody")
    assert (status, body["error"]["code"]) == (404, "workspace_not_found")
    for q in ("", "%20x", "a" * 200):
        status, body = await world.svc.api("GET", f"/v1/lookup?q={q}")
        assert (status, body["error"]["code"]) == (400, "invalid_query"), q


async def test_bad_input_gets_a_specific_code_and_reads_nothing(world: World):
    timeline = f"/v1/workspaces/{world.ws}/timeline"
    cases = [
        ("/v1/workspaces/ws_nobody_here/timeline", 404, "workspace_not_found"),
        (f"{timeline}?cursor=bm90IGEgY3Vyc29y", 400, "invalid_cursor"),
        (f"{timeline}?cursor=1.x.1", 400, "invalid_cursor"),
        (f"{timeline}?limit=0", 400, "invalid_limit"),
        (f"{timeline}?limit=201", 400, "invalid_limit"),
        (f"{timeline}?limit=ten", 400, "invalid_limit"),
        ("/v1/events?status=exploded", 400, "invalid_status"),
        ("/v1/events?type=Not-A-Type", 400, "invalid_event_type"),
        ("/v1/events?workspace_id=%20bad", 400, "invalid_workspace_id"),
        ("/v1/events?since=yesterday", 400, "invalid_since"),
        ("/v1/events?until=2025-02-30T00:00:00Z", 400, "invalid_until"),
        ("/v1/events?limit=500", 400, "invalid_limit"),
        ("/v1/events?cursor=1.t.1", 400, "invalid_cursor"),  # a timeline cursor is not an event's
        (f"/v1/workspaces/{world.ws}/plan-changes?status=active", 400, "invalid_status"),
    ]
    for path, status, code in cases:
        got, body = await world.svc.api("GET", path)
        assert (got, body["error"]["code"]) == (status, code), path
        assert body["error"]["message"]


async def test_a_timeline_page_is_one_statement_of_index_scans(world: World):
    """With sequential scans priced out, a plan that still had one would have no index to use."""
    pool = world.svc.services.pool
    status, page = await world.svc.api("GET", f"/v1/workspaces/{world.ws}/timeline?limit=1")
    assert status == 200 and page["next_cursor"]
    cursor = decode_cursor(page["next_cursor"])
    assert cursor is not None
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        key = int(cursor.key) if cursor.kind in NUMERIC_KINDS else cursor.key
        for c, args in ((None, []), (cursor, [cursor.at, key])):
            rows = await conn.fetch(f"EXPLAIN {timeline_sql(c)}", world.ws, 50, *args)
            plan = "\n".join(r[0] for r in rows)
            assert "Seq Scan" not in plan, plan
            for index in (
                "audit_log_timeline",
                "webhook_events_workspace_created",
                "plan_changes_workspace_created",
                "ai_credit_ledger_timeline",
            ):
                assert index in plan, plan
