"""handlers.thin: recognising thin notifications, mapping their types, and the observation a
fetched related object becomes (ordered against snapshot events like a reconcile)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.catalog import parse_catalog
from handlers.events import IgnoredEvent, InvoiceObserved, SubscriptionObserved
from handlers.normalize import HANDLED_EVENT_TYPES, normalize
from handlers.observation import observation_time
from handlers.reducer import APPLIED, STALE, apply_event
from handlers.state import WorkspaceState
from handlers.stripe_fields import PayloadError
from handlers.thin import (
    FetchedObject,
    is_thin,
    needs_fetch,
    parse_thin,
    snapshot_type,
    thin_event,
    thin_observation,
)
from tests.support import stripe_factory as sf
from tests.support.paths import ROOT
from tests.support.thin_events import thin_notification, thin_of

CATALOG = parse_catalog((ROOT / "worker" / "catalog.example.toml").read_text(), "catalog.example.toml")
FETCH = datetime(2026, 11, 2, 12, 0, 7, 250_000, tzinfo=UTC)

# The API reference's example of a thin notification (v2 core event), for a v1 invoice.
REFERENCE = {
    "id": "evt_test_65R9Ijk8mKaa4cfHpdN16R9Ijk8mKaa4cfHpdN1Ijk8",
    "object": "v2.core.event",
    "type": "v1.invoice.paid",
    "livemode": False,
    "created": "2026-11-02T12:00:00.246Z",
    "context": "acct_1Nv0FGQ9RKHgCVdK",
    "reason": {"type": "request", "request": {"id": "req_v24o", "idempotency_key": "plan-change:pc_1"}},
    "related_object": {"id": "in_1ABC", "type": "invoice", "url": "/v1/invoices/in_1ABC"},
}


@pytest.mark.parametrize(
    ("thin_type", "expected"),
    [
        ("v1.invoice.paid", "invoice.paid"),
        ("v1.invoice.payment_failed", "invoice.payment_failed"),
        ("v1.customer.subscription.updated", "customer.subscription.updated"),
        ("v1.customer.subscription.deleted", "customer.subscription.deleted"),
        ("v1.checkout.session.completed", "checkout.session.completed"),
        ("v1.invoice.upcoming", None),  # not handled as a snapshot either
        ("v1.customer.created", None),
        ("v2.core.account.created", None),
        ("invoice.paid", None),  # a snapshot type is not a thin one
        ("v1.", None),
    ],
)
def test_thin_types_map_to_the_snapshot_types_handled_today(thin_type: str, expected: str | None) -> None:
    assert snapshot_type(thin_type) == expected


def test_every_snapshot_type_handled_has_its_thin_counterpart() -> None:
    assert {snapshot_type(f"v1.{t}") for t in HANDLED_EVENT_TYPES} == set(HANDLED_EVENT_TYPES)


def test_the_reference_example_parses() -> None:
    assert is_thin(REFERENCE) and not is_thin({"object": "event"}) and not is_thin([REFERENCE])
    n = parse_thin(REFERENCE)
    assert (n.event_id, n.event_type, n.context, n.livemode) == (
        REFERENCE["id"],
        "v1.invoice.paid",
        "acct_1Nv0FGQ9RKHgCVdK",
        False,
    )
    assert n.created == datetime(2026, 11, 2, 12, 0, 0, 246_000, tzinfo=UTC)
    assert (n.related.object_id, n.related.object_type, n.related.url) == (
        "in_1ABC",
        "invoice",
        "/v1/invoices/in_1ABC",
    )
    assert (n.request_id, n.idempotency_key) == ("req_v24o", "plan-change:pc_1")
    assert needs_fetch(n)


def _with(**changes: Any) -> dict[str, Any]:
    payload = {**REFERENCE, **changes}
    return {k: v for k, v in payload.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (_with(id="in_1"), "id"),
        (_with(id="evt_" + "x" * 300), "id"),
        (_with(type=""), "type"),
        (_with(type=_DROP), "type"),
        (_with(created=1_791_277_200), "created"),  # a snapshot's unix time
        (_with(created="2026-11-02T12:00:00"), "created"),  # no zone
        (_with(created="yesterday"), "created"),
        (_with(livemode="false"), "livemode"),
        (_with(context=42), "context"),
        (_with(related_object="in_1ABC"), "related_object"),
        (_with(related_object={"id": "in_1", "type": "invoice"}), "related_object.url"),
        (
            _with(related_object={"id": "in_1", "type": "invoice", "url": "https://evil.example/v1/x"}),
            "related_object.url",
        ),
        (
            _with(related_object={"id": "in_1", "type": "invoice", "url": "//evil.example/v1/x"}),
            "related_object.url",
        ),
    ],
)
def test_a_bad_envelope_names_its_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_thin(payload)
    assert (caught.value.code, caught.value.field) == ("not_a_stripe_event", field)


def test_what_the_worker_does_not_act_on_is_ignored_without_a_fetch() -> None:
    v2 = parse_thin(_with(type="v2.core.account.updated", related_object=_DROP))
    assert not needs_fetch(v2)
    assert isinstance(thin_event(v2, None), IgnoredEvent)
    other = parse_thin(_with(type="v1.customer.created"))
    assert isinstance(thin_event(other, None), IgnoredEvent)
    # One it acts on waits for its object.
    assert thin_event(parse_thin(REFERENCE), None) is None


def _failed_invoice(created: int, status: str = "open") -> dict[str, Any]:
    return sf.invoice_event(
        "payment_failed",
        api_version=sf.ENDIVE,
        event_id="evt_snapshot_failed",
        created=created,
        invoice_id="in_thin",
        customer="cus_thin",
        sub_id="sub_thin",
        workspace_id="ws_thin",
        status=status,
        amount_due=1200,
        attempt_count=1,
    )


def test_a_fetched_object_is_an_observation_at_fetch_time() -> None:
    snapshot = _failed_invoice(sf.T0)
    thin = parse_thin(thin_of(snapshot, context="acct_1"))
    event = thin_observation(thin, snapshot["data"]["object"], FETCH, "2026-10-28.endive")
    assert isinstance(event, InvoiceObserved) and event.payment_failed
    assert event.meta.event_id == thin.event_id and event.meta.event_type == "invoice.payment_failed"
    assert (
        event.meta.created == observation_time(FETCH) == datetime(2026, 11, 2, 12, 0, 6, 999_999, tzinfo=UTC)
    )
    assert event.meta.api_version == "2026-10-28.endive"
    # The failure is dated when it happened (whole seconds, as the snapshot event dates it).
    state = apply_event(WorkspaceState.new("ws_thin"), event, FETCH, CATALOG).state
    assert state.invoices["in_thin"].first_failed_at == sf.at(sf.T0)
    assert thin_event(thin, FetchedObject(snapshot["data"]["object"], FETCH, None)) == thin_observation(
        thin, snapshot["data"]["object"], FETCH, None
    )


def _sub(created: int, seats: int, event_id: str) -> dict[str, Any]:
    return sf.subscription_event(
        "updated",
        api_version=sf.ENDIVE,
        created=created,
        event_id=event_id,
        sub_id="sub_o",
        customer="cus_o",
        workspace_id="ws_o",
        status="active",
        items=[("price_plus_monthly", seats)],
        period_start=sf.T0,
        period_end=sf.add_months(sf.T0, 1),
    )


def test_the_request_that_caused_it_is_kept() -> None:
    sub = _sub(sf.T0, 2, "evt_k")
    thin = parse_thin(thin_of(sub, idempotency_key="plan-change:pc_9"))
    event = thin_observation(thin, sub["data"]["object"], FETCH, None)
    assert isinstance(event, SubscriptionObserved)
    assert (event.meta.request_id, event.meta.idempotency_key) == ("req_thin", "plan-change:pc_9")


def test_a_stale_fetch_never_overrides_a_newer_snapshot() -> None:
    t = int(FETCH.timestamp())
    sub = _sub
    fetched = sub(t - 60, 3, "evt_fetched_state")["data"]["object"]  # what Stripe answered
    thin = parse_thin(thin_of(sub(t - 60, 3, "evt_o")))
    observation = thin_observation(thin, fetched, FETCH, None)
    for created, wins in ((t - 1, False), (t, True), (t + 30, True)):  # older second loses, same second wins
        snapshot = normalize(sub(created, 9, f"evt_snap_{created}"))
        for order in ((snapshot, observation), (observation, snapshot)):
            state = WorkspaceState.new("ws_o")
            results = []
            for event in order:
                outcome = apply_event(state, event, FETCH, CATALOG)
                state, _ = outcome.state, results.append(outcome.result)
            seats = state.subscriptions["sub_o"].snapshot.items[0].quantity
            assert seats == (9 if wins else 3), (created, order)
            assert APPLIED in results and (STALE in results or results == [APPLIED, APPLIED])


def test_thin_counterparts_parse_with_the_sdk_classes() -> None:
    # thin_notification itself asserts the SDK gives its own class for the type.
    for thin_type, related in (
        ("v1.invoice.finalized", "invoice"),
        ("v1.customer.subscription.created", "subscription"),
        ("v1.checkout.session.completed", "checkout.session"),
    ):
        payload = thin_notification(
            thin_type, "obj_1", related, created=FETCH - timedelta(seconds=3), event_id="evt_sdk_1"
        )
        assert parse_thin(payload).related.url.endswith("/obj_1")
