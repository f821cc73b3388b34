"""Property: any delivery order and any duplication of a workspace's events give the same state.

Histories are generated as real Stripe payloads (tests/support/stripe_factory.py, every event in a
randomly chosen API-version shape), normalised by handlers.normalize and folded with
handlers.reducer.apply_event — the path the worker takes. Re-deliveries may even come in another
API version (an endpoint upgraded in between): same event id, different shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.catalog import parse_catalog
from handlers.events import BillingEvent
from handlers.normalize import normalize
from handlers.reducer import STALE, apply_event
from handlers.state import WorkspaceState
from handlers.view import derive_view
from tests.support import stripe_factory as sf
from tests.support.paths import ROOT

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
        out.append(Logical(event_id, t, _subscription_renderer(kind, event_id, fields)))
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
    state = WorkspaceState.new(WS)
    cache: dict[tuple[str, str], BillingEvent] = {}
    applied: set[str] = set()
    for logical, version in deliveries:
        key = (logical.event_id, version)
        if key not in cache:
            raw = logical.render(version)
            cache[key] = normalize(raw)
        event = cache[key]
        outcome = apply_event(state, event, now, CATALOG)
        if logical.event_id in applied:  # a re-delivery: nothing may change
            assert outcome.result == STALE, f"duplicate {logical.event_id} was {outcome.result}"
            assert outcome.state.version == state.version
        applied.add(logical.event_id)
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
    for invoice_id in {e.object_id for e in history if e.object_id}:
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
