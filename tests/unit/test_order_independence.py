"""Property: any delivery order and any duplication of a workspace's events give the same state.

Histories are generated as real Stripe payloads (tests/support/stripe_factory.py, every event in a
randomly chosen API-version shape), normalised by handlers.normalize and folded with
handlers.reducer.apply_event — the path the worker takes. Re-deliveries may even come in another
API version (an endpoint upgraded in between): same event id, different shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.catalog import parse_catalog
from handlers.events import BillingEvent
from handlers.normalize import normalize
from handlers.reducer import STALE, apply_event
from handlers.state import WorkspaceState
from handlers.thin import parse_thin, thin_observation
from handlers.view import derive_view
from tests.support import stripe_factory as sf
from tests.support.paths import ROOT
from tests.support.thin_events import thin_of

CATALOG = parse_catalog((ROOT / "worker" / "catalog.example.toml").read_text(), "catalog.example.toml")
WS, CUS = "ws_prop", "cus_prop"
DAY = sf.DAY
PLAN_PRICES = (
    "price_plus_monthly",
    "price_plus_annual",
    "price_business_monthly",
    "price_business_6m",
    "price_enterprise_annual",
)
SUB_STATUSES = ("trialing", "active", "active", "past_due", "unpaid", "paused", "incomplete")
# Gaps between consecutive events of one object: many ties (0) on purpose.
GAPS = st.sampled_from((0, 0, 1, 60, 3600, DAY, 3 * DAY))


@dataclass(frozen=True)
class Logical:
    """One logical Stripe event; ``render(api_version)`` gives its payload in that shape."""

    event_id: str
    created: int
    render: Callable[[str], dict[str, Any]]
    object_id: str = ""
    status: str = ""
    failure: bool = False  # invoice.payment_failed or invoice.payment_action_required


@st.composite
def subscription_history(draw: st.DrawFn, index: int, ids: Callable[[], str]) -> list[Logical]:
    sub_id = f"sub_prop{index}"
    start = sf.T0 + draw(st.integers(0, 5)) * DAY
    t = start
    period = 0
    out = []
    updates = draw(st.integers(1, 4))
    for n in range(updates + 1):
        last = n == updates
        if last and not draw(st.booleans()):
            break  # not every subscription ends
        t += draw(GAPS) if n else 0
        period += draw(st.integers(0, 1)) if n else 0
        items = [(draw(st.sampled_from(PLAN_PRICES)), draw(st.integers(1, 20)))]
        storage = draw(st.integers(0, 2))
        if storage:
            items.append(("price_storage_100gb", storage))
        kind = "deleted" if last else ("created" if n == 0 else "updated")
        status = "canceled" if last else draw(st.sampled_from(SUB_STATUSES))
        cancel = (not last) and draw(st.booleans())
        fields = dict(
            created=t,
            sub_id=sub_id,
            customer=CUS,
            workspace_id=WS,
            status=status,
            items=items,
            period_start=sf.add_months(start, period),
            period_end=sf.add_months(start, period + 1),
            start_date=start,
            cancel_at_period_end=cancel,
            canceled_at=t if (cancel or last) else None,
            ended_at=t if last else None,
        )
        event_id = ids()
        out.append(Logical(event_id, t, _subscription_renderer(kind, event_id, fields), sub_id, status))
    return out


def _subscription_renderer(
    kind: str, event_id: str, fields: dict[str, Any]
) -> Callable[[str], dict[str, Any]]:
    return lambda version: sf.subscription_event(kind, api_version=version, event_id=event_id, **fields)


# Invoice endings after open (+ failures): what Stripe can do next, forward-only.
ENDINGS: tuple[tuple[tuple[str, str], ...], ...] = (
    (),
    (("paid", "paid"),),
    (("paid", "paid"), ("payment_succeeded", "paid")),
    (("voided", "void"),),
    (("marked_uncollectible", "uncollectible"),),
    (("marked_uncollectible", "uncollectible"), ("paid", "paid")),
    (("marked_uncollectible", "uncollectible"), ("voided", "void")),
)


@st.composite
def invoice_history(draw: st.DrawFn, index: int, ids: Callable[[], str]) -> list[Logical]:
    invoice_id = f"in_prop{index}"
    invoice_created = sf.T0 + draw(st.integers(0, 40)) * DAY
    amount = 1000 * (index + 1)
    steps: list[tuple[str, str, int]] = []  # (kind, status, attempt_count)
    if draw(st.booleans()):
        steps.append(("created", "draft", 0))
    steps.append(("finalized", "open", 0))
    attempts = 0
    for _ in range(draw(st.integers(0, 3))):
        attempts += 1
        kind = draw(st.sampled_from(("payment_failed", "payment_failed", "payment_action_required")))
        steps.append((kind, "open", attempts))
    for kind, status in draw(st.sampled_from(ENDINGS)):
        steps.append((kind, status, attempts + (1 if status == "paid" else 0)))
    out = []
    t = invoice_created
    for n, (kind, status, attempt_count) in enumerate(steps):
        t += draw(GAPS) if n else 0
        fields = dict(
            created=t,
            invoice_id=invoice_id,
            customer=CUS,
            sub_id="sub_prop0",
            workspace_id=WS,
            status=status,
            amount_due=amount,
            amount_paid=amount if status == "paid" else 0,
            attempt_count=attempt_count,
            next_payment_attempt=t + 3 * DAY if status == "open" and attempt_count else None,
            invoice_created=invoice_created,
            lines=[("price_plus_monthly", index + 1, amount)],
        )
        event_id = ids()
        failure = kind in ("payment_failed", "payment_action_required")
        renderer = _invoice_renderer(kind, event_id, fields)
        out.append(Logical(event_id, t, renderer, invoice_id, status, failure))
    return out


def _invoice_renderer(kind: str, event_id: str, fields: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    return lambda version: sf.invoice_event(kind, api_version=version, event_id=event_id, **fields)


@st.composite
def workspace_history(draw: st.DrawFn) -> list[Logical]:
    counter = iter(range(1_000))

    def ids() -> str:
        # Stripe's event ids are random: their order must not follow the events' order.
        return f"evt_{draw(st.integers(0, 99_999)):05d}_{next(counter):03d}"

    events: list[Logical] = []
    for i in range(draw(st.integers(1, 2))):
        events += draw(subscription_history(i, ids))
    for i in range(draw(st.integers(0, 3))):
        events += draw(invoice_history(i, ids))
    # True order: by created; within one object the generation order (stable sort).
    return sorted(events, key=lambda e: e.created)


Delivery = tuple[Logical, str]  # (event, API version it is rendered in)


def fold(deliveries: Sequence[Delivery], now: datetime) -> WorkspaceState:
    cache: dict[tuple[str, str], BillingEvent] = {}
    events = []
    for logical, version in deliveries:
        key = (logical.event_id, version)
        if key not in cache:
            raw = logical.render(version)
            cache[key] = normalize(raw)
        events.append((logical.event_id, cache[key]))
    return fold_events(events, now)


def fold_events(events: Sequence[tuple[str, BillingEvent]], now: datetime) -> WorkspaceState:
    """Apply typed events in order; a re-delivery of an event id must change nothing."""
    state = WorkspaceState.new(WS)
    applied: set[str] = set()
    for event_id, event in events:
        outcome = apply_event(state, event, now, CATALOG)
        if event_id in applied:  # a re-delivery: nothing may change
            assert outcome.result == STALE, f"duplicate {event_id} was {outcome.result}"
            assert outcome.state.version == state.version
        applied.add(event_id)
        assert outcome.view == derive_view(outcome.state, CATALOG, now)
        state = outcome.state
    return state


def comparable(state: WorkspaceState, now: datetime) -> tuple[Any, ...]:
    """Everything but ``version``: the records and the view derived from them."""
    return (
        state.workspace_id,
        state.customer_id,
        dict(state.subscriptions),
        dict(state.invoices),
        derive_view(state, CATALOG, now),
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_order_and_duplication_gives_the_in_order_state(data: st.DataObject) -> None:
    history = data.draw(workspace_history(), label="history")
    versions = st.sampled_from(sf.API_VERSIONS)
    in_order: list[Delivery] = [(e, data.draw(versions)) for e in history]
    delivered = list(data.draw(st.permutations(in_order), label="order"))
    redeliveries = data.draw(
        st.lists(st.tuples(st.sampled_from(history), versions), max_size=len(history)),
        label="duplicates",
    )
    for duplicate in redeliveries:
        delivered.insert(data.draw(st.integers(0, len(delivered))), duplicate)
    last_created = max(e.created for e in history)
    now = sf.at(last_created + data.draw(st.sampled_from((0, 15 * DAY, 31 * DAY)), label="age"))

    expected = fold(in_order, now)
    actual = fold(delivered, now)
    assert comparable(actual, now) == comparable(expected, now)
    assert actual.version <= len(history)  # duplicates never bump it

    # And the state is the right one: each invoice ends in the status of its last event (ties
    # in ``created`` included: status only moves forward), with its first failure remembered.
    _assert_invoices_end_right(history, actual)


def _assert_invoices_end_right(history: Sequence[Logical], actual: WorkspaceState) -> None:
    for invoice_id in {e.object_id for e in history if e.object_id.startswith("in_")}:
        events = [e for e in history if e.object_id == invoice_id]
        record = actual.invoices[invoice_id]
        assert record.status == events[-1].status
        failures = [e.created for e in events if e.failure]
        assert record.first_failed_at == (sf.at(min(failures)) if failures else None)


def test_histories_from_the_factory_are_order_independent() -> None:
    """The ready-made histories other tests use, delivered backwards and twice."""
    for history in (
        sf.history_lifecycle(workspace_id=WS, customer=CUS),
        sf.history_payment_failure(workspace_id=WS, customer=CUS, failures=3, outcome="uncollectible"),
        sf.history_payment_failure(workspace_id=WS, customer=CUS, failures=2, outcome="paid"),
    ):
        logical = [Logical(raw["id"], raw["created"], lambda _v, raw=raw: raw) for raw in history]
        in_order = [(e, sf.ENDIVE) for e in logical]
        now = sf.at(max(e.created for e in logical) + DAY)
        backwards = in_order[::-1] + in_order
        assert comparable(fold(backwards, now), now) == comparable(fold(in_order, now), now)


# --- thin events mixed with snapshot events ----------------------------------------------------

CHANNELS = st.sampled_from(("snapshot", "thin", "both"))
# How long after an event its thin notification's related object is fetched (plus half a second).
FETCH_DELAYS = st.sampled_from((0, 0, 1, 59, 3600, DAY))


def _fetched_state(history: Sequence[Logical], logical: Logical, fetched_at: datetime) -> dict[str, Any]:
    """What Stripe answers for ``logical``'s object at ``fetched_at``: its latest state by then
    (the last event of that object, in true order, created before the fetch)."""
    latest = [e for e in history if e.object_id == logical.object_id and sf.at(e.created) <= fetched_at]
    return latest[-1].render(sf.ENDIVE)["data"]["object"]


def _thin_delivery(history: Sequence[Logical], logical: Logical, delay: int) -> tuple[str, BillingEvent]:
    snapshot = logical.render(sf.ENDIVE)
    notification = parse_thin(thin_of(snapshot))
    fetched_at = sf.at(logical.created + delay) + timedelta(milliseconds=500)
    obj = _fetched_state(history, logical, fetched_at)
    return notification.event_id, thin_observation(notification, obj, fetched_at, sf.ENDIVE)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_any_mix_of_thin_and_snapshot_events_in_any_order_gives_the_same_state(data: st.DataObject) -> None:
    """Each event reaches the worker as a snapshot, as a thin notification (its object fetched a
    while later: the history's latest state at fetch time), or both (two destinations); the
    deliveries in any order, with duplicates, give the state of the in-order delivery."""
    history = data.draw(workspace_history(), label="history")
    in_order: list[tuple[str, BillingEvent]] = []
    for logical in history:
        channel = data.draw(CHANNELS)
        if channel in ("snapshot", "both"):
            in_order.append(
                (logical.event_id, normalize(logical.render(data.draw(st.sampled_from(sf.API_VERSIONS)))))
            )
        if channel in ("thin", "both"):
            in_order.append(_thin_delivery(history, logical, data.draw(FETCH_DELAYS)))
    delivered = list(data.draw(st.permutations(in_order), label="order"))
    for duplicate in data.draw(
        st.lists(st.sampled_from(in_order), max_size=len(in_order)), label="duplicates"
    ):
        delivered.insert(data.draw(st.integers(0, len(delivered))), duplicate)
    now = sf.at(max(e.created for e in history) + 2 * DAY)

    expected = fold_events(in_order, now)
    actual = fold_events(delivered, now)
    assert comparable(actual, now) == comparable(expected, now)
    _assert_invoices_end_right(history, actual)
