"""Tolerant reading of real captured payloads: what the reducer needs is read, odd shapes are
reported as paths, nothing of this kind is refused (the shell's side is in tests/integration)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handlers.events import InvoiceObserved, SubscriptionObserved
from handlers.normalize import PayloadError, read_event
from handlers.reducer import APPLIED, apply_event
from handlers.state import WorkspaceState
from tests.support.core import CATALOG, NOW
from tests.support.paths import STRIPE_CAPTURED


def captured(name: str) -> dict[str, Any]:
    return json.loads((STRIPE_CAPTURED / name).read_text())


def event_of(obj: dict[str, Any], event_type: str, created: int = 1_600_000_000) -> dict[str, Any]:
    return {
        "id": "evt_captured",
        "object": "event",
        "type": event_type,
        "created": created,
        "data": {"object": obj},
    }


def test_a_2020_invoice_whose_lines_is_an_empty_object_is_read_and_paid() -> None:
    invoice = captured("djstripe/invoice_in_fakefakefakefakefake0001.json")
    assert invoice["lines"] == {}  # the shape under test: a list object with no `data`
    reading = read_event(event_of(invoice, "invoice.payment_succeeded"))
    assert [u.path for u in reading.unexpected] == ["data.object.lines.data"]
    assert isinstance(reading.event, InvoiceObserved)
    inv = reading.event.invoice
    assert (inv.invoice_id, inv.status, inv.amount_paid, inv.lines) == (
        "in_fakefakefakefakefake0001",
        "paid",
        2000,
        (),
    )
    outcome = apply_event(WorkspaceState.new("ws_cap"), reading.event, NOW, CATALOG)
    assert outcome.result == APPLIED and outcome.invoice is not None and outcome.invoice.status == "paid"


@pytest.mark.parametrize(
    ("name", "event_type"),
    [
        ("djstripe/invoice_in_fakefakefakefakefake0004.json", "invoice.paid"),
        ("djstripe/subscription_sub_fakefakefakefakefake0001.json", "customer.subscription.updated"),
        ("djstripe/subscription_sub_fakefakefakefakefake0004.json", "customer.subscription.updated"),
        ("stripe_openapi/invoice.json", "invoice.paid"),
        ("stripe_openapi/subscription.json", "customer.subscription.updated"),
        ("stripe_openapi/checkout.session.json", "checkout.session.completed"),
    ],
)
def test_captured_objects_read_cleanly(name: str, event_type: str) -> None:
    assert read_event(event_of(captured(name), event_type)).unexpected == ()


@pytest.mark.parametrize(
    "name",
    [
        "invoice.payment_failed",
        "invoice.payment_action_required",
        "subscription.updated",
        "checkout.session.completed",
    ],
)
def test_captured_event_data_reads_cleanly(name: str) -> None:
    data = captured(f"pay/{name}.json")  # pay records an event's `data`
    event_type = f"customer.{name}" if name.startswith("subscription.") else name
    raw = {"id": "evt_pay", "object": "event", "type": event_type, "created": 1_600_000_000, "data": data}
    assert read_event(raw).unexpected == ()


def test_a_null_where_an_object_is_usual_is_read_around() -> None:
    invoice = captured("stripe_openapi/invoice.json")
    invoice["lines"]["data"].insert(0, None)
    invoice["parent"] = 0  # neither an object, an id nor null
    reading = read_event(event_of(invoice, "invoice.paid"))
    assert sorted(u.path for u in reading.unexpected) == ["data.object.lines.data[0]", "data.object.parent"]
    assert isinstance(reading.event, InvoiceObserved)


def test_an_unknown_subscription_status_is_kept_and_shown() -> None:
    sub = captured("djstripe/subscription_sub_fakefakefakefakefake0001.json")
    sub["status"] = "on_hold"  # a value a newer API version could add
    reading = read_event(event_of(sub, "customer.subscription.updated"))
    assert [u.path for u in reading.unexpected] == ["data.object.status"]
    assert isinstance(reading.event, SubscriptionObserved)
    outcome = apply_event(WorkspaceState.new("ws_cap"), reading.event, NOW, CATALOG)
    assert (outcome.result, outcome.view.status) == (APPLIED, "on_hold")
    assert outcome.view.subscription_id == "sub_fakefakefakefakefake0001"


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda o: o.pop("id"), "data.object.id"),
        (lambda o: o.update(customer=None), "data.object.customer"),
        (lambda o: o.update(amount_paid="2000"), "data.object.amount_paid"),
        (lambda o: o.update(amount_due=20.5), "data.object.amount_due"),
    ],
)
def test_only_what_the_reducer_needs_is_refused(mutate: Any, path: str) -> None:
    invoice = captured("djstripe/invoice_in_fakefakefakefakefake0001.json")
    mutate(invoice)
    with pytest.raises(PayloadError) as info:
        read_event(event_of(invoice, "invoice.payment_succeeded"))
    assert info.value.field == path
