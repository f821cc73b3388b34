"""Every event Stripe sends today, through the real pipeline (signed HTTP → inbox → Redis → worker
→ Postgres → internal API): real captured payloads in odd shapes are processed, not dead-lettered;
delayed-payment packs grant once; a pending update is shown and cleared."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from tests.support import credit_events as ce
from tests.support import stripe_factory as sf
from tests.support.helpers import RunningService
from tests.support.paths import STRIPE_CAPTURED
from tests.support.service_fixtures import service_fixture
from worker.infra import metrics

service = service_fixture(at=sf.at(sf.T0) + timedelta(hours=3))


def captured(name: str) -> dict[str, Any]:
    return json.loads((STRIPE_CAPTURED / name).read_text())


def event_of(obj: dict[str, Any], event_type: str) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2020-08-27",
        "type": event_type,
        "created": sf.T0,
        "data": {"object": obj},
    }


def unexpected_count(event_type: str, path: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "billing_stripe_shape_unexpected_total", {"type": event_type, "path": path}
    )
    return value or 0.0


async def inbox_row(svc: RunningService, event_id: str) -> Any:
    return await svc.services.pool.fetchrow(
        "SELECT status, outcome, last_error FROM webhook_events WHERE event_id = $1", event_id
    )


async def test_a_captured_2020_invoice_with_empty_lines_is_processed_and_paid(service: RunningService):
    u = uuid.uuid4().hex[:10]
    invoice = captured("djstripe/invoice_in_fakefakefakefakefake0001.json")
    assert invoice["lines"] == {}
    invoice.update(
        id=f"in_cap{u}",
        customer=f"cus_cap{u}",
        subscription_details={"metadata": {"workspace_id": f"ws_cap{u}"}},
    )
    event = event_of(invoice, "invoice.payment_succeeded")
    before = unexpected_count("invoice.payment_succeeded", "data.object.lines.data")

    await service.deliver(event)

    assert (await inbox_row(service, event["id"]))["status"] == "processed"
    status = await service.services.pool.fetchval(
        "SELECT status FROM invoices WHERE invoice_id = $1", f"in_cap{u}"
    )
    assert status == "paid"
    assert unexpected_count("invoice.payment_succeeded", "data.object.lines.data") == before + 1


async def test_a_null_where_an_object_is_usual_is_processed(service: RunningService):
    u = uuid.uuid4().hex[:10]
    invoice = captured("stripe_openapi/invoice.json")
    invoice.update(id=f"in_null{u}", customer=f"cus_null{u}", status="open")
    invoice["parent"]["subscription_details"]["metadata"] = {"workspace_id": f"ws_null{u}"}
    invoice["lines"]["data"].insert(0, None)  # an element that is usually a line item object
    invoice["customer_address"] = None
    event = event_of(invoice, "invoice.finalized")

    await service.deliver(event)

    assert (await inbox_row(service, event["id"]))["status"] == "processed"
    state = await service.workspace(f"ws_null{u}")
    assert state is not None and [i["invoice_id"] for i in state["open_invoices"]] == [f"in_null{u}"]


async def test_an_unknown_subscription_status_is_stored_and_shown_as_it_came(service: RunningService):
    u = uuid.uuid4().hex[:10]
    ws = f"ws_st{u}"
    sub = captured("djstripe/subscription_sub_fakefakefakefakefake0001.json")
    sub.update(id=f"sub_st{u}", customer=f"cus_st{u}", status="on_hold", metadata={"workspace_id": ws})
    event = event_of(sub, "customer.subscription.updated")

    await service.deliver(event)

    assert (await inbox_row(service, event["id"]))["status"] == "processed"
    state = await service.workspace(ws)
    assert state is not None and (state["status"], state["subscription_id"]) == ("on_hold", f"sub_st{u}")
    stored = await service.services.pool.fetchval(
        "SELECT status FROM subscriptions WHERE subscription_id = $1", f"sub_st{u}"
    )
    assert stored == "on_hold"
    # A plan change needs a live subscription (LIVE_STATUSES): an unknown status is refused as
    # not live, a 4xx, never a 5xx.
    status, body = await service.api(
        "POST",
        f"/v1/workspaces/{ws}/plan-changes",
        json={
            "plan": "business",
            "interval": "monthly",
            "seats": 5,
            "requested_by_role": "billing_admin",
            "member_count": 1,
            "storage_used_bytes": 0,
        },
    )
    assert (status, body["error"]["code"]) == (409, "checkout_required"), body


async def test_a_payload_without_what_the_reducer_needs_is_dead_with_the_path(service: RunningService):
    u = uuid.uuid4().hex[:10]
    invoice = captured("djstripe/invoice_in_fakefakefakefakefake0001.json")
    invoice.update(
        id=f"in_dead{u}", customer=None, subscription_details={"metadata": {"workspace_id": f"ws_dead{u}"}}
    )
    event = event_of(invoice, "invoice.payment_succeeded")

    await service.deliver(event)

    row = await inbox_row(service, event["id"])
    assert (row["status"], row["outcome"]) == ("dead", "malformed")
    assert row["last_error"].startswith("malformed payload at data.object.customer:")


async def test_delayed_payment_packs_grant_once_in_any_order(service: RunningService):
    for order in (
        ("completed", "succeeded", "completed", "succeeded"),
        ("succeeded", "completed", "succeeded"),
    ):
        u = uuid.uuid4().hex[:10]
        ws, cus, session = f"ws_dp{u}", f"cus_dp{u}", f"cs_dp{u}"
        events = {
            "completed": ce.pack_checkout(
                workspace_id=ws, customer=cus, session_id=session, payment_status="unpaid"
            ),
            "succeeded": ce.pack_checkout(
                workspace_id=ws,
                customer=cus,
                session_id=session,
                kind="async_payment_succeeded",
                created=sf.T0 + 60,
            ),
        }
        for name in order:
            await service.deliver(events[name])
        state = await service.workspace(ws)
        assert state is not None and state["ai_credit_balance"] == 1_000
        keys = await service.services.pool.fetch(
            "SELECT source_key FROM ai_credit_ledger WHERE workspace_id = $1", ws
        )
        assert [r["source_key"] for r in keys] == [f"pack:checkout:{session}:{ce.PACK_1000}"]


async def test_a_failed_delayed_payment_grants_nothing_and_is_audited(service: RunningService):
    u = uuid.uuid4().hex[:10]
    ws, cus, session = f"ws_df{u}", f"cus_df{u}", f"cs_df{u}"
    completed = ce.pack_checkout(workspace_id=ws, customer=cus, session_id=session, payment_status="unpaid")
    failed = ce.pack_checkout(
        workspace_id=ws,
        customer=cus,
        session_id=session,
        payment_status="unpaid",
        kind="async_payment_failed",
        created=sf.T0 + 60,
    )
    await service.deliver(failed, completed, failed)

    state = await service.workspace(ws)
    assert state is not None and state["ai_credit_balance"] == 0
    changes = await service.services.pool.fetchval(
        "SELECT changes FROM audit_log WHERE workspace_id = $1 AND cause_id = $2", ws, failed["id"]
    )
    assert changes[f"checkout.{session}.payment_status"] == ["unpaid", "failed"]
    assert (
        await service.services.pool.fetchval(
            "SELECT count(*) FROM ai_credit_ledger WHERE workspace_id = $1", ws
        )
        == 0
    )


async def test_a_pending_update_is_shown_then_cleared_when_applied(service: RunningService):
    u = uuid.uuid4().hex[:10]
    ws, sub_id = f"ws_pu{u}", f"sub_pu{u}"
    expires = sf.T0 + 3600 + 23 * 3600

    def sub(kind: str, created: int, items: list[tuple[str, int]], **kw: Any) -> dict[str, Any]:
        return sf.subscription_event(
            kind,
            api_version=sf.ENDIVE,
            created=created,
            sub_id=sub_id,
            customer=f"cus_pu{u}",
            workspace_id=ws,
            status="active",
            items=items,
            period_start=sf.T0,
            period_end=sf.add_months(sf.T0, 1),
            **kw,
        )

    waiting = sf.pending_update_object(
        api_version=sf.ENDIVE, sub_id=sub_id, items=[("price_business_annual", 5)], expires_at=expires
    )
    await service.deliver(sub("created", sf.T0, [("price_plus_monthly", 3)]))
    await service.deliver(sub("updated", sf.T0 + 3600, [("price_plus_monthly", 3)], pending_update=waiting))
    state = await service.workspace(ws)
    assert state is not None and (state["plan"], state["seats"]) == ("plus", 3)
    assert state["pending_update"] == {
        "plan": "business",
        "interval": "annual",
        "seats": 5,
        "expires_at": sf.at(expires).isoformat().replace("+00:00", "Z"),
        "trial_end": None,
    }

    await service.deliver(sub("pending_update_applied", sf.T0 + 7200, [("price_business_annual", 5)]))
    state = await service.workspace(ws)
    assert state is not None and (state["plan"], state["interval"], state["seats"]) == (
        "business",
        "annual",
        5,
    )
    assert state["pending_update"] is None
