"""The Billing page through the internal API: plan options, invoice previews, add-on changes and
Checkout Sessions, against the local server that plays Stripe (tests/support/stripe_billing.py
checks every parameter the SDK sends). Real Postgres and Redis; the clock is injected."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support import stripe_factory as sf
from tests.support.plan_change_support import ANNUAL_END, GB, START, World, ts, world_for
from worker.config import Settings

ADMIN = {"requested_by_role": "billing_admin", "member_count": 4, "storage_used_bytes": 10 * GB}


@pytest.fixture
async def world(settings: Settings) -> AsyncIterator[World]:
    async with world_for(settings) as w:
        yield w


async def _unchanged(world: World, ws: str, version: int) -> None:
    """Nothing stored: no plan change, same workspace version."""
    pool = world.svc.services.pool
    assert await pool.fetchval("SELECT count(*) FROM plan_changes WHERE workspace_id = $1", ws) == 0
    assert await pool.fetchval("SELECT version FROM workspaces WHERE workspace_id = $1", ws) == version


async def _version(world: World, ws: str) -> int:
    return await world.svc.services.pool.fetchval(
        "SELECT version FROM workspaces WHERE workspace_id = $1", ws
    )


async def _switch(world: World, items: list[tuple[str, int]], **kw: Any) -> None:
    """Stripe and the workspace move to ``items`` (an update webhook), e.g. to add an add-on item."""
    event = world.sub_event("updated", ts(world.clock.now) - 60, items, **kw)
    world.server.put(event["data"]["object"])
    await world.svc.deliver(event)


async def test_plan_options_list_every_plan_and_interval_decided_by_the_policy(world: World):
    query = "requested_by_role=billing_admin&member_count=8&storage_used_bytes=0"
    status, body = await world.svc.api("GET", f"/v1/workspaces/{world.ws}/plan-options?{query}")
    assert status == 200, body
    assert body["current"] == {"plan": "business", "interval": "annual", "seats": 5, "storage_addon_units": 0}
    assert body["contact_sales"] is False
    got = {(o["plan"], o["interval"]): o["decision"]["kind"] for o in body["options"]}
    assert len(body["options"]) == 9  # Free + Plus x3 + Business x3 + Enterprise x2
    assert got[("business", "annual")] == "no_change"
    assert got[("business", "monthly")] == "at_period_end" and got[("plus", "annual")] == "blocked"
    assert got[("free", None)] == "blocked"  # 8 members do not fit Free's 3 seats
    # Over-seat (8 members, 5 seats) and upgrading: allowed, the warning stays (ALLO).
    assert got[("enterprise", "annual")] == "immediate"
    assert world.server.requests == []  # no Stripe call

    bad = [
        ("requested_by_role=billing_admin&storage_used_bytes=0", "missing_member_count"),
        ("requested_by_role=billing_admin&member_count=-1&storage_used_bytes=0", "invalid_member_count"),
        ("requested_by_role=boss&member_count=1&storage_used_bytes=0", "invalid_requested_by_role"),
        (f"{query}&has_payment_method=maybe", "invalid_has_payment_method"),
        (f"{query}&seats=0", "invalid_seats"),
        (f"{query}&colour=red", "unknown_parameter"),
    ]
    for q, code in bad:
        status, body = await world.svc.api("GET", f"/v1/workspaces/{world.ws}/plan-options?{q}")
        assert (status, body["error"]["code"]) == (400, code), q
    status, body = await world.svc.api("GET", f"/v1/workspaces/ws_nope/plan-options?{query}")
    assert (status, body["error"]["code"]) == (404, "workspace_not_found")


async def test_a_preview_then_acting_with_its_proration_date_charges_the_previewed_amount(world: World):
    version = await _version(world, world.ws)
    change = {"plan": "enterprise", "interval": "annual", **ADMIN}
    status, body = await world.request(**change, dry_run=True, preview=True)
    assert status == 200, body
    now = ts(world.clock.now)
    preview = body["invoice_preview"]
    assert body["decision"]["kind"] == "immediate" and preview["proration_date"] == now
    (call,) = world.server.calls("POST", "/v1/invoices/create_preview")
    assert call.params == {
        "customer": world.customer,
        "subscription": world.sub_id,
        "subscription_details": {
            "items": [
                {"id": sf.item_id(world.sub_id, 0), "quantity": "5", "price": "price_enterprise_annual"}
            ],
            "proration_behavior": "create_prorations",
            "proration_date": str(now),
            "billing_cycle_anchor": {"type": "unchanged"},
        },
    }
    fraction = (ANNUAL_END - now) / (ANNUAL_END - START)
    expected = 192_000 - round(96_000 * fraction) + round(192_000 * fraction)
    assert preview["next_invoice"]["amount_due"] == expected and preview["currency"] == "usd"
    assert preview["amount_due_now"] == 0  # the cycle stays: prorations go on the next invoice
    assert [line["proration"] for line in preview["lines"]] == [True, True, False]
    await _unchanged(world, world.ws, version)  # a preview stores nothing

    status, body = await world.request(**change, proration_date=preview["proration_date"])
    assert status == 200 and body["plan_change"]["status"] == "applied", body
    (update,) = world.server.calls("POST", f"/v1/subscriptions/{world.sub_id}")
    assert update.params["proration_date"] == str(now)  # the same date: the amount previewed
    assert update.params["items"] == call.params["subscription_details"]["items"]
    assert "payment_behavior" not in update.params and body["payment_pending"] is None


async def test_a_new_annual_contract_waits_for_its_payment(world: World):
    monthly_end = sf.period_end_for("price_business_monthly", START)
    await _switch(world, [("price_business_monthly", 5)], period_end=monthly_end)
    status, body = await world.request(
        plan="business", interval="annual", dry_run=True, preview=True, **ADMIN
    )
    assert status == 200, body
    preview = body["invoice_preview"]
    assert preview["amount_due_now"] == preview["next_invoice"]["amount_due"] > 0  # invoiced at once

    world.server.payments_fail = True
    status, body = await world.request(plan="business", interval="annual", **ADMIN)
    assert status == 200, body
    (update,) = world.server.applied("POST", f"/v1/subscriptions/{world.sub_id}")
    assert update.params["payment_behavior"] == "pending_if_incomplete"
    assert update.params["billing_cycle_anchor"] == {"type": "now"}
    assert body["payment_pending"]["waiting_for"] == "payment"
    assert body["payment_pending"]["latest_invoice"].startswith("in_pending_")
    sub = world.server.objects[world.sub_id]
    assert sub["items"]["data"][0]["price"]["id"] == "price_business_monthly"  # not applied yet


async def test_storage_add_ons_are_bought_changed_and_removed_through_plan_changes(world: World):
    status, body = await world.request(plan="business", interval="annual", storage_addon_units=2, **ADMIN)
    assert status == 200 and body["decision"]["direction"] == "storage_addon", body
    (buy,) = world.server.calls("POST", f"/v1/subscriptions/{world.sub_id}")
    assert buy.params["items"] == [{"price": "price_storage_100gb", "quantity": "2"}]
    assert "proration_behavior" not in buy.params  # ALLO: "A prorated charge or credit"

    await _switch(world, [("price_business_annual", 5), ("price_storage_100gb", 2)])
    assert (await world.svc.workspace(world.ws))["storage_addon_units"] == 2
    over = {**ADMIN, "storage_used_bytes": 1050 * GB}
    status, body = await world.request(plan="business", interval="annual", storage_addon_units=0, **over)
    assert (status, body["error"]["code"]) == (409, "plan_change_blocked")
    assert body["error"]["decision"]["reasons"] == ["storage"]

    # A plan and an add-on change together: one update, one idempotency key.
    status, body = await world.request(plan="enterprise", interval="annual", storage_addon_units=0, **ADMIN)
    assert status == 200, body
    combined = world.server.calls("POST", f"/v1/subscriptions/{world.sub_id}")[-1]
    assert combined.params["items"] == [
        {"id": sf.item_id(world.sub_id, 0), "quantity": "5", "price": "price_enterprise_annual"},
        {"id": sf.item_id(world.sub_id, 1), "deleted": "true"},
    ]
    assert combined.idempotency_key == f"plan-change:{body['plan_change']['change_id']}"


async def _free_workspace(world: World) -> str:
    ws = f"ws_free_{uuid.uuid4().hex[:8]}"
    status, _ = await world.svc.api(
        "PUT", f"/v1/workspaces/{ws}/usage", json={"members": 2, "storage_used_bytes": 0}
    )
    assert status == 200
    return ws


def _checkout(**kw: Any) -> dict[str, Any]:
    return {
        "kind": "subscription",
        "plan": "plus",
        "interval": "monthly",
        "seats": 3,
        "requested_by_role": "workspace_admin",
        "success_url": "https://app.example/billing?ok=1",
        "cancel_url": "https://app.example/billing",
        **kw,
    }


async def test_free_workspaces_check_out_and_subscribed_ones_are_sent_to_plan_changes(world: World):
    ws = await _free_workspace(world)
    path = f"/v1/workspaces/{ws}/checkout-sessions"
    status, body = await world.svc.api(
        "POST",
        f"/v1/workspaces/{ws}/plan-changes",
        json={"plan": "plus", "interval": "monthly", "seats": 3, **ADMIN},
    )
    assert (status, body["error"]["code"], body["error"]["checkout_path"]) == (409, "checkout_required", path)

    status, body = await world.svc.api("POST", path, json=_checkout(), headers={"Idempotency-Key": "k-1"})
    assert status == 201, body
    assert body["url"].endswith(body["id"]) and body["expires_at"].endswith("Z")
    (call,) = world.server.calls("POST", "/v1/checkout/sessions")
    assert call.idempotency_key == f"checkout:{ws}:k-1"
    assert call.params == {
        "mode": "subscription",
        "line_items": [{"price": "price_plus_monthly", "quantity": "3"}],
        "success_url": "https://app.example/billing?ok=1",
        "cancel_url": "https://app.example/billing",
        "client_reference_id": ws,
        "metadata": {"workspace_id": ws},
        "subscription_data": {"metadata": {"workspace_id": ws}},
    }
    again = await world.svc.api("POST", path, json=_checkout(), headers={"Idempotency-Key": "k-1"})
    assert again == (201, body)  # Stripe replays the same session

    pack = {
        "kind": "credit_pack",
        "price": "price_ai_pack_1000",
        "quantity": 2,
        **{k: _checkout()[k] for k in ("requested_by_role", "success_url", "cancel_url")},
    }
    status, body = await world.svc.api("POST", path, json=pack, headers={"Idempotency-Key": "k-2"})
    assert status == 201, body
    sent = world.server.calls("POST", "/v1/checkout/sessions")[-1].params
    assert sent["mode"] == "payment" and sent["metadata"]["price_id"] == "price_ai_pack_1000"

    status, body = await world.svc.api(
        "POST", path, json=_checkout(requested_by_role="member"), headers={"Idempotency-Key": "k-3"}
    )
    assert (status, body["error"]["code"], body["error"]["reasons"]) == (
        409,
        "checkout_blocked",
        ["not_admin"],
    )
    status, body = await world.svc.api(
        "POST",
        f"/v1/workspaces/{world.ws}/checkout-sessions",
        json=_checkout(),
        headers={"Idempotency-Key": "k-4"},
    )
    assert (status, body["error"]["code"]) == (409, "subscription_exists")
    assert body["error"]["plan_changes_path"] == f"/v1/workspaces/{world.ws}/plan-changes"
    assert len(world.server.calls("POST", "/v1/checkout/sessions")) == 3  # the refusals sent nothing


BAD_CHANGES = [
    ({"plan": "gold", "interval": "annual"}, "unknown_plan"),
    ({"plan": "plus", "interval": "weekly"}, "unknown_interval"),
    ({"plan": "enterprise", "interval": "six_month"}, "interval_not_offered"),
    ({"plan": "business", "interval": "annual", "storage_addon_units": -1}, "invalid_storage_addon_units"),
    ({"plan": "business", "interval": "annual", "storage_addon_units": 10**9}, "invalid_storage_addon_units"),
    ({"plan": "business", "interval": "annual", "storage_addon_units": "2"}, "invalid_storage_addon_units"),
    ({"plan": "free", "interval": None, "storage_addon_units": 1}, "storage_addon_not_applicable"),
    ({"plan": "business", "interval": "annual", "proration_date": -5}, "invalid_proration_date"),
    (
        {"plan": "enterprise", "interval": "annual", "preview": True, "dry_run": False},
        "preview_needs_dry_run",
    ),
]
BAD_CHECKOUTS = [
    (_checkout(plan="gold"), "unknown_plan"),
    (_checkout(interval="weekly"), "unknown_interval"),
    (_checkout(plan="free", interval=None), "plan_not_purchasable"),
    ({**_checkout(kind="credit_pack", price="price_nope"), "plan": None}, "unknown_field"),
    (
        {
            k: v
            for k, v in _checkout(kind="credit_pack", price="price_nope").items()
            if k not in ("plan", "interval", "seats")
        },
        "unknown_price",
    ),
    (_checkout(success_url="ftp://files.example/x"), "invalid_success_url"),
    (_checkout(cancel_url="javascript:alert(1)"), "invalid_cancel_url"),
    (_checkout(success_url="/relative"), "invalid_success_url"),
    (_checkout(kind="gift"), "invalid_kind"),
]


async def test_bad_input_is_a_specific_400_sends_nothing_and_stores_nothing(world: World):
    ws = await _free_workspace(world)
    versions = {w: await _version(world, w) for w in (world.ws, ws)}
    for patch, code in BAD_CHANGES:
        status, body = await world.request(**{**ADMIN, "dry_run": True, **patch})
        assert status == 400 and body["error"]["code"] == code, (patch, body)
    path = f"/v1/workspaces/{ws}/checkout-sessions"
    for checkout, code in BAD_CHECKOUTS:
        status, body = await world.svc.api("POST", path, json=checkout, headers={"Idempotency-Key": "k"})
        assert (status, body["error"]["code"]) == (400, code), checkout
    status, body = await world.svc.api("POST", path, json=_checkout())
    assert (status, body["error"]["code"]) == (400, "missing_idempotency_key")
    status, body = await world.svc.api(
        "POST", path, json=_checkout(), headers={"Idempotency-Key": "no spaces"}
    )
    assert (status, body["error"]["code"]) == (400, "invalid_idempotency_key")
    assert world.server.requests == []
    for w, version in versions.items():
        await _unchanged(world, w, version)


async def test_stripe_errors_of_a_preview_are_502_or_503_with_stripes_message(world: World):
    change = {"plan": "enterprise", "interval": "annual", "dry_run": True, "preview": True, **ADMIN}
    world.server.fail_next(status=400, error_type="invalid_request_error", message="No such price: 'x'")
    status, body = await world.request(**change)
    assert (status, body["error"]["code"]) == (502, "stripe_rejected") and "No such price" in body["error"][
        "message"
    ]
    world.server.fail_next(3, status=500, message="Stripe is down")
    status, body = await world.request(**change)
    assert (status, body["error"]["code"]) == (503, "stripe_unavailable") and "Stripe is down" in body[
        "error"
    ]["message"]


async def test_the_openapi_document_describes_the_billing_page_routes(world: World):
    status, doc = await world.svc.api("GET", "/openapi.json")
    assert status == 200
    paths = doc["paths"]
    assert paths["/v1/workspaces/{workspace_id}/plan-options"]["get"]["operationId"] == "listPlanOptions"
    checkout = paths["/v1/workspaces/{workspace_id}/checkout-sessions"]["post"]
    assert {p["name"] for p in checkout["parameters"]} == {"workspace_id", "Idempotency-Key"}
    assert set(checkout["responses"]) >= {"201", "400", "409", "502", "503"}
    body = paths["/v1/workspaces/{workspace_id}/plan-changes"]["post"]["requestBody"]["content"][
        "application/json"
    ]
    assert body["schema"]["properties"]["storage_addon_units"]["maximum"] == 10_000
