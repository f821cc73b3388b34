"""handlers.normalize: raw Stripe payloads of every supported API version → typed events."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from handlers.events import (
    BillingEvent,
    CheckoutCompleted,
    IgnoredEvent,
    InvoiceLine,
    InvoiceObserved,
    SubscriptionItem,
    SubscriptionObserved,
)
from handlers.normalize import (
    HANDLED_EVENT_TYPES,
    MALFORMED_EVENT,
    NOT_A_STRIPE_EVENT,
    PayloadError,
    normalize,
    read_event,
    validate_event_envelope,
)
from tests.support import stripe_factory as sf
from tests.support.paths import STRIPE_FIXTURES

FIXTURES = STRIPE_FIXTURES
VERSIONS = sf.API_VERSIONS
FIXTURE_TYPES = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "checkout.session.completed",
)
ALL_FIXTURES = sorted(FIXTURES.glob("*/*.json"))


def load(version: str, event_type: str) -> dict[str, Any]:
    return json.loads((FIXTURES / version / f"{event_type}.json").read_text())


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def without_version(event: BillingEvent) -> BillingEvent:
    return replace(event, meta=replace(event.meta, api_version=None))


# --- fixtures -------------------------------------------------------------------------------


def test_fixture_set_is_complete() -> None:
    for version in VERSIONS:
        names = {p.stem for p in (FIXTURES / version).glob("*.json")}
        assert set(FIXTURE_TYPES) <= names, f"{version} lacks {set(FIXTURE_TYPES) - names}"
    assert (FIXTURES / "README.md").is_file()


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_fixture_normalises(path: Path) -> None:
    raw = json.loads(path.read_text())
    validate_event_envelope(raw)
    event = normalize(raw)
    assert raw["type"] == path.stem and raw["api_version"] == path.parent.name
    assert event.meta.event_id == raw["id"]
    assert event.meta.event_type == raw["type"]
    assert event.meta.api_version == path.parent.name
    assert event.meta.created == datetime.fromtimestamp(raw["created"], tz=UTC)
    assert event.meta.created.tzinfo is not None
    assert not isinstance(event, IgnoredEvent)
    assert raw["type"] in HANDLED_EVENT_TYPES


@pytest.mark.parametrize("event_type", FIXTURE_TYPES)
def test_same_event_in_every_shape_normalises_equal(event_type: str) -> None:
    events = [normalize(load(v, event_type)) for v in VERSIONS]
    assert [e.meta.api_version for e in events] == list(VERSIONS)
    first = without_version(events[0])
    for version, event in zip(VERSIONS[1:], events[1:], strict=True):
        assert without_version(event) == first, f"{version} differs from {VERSIONS[0]}"


# The fixture story (tests/fixtures/stripe/README.md), written out by hand so the normaliser is
# checked against independent expectations rather than against the factory.
WS = "ws_fixture_0001"
CUS = "cus_RfX3kQ9LmN2pVt"
SUB = "sub_1QxW7rB7WZ01zgkWaB3cD4eF"
T0 = utc(2026, 10, 6, 9)
TRIAL_END = utc(2026, 10, 20, 9)
P1_END = utc(2026, 11, 20, 9)
P2_END = utc(2026, 12, 20, 9)
CHANGE = utc(2026, 10, 30, 9)
DELETED = utc(2026, 12, 4, 9)
PLUS_LINES = (
    InvoiceLine("price_plus_monthly", 5, 5000, False),
    InvoiceLine("price_storage_100gb", 1, 500, False),
)


@pytest.mark.parametrize("version", VERSIONS)
def test_subscription_fixtures_have_expected_content(version: str) -> None:
    created = normalize(load(version, "customer.subscription.created"))
    assert isinstance(created, SubscriptionObserved)
    assert created.meta.request_id == "req_Vb7mK2pQx9LdTf"
    assert created.meta.idempotency_key == "8c1f2a8e-5d0b-4c51-9a5e-2f6b7d3c9e10"
    sub = created.subscription
    assert (sub.subscription_id, sub.customer_id, sub.status) == (SUB, CUS, "trialing")
    assert [(i.price_id, i.quantity) for i in sub.items] == [
        ("price_plus_monthly", 5),
        ("price_storage_100gb", 1),
    ]
    assert all(i.item_id.startswith("si_") for i in sub.items)
    assert (sub.current_period_start, sub.current_period_end) == (T0, TRIAL_END)
    assert all((i.period_start, i.period_end) == (T0, TRIAL_END) for i in sub.items)
    assert (sub.trial_end, sub.start_date) == (TRIAL_END, T0)
    assert (sub.cancel_at_period_end, sub.cancel_at, sub.canceled_at, sub.ended_at) == (
        False,
        None,
        None,
        None,
    )
    assert (sub.workspace_id, sub.custom_contract) == (WS, False)

    updated = normalize(load(version, "customer.subscription.updated"))
    assert isinstance(updated, SubscriptionObserved)
    assert updated.meta.idempotency_key == "plan-change-5f0c9a3e-7b1d-4e2a-8c6f-0d9e1b2a3c4d"
    assert updated.subscription.status == "active"
    assert [(i.price_id, i.quantity) for i in updated.subscription.items] == [
        ("price_business_monthly", 8),
        ("price_storage_100gb", 1),
    ]
    assert updated.subscription.current_period_start == TRIAL_END
    assert updated.subscription.current_period_end == P1_END

    deleted = normalize(load(version, "customer.subscription.deleted"))
    assert isinstance(deleted, SubscriptionObserved)
    assert (deleted.meta.request_id, deleted.meta.idempotency_key) == (None, None)
    d = deleted.subscription
    assert (d.status, d.canceled_at, d.ended_at) == ("canceled", DELETED, DELETED)
    assert (d.current_period_start, d.current_period_end) == (P1_END, P2_END)


@pytest.mark.parametrize("version", VERSIONS)
def test_invoice_fixtures_have_expected_content(version: str) -> None:
    def inv(event_type: str) -> InvoiceObserved:
        event = normalize(load(version, event_type))
        assert isinstance(event, InvoiceObserved)
        assert event.invoice.customer_id == CUS
        assert event.invoice.subscription_id == SUB
        assert event.invoice.workspace_id == WS
        assert event.invoice.currency == "usd"
        return event

    finalized = inv("invoice.finalized")
    i = finalized.invoice
    assert (i.invoice_id, i.status, i.billing_reason) == (
        "in_1QyA2bB7WZ01zgkWfirstCyc",
        "open",
        "subscription_cycle",
    )
    assert (i.amount_due, i.amount_paid, i.amount_remaining, i.attempt_count) == (5500, 0, 5500, 0)
    assert (i.created, i.period_start, i.period_end) == (TRIAL_END, T0, TRIAL_END)
    assert i.lines == PLUS_LINES
    assert not finalized.payment_failed and not finalized.action_required

    failed = inv("invoice.payment_failed")
    assert failed.payment_failed and not failed.action_required
    assert (failed.invoice.status, failed.invoice.attempt_count) == ("open", 1)
    assert failed.invoice.next_payment_attempt == utc(2026, 10, 23, 10)

    action = inv("invoice.payment_action_required")
    assert action.action_required and not action.payment_failed
    assert (action.invoice.status, action.invoice.attempt_count) == ("open", 2)

    paid = inv("invoice.paid")
    assert (paid.invoice.status, paid.invoice.amount_paid, paid.invoice.amount_remaining) == (
        "paid",
        5500,
        0,
    )
    assert paid.meta.idempotency_key == "e2b8f3c1-4a6d-4f0e-9b7a-1c2d3e4f5a6b"

    voided = inv("invoice.voided")
    assert (voided.invoice.invoice_id, voided.invoice.status) == ("in_1QzB3cB7WZ01zgkWprorUpd", "void")
    assert voided.invoice.billing_reason == "subscription_update"
    assert voided.invoice.lines == (
        InvoiceLine("price_plus_monthly", 5, -3387, True),
        InvoiceLine("price_business_monthly", 8, 10839, True),
    )
    assert voided.invoice.amount_due == 10839 - 3387

    written_off = inv("invoice.marked_uncollectible")
    assert (written_off.invoice.status, written_off.invoice.attempt_count) == ("uncollectible", 4)
    assert written_off.invoice.amount_due == 16500
    assert written_off.invoice.created == P1_END


@pytest.mark.parametrize("version", VERSIONS)
def test_checkout_fixture_has_expected_content(version: str) -> None:
    event = normalize(load(version, "checkout.session.completed"))
    assert isinstance(event, CheckoutCompleted)
    assert event.session_id.startswith("cs_test_")
    assert (event.customer_id, event.workspace_id) == (CUS, WS)
    assert (event.mode, event.payment_status) == ("payment", "paid")
    assert event.price_quantities == (("price_ai_pack_5000", 1),)


# --- per-version shape details -------------------------------------------------------------


def test_fixture_shapes_differ_where_the_changelogs_say() -> None:
    old, basil, endive = (load(v, "invoice.paid")["data"]["object"] for v in VERSIONS)
    assert old["subscription"] == SUB and "parent" not in old
    assert old["subscription_details"]["metadata"]["workspace_id"] == WS
    assert "price" in old["lines"]["data"][0] and "proration" in old["lines"]["data"][0]
    for new in (basil, endive):
        assert "subscription" not in new and "subscription_details" not in new
        assert new["parent"]["subscription_details"]["subscription"] == SUB
        line = new["lines"]["data"][0]
        assert "price" not in line and "proration" not in line
        assert line["pricing"]["price_details"]["price"] == "price_plus_monthly"
    assert "status_details" in endive and "status_details" not in basil

    old_s, basil_s, endive_s = (load(v, "customer.subscription.created")["data"]["object"] for v in VERSIONS)
    assert "current_period_start" in old_s
    assert "current_period_start" not in old_s["items"]["data"][0]
    for new in (basil_s, endive_s):
        assert "current_period_start" not in new
        assert "current_period_start" in new["items"]["data"][0]
    assert isinstance(endive_s["billing_cycle_anchor"], int)  # endive changed the *request* param
    assert "billing_mode" in endive_s and "status_details" in endive_s


def _top_keys(event: dict[str, Any]) -> dict[str, set[str]]:
    obj = event["data"]["object"]
    out = {"envelope": set(event), "object": set(obj)}
    for key in ("items", "lines"):
        if isinstance(obj.get(key), dict) and obj[key]["data"]:
            out[f"{key}[0]"] = set(obj[key]["data"][0])
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_factory_renders_the_fixture_shapes(version: str) -> None:
    """Guards drift between the factory and the fixtures (both follow the same sources)."""
    subscription = sf.subscription_event(
        "updated",
        api_version=version,
        created=sf.T0,
        sub_id="sub_shape",
        customer="cus_shape",
        workspace_id="ws_shape",
        status="active",
        items=[("price_plus_monthly", 1)],
        period_start=sf.T0,
        period_end=sf.T0 + 30 * sf.DAY,
        previous_attributes={"status": "trialing"},
    )
    invoice = sf.invoice_event(
        "paid",
        api_version=version,
        created=sf.T0,
        invoice_id="in_shape",
        customer="cus_shape",
        sub_id="sub_shape",
        workspace_id="ws_shape",
        status="paid",
        amount_due=1000,
        amount_paid=1000,
        lines=[("price_plus_monthly", 1, 1000)],
    )
    checkout = sf.checkout_completed_event(
        api_version=version, created=sf.T0, session_id="cs_shape", customer="cus_shape", workspace_id="w"
    )
    fixture_sub = load(version, "customer.subscription.updated")
    assert _top_keys(subscription) == _top_keys(fixture_sub)
    assert set(subscription["data"]) == set(fixture_sub["data"]) == {"object", "previous_attributes"}
    assert _top_keys(invoice) == _top_keys(load(version, "invoice.paid"))
    assert _top_keys(checkout) == _top_keys(load(version, "checkout.session.completed"))


# --- factory events across versions ---------------------------------------------------------

FACTORY_CASES: dict[str, Callable[[str], dict[str, Any]]] = {
    "sub_trialing_multi_item": lambda v: sf.subscription_event(
        "created",
        api_version=v,
        created=sf.T0,
        sub_id="sub_A",
        customer="cus_A",
        workspace_id="ws_A",
        status="trialing",
        items=[("price_business_annual", 12), ("price_storage_100gb", 3)],
        period_start=sf.T0,
        period_end=sf.T0 + 14 * sf.DAY,
        trial_start=sf.T0,
        trial_end=sf.T0 + 14 * sf.DAY,
        request_idempotency_key="idem-1",
    ),
    "sub_cancel_at_period_end_custom_contract": lambda v: sf.subscription_event(
        "updated",
        api_version=v,
        created=sf.T0 + 100,
        sub_id="sub_A",
        customer="cus_A",
        workspace_id="ws_A",
        status="active",
        items=[("price_enterprise_annual", 40)],
        period_start=sf.T0,
        period_end=sf.add_months(sf.T0, 12),
        cancel_at_period_end=True,
        canceled_at=sf.T0 + 100,
        custom_contract=True,
    ),
    "sub_paused": lambda v: sf.subscription_event(
        "paused",
        api_version=v,
        created=sf.T0,
        sub_id="sub_P",
        customer="cus_P",
        workspace_id=None,
        status="paused",
        items=[("price_plus_monthly", 2)],
        period_start=sf.T0,
        period_end=sf.T0 + 30 * sf.DAY,
    ),
    "invoice_failed_with_proration": lambda v: sf.invoice_event(
        "payment_failed",
        api_version=v,
        created=sf.T0 + 7200,
        invoice_id="in_A",
        customer="cus_A",
        sub_id="sub_A",
        workspace_id="ws_A",
        status="open",
        amount_due=2500,
        attempt_count=1,
        next_payment_attempt=sf.T0 + 3 * sf.DAY,
        billing_reason="subscription_update",
        invoice_created=sf.T0,
        lines=[("price_plus_monthly", 2, -1000, True), ("price_business_monthly", 2, 3500, True)],
    ),
    "invoice_one_off_without_subscription": lambda v: sf.invoice_event(
        "finalized",
        api_version=v,
        created=sf.T0,
        invoice_id="in_B",
        customer="cus_A",
        sub_id=None,
        workspace_id=None,
        metadata={"workspace_id": "ws_from_invoice_metadata"},
        status="open",
        amount_due=4500,
        billing_reason="manual",
        lines=[("price_ai_pack_5000", 1, 4500)],
    ),
    "invoice_uncollectible": lambda v: sf.invoice_event(
        "marked_uncollectible",
        api_version=v,
        created=sf.T0,
        invoice_id="in_C",
        customer="cus_A",
        sub_id="sub_A",
        workspace_id="ws_A",
        status="uncollectible",
        amount_due=1000,
        attempt_count=4,
        lines=[("price_plus_monthly", 1, 1000)],
    ),
    "checkout_expanded_line_items": lambda v: sf.checkout_completed_event(
        api_version=v,
        created=sf.T0,
        session_id="cs_test_X",
        customer=None,
        workspace_id=None,
        client_reference_id="ws_from_reference",
        price_quantities=[("price_ai_pack_1000", 2), ("price_ai_pack_5000", 1)],
        expand_line_items=True,
    ),
}


@pytest.mark.parametrize("case", FACTORY_CASES)
def test_factory_event_normalises_equal_in_every_shape(case: str) -> None:
    events = [normalize(FACTORY_CASES[case](v)) for v in VERSIONS]
    assert len({e.meta.event_id for e in events}) == 1  # one logical event, one id
    for event in events[1:]:
        assert without_version(event) == without_version(events[0])


def test_factory_cases_carry_what_they_say() -> None:
    sub = normalize(FACTORY_CASES["sub_cancel_at_period_end_custom_contract"](sf.BASIL))
    assert isinstance(sub, SubscriptionObserved)
    assert sub.subscription.custom_contract and sub.subscription.cancel_at_period_end
    assert sub.subscription.cancel_at == sub.subscription.current_period_end
    paused = normalize(FACTORY_CASES["sub_paused"](sf.ENDIVE))
    assert isinstance(paused, SubscriptionObserved)
    assert paused.subscription.status == "paused" and paused.subscription.workspace_id is None
    one_off = normalize(FACTORY_CASES["invoice_one_off_without_subscription"](sf.PRE_BASIL))
    assert isinstance(one_off, InvoiceObserved)
    assert one_off.invoice.subscription_id is None
    assert one_off.invoice.workspace_id == "ws_from_invoice_metadata"
    checkout = normalize(FACTORY_CASES["checkout_expanded_line_items"](sf.ENDIVE))
    assert isinstance(checkout, CheckoutCompleted)
    assert checkout.price_quantities == (("price_ai_pack_1000", 2), ("price_ai_pack_5000", 1))
    assert checkout.workspace_id == "ws_from_reference" and checkout.customer_id is None


@pytest.mark.parametrize("version", VERSIONS)
def test_histories_normalise_in_true_order(version: str) -> None:
    for history in (
        sf.history_lifecycle(api_version=version),
        sf.history_payment_failure(api_version=version, failures=2, outcome="uncollectible"),
    ):
        events = [normalize(raw) for raw in history]
        created = [e.meta.created for e in events]
        assert created == sorted(created)
        assert len({e.meta.event_id for e in events}) == len(events)


# --- variants of the shapes -----------------------------------------------------------------


def sub_raw(version: str = sf.ENDIVE) -> dict[str, Any]:
    return copy.deepcopy(load(version, "customer.subscription.created"))


def inv_raw(version: str = sf.ENDIVE) -> dict[str, Any]:
    return copy.deepcopy(load(version, "invoice.payment_failed"))


def test_references_may_be_ids_or_expanded_objects() -> None:
    raw = sub_raw(sf.BASIL)
    obj = raw["data"]["object"]
    obj["customer"] = {"id": CUS, "object": "customer", "metadata": {}}
    obj["items"]["data"][0]["price"] = "price_plus_monthly"
    del obj["items"]["data"][1]["price"]  # only the legacy plan left
    event = normalize(raw)
    assert isinstance(event, SubscriptionObserved)
    assert event.subscription.customer_id == CUS
    assert [i.price_id for i in event.subscription.items] == ["price_plus_monthly", "price_storage_100gb"]

    raw = inv_raw(sf.BASIL)
    obj = raw["data"]["object"]
    obj["parent"]["subscription_details"]["subscription"] = {"id": SUB, "object": "subscription"}
    obj["lines"]["data"][0]["pricing"]["price_details"]["price"] = {"id": "price_plus_monthly"}
    invoice = normalize(raw)
    assert isinstance(invoice, InvoiceObserved)
    assert invoice.invoice.subscription_id == SUB
    assert invoice.invoice.lines[0].price_id == "price_plus_monthly"

    raw = inv_raw(sf.PRE_BASIL)
    obj = raw["data"]["object"]
    obj["subscription"] = {"id": SUB, "object": "subscription", "metadata": {"workspace_id": "ws_x"}}
    obj["subscription_details"] = {"metadata": None}
    obj["lines"]["data"][0]["price"] = None  # only the legacy plan left
    invoice = normalize(raw)
    assert isinstance(invoice, InvoiceObserved)
    assert invoice.invoice.subscription_id == SUB
    assert invoice.invoice.workspace_id == "ws_x"
    assert invoice.invoice.lines[0].price_id == "price_plus_monthly"


def test_workspace_id_falls_back_to_customer_metadata() -> None:
    raw = sub_raw()
    obj = raw["data"]["object"]
    obj["metadata"] = {}
    obj["customer"] = {"id": CUS, "object": "customer", "metadata": {"workspace_id": "ws_cust"}}
    event = normalize(raw)
    assert isinstance(event, SubscriptionObserved)
    assert event.subscription.workspace_id == "ws_cust"
    obj["customer"] = CUS
    event = normalize(raw)
    assert isinstance(event, SubscriptionObserved)
    assert event.subscription.workspace_id is None


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("TRUE", True), ("false", False), ("", False)]
)
def test_custom_contract_metadata(value: str, expected: bool) -> None:
    raw = sub_raw()
    raw["data"]["object"]["metadata"]["custom_contract"] = value
    event = normalize(raw)
    assert isinstance(event, SubscriptionObserved)
    assert event.subscription.custom_contract is expected


def test_items_with_different_periods_keep_their_own() -> None:
    raw = sub_raw(sf.ENDIVE)  # flexible billing mode: items may bill on different cycles
    item = raw["data"]["object"]["items"]["data"][1]
    item["current_period_start"] = sf.ts(CHANGE)
    item["current_period_end"] = sf.ts(P1_END)
    event = normalize(raw)
    assert isinstance(event, SubscriptionObserved)
    sub = event.subscription
    assert sub.current_period_start is None and sub.current_period_end is None
    assert sub.items[0] == SubscriptionItem(sub.items[0].item_id, "price_plus_monthly", 5, T0, TRIAL_END)
    assert (sub.items[1].period_start, sub.items[1].period_end) == (CHANGE, P1_END)


def test_metered_item_without_quantity() -> None:
    raw = sub_raw()
    del raw["data"]["object"]["items"]["data"][1]["quantity"]
    event = normalize(raw)
    assert isinstance(event, SubscriptionObserved)
    assert event.subscription.items[1].quantity == 0


@pytest.mark.parametrize(
    ("request_field", "request_id", "key"),
    [
        ({"id": "req_1", "idempotency_key": "k-1"}, "req_1", "k-1"),
        ({"id": None, "idempotency_key": None}, None, None),
        ({"id": "req_2"}, "req_2", None),
        ("req_legacy", "req_legacy", None),  # API versions before 2017-05-25
        (None, None, None),
    ],
)
def test_request_in_both_forms(request_field: object, request_id: str | None, key: str | None) -> None:
    raw = inv_raw()
    raw["request"] = request_field
    meta = normalize(raw).meta
    assert (meta.request_id, meta.idempotency_key) == (request_id, key)
    del raw["request"]
    assert normalize(raw).meta.request_id is None


def test_unknown_fields_are_tolerated() -> None:
    def sprinkle(node: Any) -> None:
        if isinstance(node, dict):
            for value in list(node.values()):
                sprinkle(value)
            node["zz_future_field"] = {"type": "something_new", "value": [1, 2, 3]}
        elif isinstance(node, list):
            for value in node:
                sprinkle(value)

    for version in VERSIONS:
        for event_type in FIXTURE_TYPES:
            raw = load(version, event_type)
            expected = normalize(raw)
            sprinkle(raw)
            assert normalize(raw) == expected


@pytest.mark.parametrize(
    "event_type",
    [
        "customer.created",
        "invoice.upcoming",  # has no invoice id: must not be treated as an invoice
        "invoice.deleted",
        "payment_intent.succeeded",
        "subscription_schedule.updated",
        "checkout.session.expired",
    ],
)
def test_unhandled_types_are_ignored_without_reading_the_object(event_type: str) -> None:
    raw = {
        "id": "evt_ignored",
        "object": "event",
        "api_version": sf.ENDIVE,
        "created": sf.T0,
        "type": event_type,
        "data": {"object": {"object": "whatever", "weird": [None]}},
        "request": {"id": None, "idempotency_key": None},
    }
    event = normalize(raw)
    assert isinstance(event, IgnoredEvent)
    assert event.meta.event_type == event_type
    assert event.meta.created == datetime.fromtimestamp(sf.T0, tz=UTC)


def test_checkout_metadata_quantity_and_reference() -> None:
    raw = copy.deepcopy(load(sf.ENDIVE, "checkout.session.completed"))
    obj = raw["data"]["object"]
    obj["metadata"] = {"price_id": "price_ai_pack_1000", "quantity": "3"}
    obj["client_reference_id"] = "ws_ref"
    event = normalize(raw)
    assert isinstance(event, CheckoutCompleted)
    assert event.price_quantities == (("price_ai_pack_1000", 3),)
    assert event.workspace_id == "ws_ref"
    obj["metadata"] = {}
    event = normalize(raw)
    assert isinstance(event, CheckoutCompleted)
    assert event.price_quantities == ()


def test_missing_amount_remaining_is_derived() -> None:
    raw = inv_raw()
    del raw["data"]["object"]["amount_remaining"]
    event = normalize(raw)
    assert isinstance(event, InvoiceObserved)
    assert event.invoice.amount_remaining == 5500


# --- envelope validation --------------------------------------------------------------------


def _valid_envelope() -> dict[str, Any]:
    return {
        "id": "evt_1",
        "object": "event",
        "type": "invoice.paid",
        "created": 1_700_000_000,
        "data": {"object": {}},
    }


def _with(**changes: Any) -> dict[str, Any]:
    env = _valid_envelope()
    for key, value in changes.items():
        if value is _DELETE:
            del env[key]
        else:
            env[key] = value
    return env


_DELETE = object()

ENVELOPE_CASES: list[tuple[str, object, str | None]] = [
    ("list", [_valid_envelope()], None),
    ("string", "evt_1", None),
    ("null", None, None),
    ("number", 12, None),
    ("no object", _with(object=_DELETE), "object"),
    ("object list", _with(object="list"), "object"),
    ("thin event", _with(object="v2.core.event"), "object"),
    ("no id", _with(id=_DELETE), "id"),
    ("id int", _with(id=12), "id"),
    ("id without evt_", _with(id="abc_1"), "id"),
    ("id bare evt", _with(id="evt"), "id"),
    ("id too long", _with(id="evt_" + "x" * 252), "id"),
    ("no type", _with(type=_DELETE), "type"),
    ("empty type", _with(type=""), "type"),
    ("blank type", _with(type="   "), "type"),
    ("type not string", _with(type=["invoice.paid"]), "type"),
    ("no created", _with(created=_DELETE), "created"),
    ("created string", _with(created="1700000000"), "created"),
    ("created float", _with(created=1_700_000_000.5), "created"),
    ("created bool", _with(created=True), "created"),
    ("created negative", _with(created=-1), "created"),
    ("created huge", _with(created=10**15), "created"),
    ("no data", _with(data=_DELETE), "data"),
    ("data list", _with(data=[{"object": {}}]), "data"),
    ("no data.object", _with(data={}), "data.object"),
    ("data.object string", _with(data={"object": "in_1"}), "data.object"),
]


@pytest.mark.parametrize(("label", "payload", "field"), ENVELOPE_CASES, ids=[c[0] for c in ENVELOPE_CASES])
def test_envelope_rejections(label: str, payload: object, field: str | None) -> None:
    with pytest.raises(PayloadError) as info:
        validate_event_envelope(payload)
    assert info.value.code == NOT_A_STRIPE_EVENT
    assert info.value.field == field
    assert "not a Stripe event" in str(info.value)
    if field:
        assert f"`{field}`" in str(info.value)
    with pytest.raises(PayloadError) as again:  # normalize checks the envelope first
        normalize(payload)  # type: ignore[arg-type]
    assert again.value.code == NOT_A_STRIPE_EVENT


@pytest.mark.parametrize(
    "payload",
    [
        _valid_envelope(),
        _with(id="evt_" + "x" * 251),  # 255 characters
        _with(created=0),
        _with(type="some.future.type", extra_field={"x": 1}),
        load(sf.PRE_BASIL, "invoice.paid"),
    ],
)
def test_envelope_accepts(payload: dict[str, Any]) -> None:
    validate_event_envelope(payload)


def test_payload_error_is_a_value_error_with_a_message() -> None:
    error = PayloadError(MALFORMED_EVENT, "malformed event: `x` is required", "x")
    assert isinstance(error, ValueError)
    assert error.message == str(error) == "malformed event: `x` is required"


# --- malformed objects of handled types ------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


MALFORMED_CASES: list[tuple[str, str, Mutation, str]] = [
    ("customer.subscription.created", sf.ENDIVE, _set("status", _DELETE), "data.object.status"),
    ("customer.subscription.created", sf.ENDIVE, _set("id", 12), "data.object.id"),
    ("customer.subscription.created", sf.ENDIVE, _set("customer", _DELETE), "data.object.customer"),
    ("customer.subscription.created", sf.ENDIVE, _set("customer", 5), "data.object.customer"),
    (
        "customer.subscription.created",
        sf.ENDIVE,
        _set("customer", {"object": "customer"}),
        "data.object.customer.id",
    ),
    ("customer.subscription.created", sf.ENDIVE, _set("items", _DELETE), "data.object.items"),
    ("customer.subscription.created", sf.ENDIVE, _set("items", [1]), "data.object.items"),
    ("customer.subscription.created", sf.ENDIVE, _set("items.data", {}), "data.object.items.data"),
    ("customer.subscription.created", sf.ENDIVE, _set("items.data", ["si_1"]), "data.object.items.data[0]"),
    (
        "customer.subscription.created",
        sf.BASIL,
        lambda o: [o["items"]["data"][0].pop(k) for k in ("price", "plan")],
        "data.object.items.data[0].price",
    ),
    (
        "customer.subscription.created",
        sf.BASIL,
        _set("items.data.0.quantity", "5"),
        "data.object.items.data[0].quantity",
    ),
    (
        "customer.subscription.created",
        sf.BASIL,
        _set("items.data.0.quantity", -1),
        "data.object.items.data[0].quantity",
    ),
    (
        "customer.subscription.created",
        sf.BASIL,
        _set("items.data.0.current_period_end", "2026-10-20"),
        "data.object.items.data[0].current_period_end",
    ),
    (
        "customer.subscription.created",
        sf.PRE_BASIL,
        _set("current_period_start", 1.5),
        "data.object.current_period_start",
    ),
    ("customer.subscription.created", sf.PRE_BASIL, _set("trial_end", -5), "data.object.trial_end"),
    (
        "customer.subscription.created",
        sf.ENDIVE,
        _set("cancel_at_period_end", "yes"),
        "data.object.cancel_at_period_end",
    ),
    ("customer.subscription.updated", sf.ENDIVE, _set("object", "invoice"), "data.object.object"),
    ("invoice.paid", sf.ENDIVE, _set("amount_due", _DELETE), "data.object.amount_due"),
    ("invoice.paid", sf.ENDIVE, _set("amount_due", "5500"), "data.object.amount_due"),
    ("invoice.paid", sf.ENDIVE, _set("amount_paid", True), "data.object.amount_paid"),
    ("invoice.paid", sf.ENDIVE, _set("status", None), "data.object.status"),
    ("invoice.paid", sf.ENDIVE, _set("id", _DELETE), "data.object.id"),
    ("invoice.paid", sf.ENDIVE, _set("customer", None), "data.object.customer"),
    ("invoice.paid", sf.ENDIVE, _set("currency", _DELETE), "data.object.currency"),
    ("invoice.paid", sf.ENDIVE, _set("created", _DELETE), "data.object.created"),
    ("invoice.paid", sf.ENDIVE, _set("attempt_count", -1), "data.object.attempt_count"),
    ("invoice.paid", sf.ENDIVE, _set("lines.data.0.amount", _DELETE), "data.object.lines.data[0].amount"),
    ("invoice.paid", sf.ENDIVE, _set("parent", "sub_x"), None),  # an id string: tolerated
    (
        "invoice.paid",
        sf.ENDIVE,
        _set("lines.data.0.parent.subscription_item_details.proration", "no"),
        "data.object.lines.data[0].parent.subscription_item_details.proration",
    ),
    ("invoice.paid", sf.PRE_BASIL, _set("subscription", 9), "data.object.subscription"),
    ("invoice.paid", sf.PRE_BASIL, _set("lines.data.0.price", 3), "data.object.lines.data[0].price"),
    ("invoice.voided", sf.ENDIVE, _set("object", "subscription"), "data.object.object"),
    ("checkout.session.completed", sf.ENDIVE, _set("mode", _DELETE), "data.object.mode"),
    ("checkout.session.completed", sf.ENDIVE, _set("payment_status", 1), "data.object.payment_status"),
    (
        "checkout.session.completed",
        sf.ENDIVE,
        _set("metadata.quantity", "two"),
        "data.object.metadata.quantity",
    ),
    (
        "checkout.session.completed",
        sf.ENDIVE,
        _set("metadata.quantity", "0"),
        "data.object.metadata.quantity",
    ),
]


@pytest.mark.parametrize(
    ("event_type", "version", "mutate", "field"),
    MALFORMED_CASES,
    ids=[f"{c[0]}:{c[3] or 'tolerated'}" for c in MALFORMED_CASES],
)
def test_malformed_objects(event_type: str, version: str, mutate: Mutation, field: str | None) -> None:
    raw = copy.deepcopy(load(version, event_type))
    mutate(raw["data"]["object"])
    validate_event_envelope(raw)  # the envelope is fine: these are accepted, then fail later
    if field is None:
        normalize(raw)
        return
    with pytest.raises(PayloadError) as info:
        normalize(raw)
    assert info.value.code == MALFORMED_EVENT
    assert info.value.field == field
    assert f"`{field}`" in str(info.value) and str(info.value).startswith("malformed event:")


# --- read around: nullable, expandable, unknown enum values ----------------------------------

TOLERATED_CASES: list[tuple[str, str, Mutation, str]] = [
    ("customer.subscription.created", sf.ENDIVE, _set("status", "bogus"), "data.object.status"),
    ("customer.subscription.created", sf.ENDIVE, _set("metadata", ["ws"]), "data.object.metadata"),
    (
        "customer.subscription.created",
        sf.ENDIVE,
        _set("metadata.workspace_id", 7),
        "data.object.metadata.workspace_id",
    ),
    (
        "customer.subscription.created",
        sf.ENDIVE,
        lambda o: o.update(metadata={}, customer={"id": "cus_x", "metadata": 3}),
        "data.object.customer.metadata",
    ),
    ("customer.subscription.updated", sf.ENDIVE, _set("pending_update", 7), "data.object.pending_update"),
    ("invoice.paid", sf.ENDIVE, _set("status", "pending"), "data.object.status"),
    ("invoice.paid", sf.ENDIVE, _set("billing_reason", "subscription_renewal"), "data.object.billing_reason"),
    ("invoice.paid", sf.ENDIVE, _set("lines", []), "data.object.lines"),
    ("invoice.paid", sf.ENDIVE, _set("lines", {}), "data.object.lines.data"),
    ("invoice.paid", sf.ENDIVE, _set("lines", {"object": "list", "data": None}), "data.object.lines.data"),
    ("invoice.paid", sf.ENDIVE, _set("lines", "il_1"), "data.object.lines"),
    ("invoice.paid", sf.ENDIVE, lambda o: o["lines"]["data"].insert(0, None), "data.object.lines.data[0]"),
    ("invoice.paid", sf.ENDIVE, _set("parent", 5), "data.object.parent"),
    (
        "invoice.paid",
        sf.ENDIVE,
        _set("parent.subscription_details", []),
        "data.object.parent.subscription_details",
    ),
    (
        "invoice.paid",
        sf.ENDIVE,
        _set("parent.subscription_details.metadata", "ws"),
        "data.object.parent.subscription_details.metadata",
    ),
    ("invoice.paid", sf.ENDIVE, _set("lines.data.0.pricing", 1), "data.object.lines.data[0].pricing"),
    (
        "checkout.session.completed",
        sf.ENDIVE,
        _set("payment_status", "pending"),
        "data.object.payment_status",
    ),
    ("checkout.session.completed", sf.ENDIVE, _set("mode", "installments"), "data.object.mode"),
    (
        "checkout.session.completed",
        sf.ENDIVE,
        _set("line_items", {"object": "list", "data": [{"quantity": 1}]}),
        "data.object.line_items.data[0].price",
    ),
]


@pytest.mark.parametrize(
    ("event_type", "version", "mutate", "path"),
    TOLERATED_CASES,
    ids=[f"{c[0]}:{c[3]}" for c in TOLERATED_CASES],
)
def test_tolerated_shapes_are_read_and_reported(
    event_type: str, version: str, mutate: Mutation, path: str
) -> None:
    raw = copy.deepcopy(load(version, event_type))
    assert read_event(raw).unexpected == ()  # the fixture itself reads cleanly
    mutate(raw["data"]["object"])
    reading = read_event(raw)
    assert [u.path for u in reading.unexpected] == [path]
    assert reading.event == normalize(raw)
    assert not isinstance(reading.event, IgnoredEvent)


def test_an_unknown_subscription_status_is_kept_as_it_came() -> None:
    raw = copy.deepcopy(load(sf.ENDIVE, "customer.subscription.updated"))
    raw["data"]["object"]["status"] = "on_hold"
    reading = read_event(raw)
    assert isinstance(reading.event, SubscriptionObserved)
    assert reading.event.subscription.status == "on_hold"
    assert reading.unexpected[0].problem == "unknown value 'on_hold'"


def test_malformed_request_field() -> None:
    raw = inv_raw()
    raw["request"] = 5
    with pytest.raises(PayloadError) as info:
        normalize(raw)
    assert (info.value.code, info.value.field) == (MALFORMED_EVENT, "request")
