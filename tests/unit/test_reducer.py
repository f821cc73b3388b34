"""handlers.reducer.apply_event on normalised events: lifecycle, invoices, blocks, dunning."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from handlers.catalog import GB, Catalog
from handlers.events import BillingEvent, EventMeta, IgnoredEvent
from handlers.normalize import normalize
from handlers.reducer import (
    APPLIED,
    IGNORED,
    STALE,
    BlockApplied,
    BlockLevelChanged,
    BlockLifted,
    Outcome,
    RefetchRequested,
    apply_event,
    reevaluate,
)
from handlers.state import WorkspaceState
from tests.support import stripe_factory as sf
from tests.support.core import CATALOG, CUS, NOW, SUB, WS

T0 = sf.T0
DAY = sf.DAY


def at(offset_seconds: int) -> datetime:
    return sf.at(T0 + offset_seconds)


def sub_ev(
    kind: str,
    created: int,
    *,
    status: str = "active",
    items: Iterable[tuple[str, int]] = (("price_plus_monthly", 3),),
    sub_id: str = SUB,
    version: str = sf.ENDIVE,
    **kw: Any,
) -> BillingEvent:
    kw.setdefault("period_start", T0)
    kw.setdefault("period_end", sf.add_months(T0, 1))
    kw.setdefault("start_date", T0)
    return normalize(
        sf.subscription_event(
            kind,
            api_version=version,
            created=created,
            sub_id=sub_id,
            customer=CUS,
            workspace_id=WS,
            status=status,
            items=list(items),
            **kw,
        )
    )


def inv_ev(
    kind: str,
    created: int,
    status: str,
    *,
    invoice_id: str = "in_1",
    amount_due: int = 3000,
    version: str = sf.ENDIVE,
    **kw: Any,
) -> BillingEvent:
    kw.setdefault("invoice_created", T0)
    if status == "paid":
        kw.setdefault("amount_paid", amount_due)
    return normalize(
        sf.invoice_event(
            kind,
            api_version=version,
            created=created,
            invoice_id=invoice_id,
            customer=CUS,
            sub_id=SUB,
            workspace_id=WS,
            status=status,
            amount_due=amount_due,
            lines=[("price_plus_monthly", 3, amount_due)],
            **kw,
        )
    )


def fold(
    events: Iterable[BillingEvent],
    now: datetime = NOW,
    catalog: Catalog = CATALOG,
    state: WorkspaceState | None = None,
) -> tuple[WorkspaceState, list[Outcome]]:
    state = state or WorkspaceState.new(WS)
    outcomes = []
    for event in events:
        outcome = apply_event(state, event, now, catalog)
        outcomes.append(outcome)
        state = outcome.state
    return state, outcomes


# --- subscriptions --------------------------------------------------------------------------


@pytest.mark.parametrize("version", sf.API_VERSIONS)
def test_subscription_lifecycle(version: str) -> None:
    history = sf.history_lifecycle(api_version=version, workspace_id=WS, customer=CUS, sub_id=SUB)
    events = [normalize(raw) for raw in history]
    state = WorkspaceState.new(WS)
    views = []
    for event in events:
        outcome = apply_event(state, event, event.meta.created, CATALOG)
        assert outcome.result == APPLIED
        assert outcome.subscription is not None and outcome.state.version == state.version + 1
        state = outcome.state
        views.append(outcome.view)
    trial_end = T0 + 14 * DAY
    period_end = sf.add_months(trial_end, 1)

    created, trial_will_end, active, changed, cancel, deleted = views
    assert (created.plan, created.interval, created.seats, created.status) == (
        "plus",
        "monthly",
        3,
        "trialing",
    )
    assert created.trial_end == sf.at(trial_end)
    assert (created.period_start, created.period_end) == (sf.at(T0), sf.at(trial_end))
    assert created.storage_quota_bytes == 100 * GB and not created.blocked
    assert trial_will_end == created

    assert (active.status, active.plan, active.seats) == ("active", "plus", 3)
    assert (active.period_start, active.period_end) == (sf.at(trial_end), sf.at(period_end))

    assert (changed.plan, changed.interval, changed.seats) == ("business", "monthly", 5)
    assert changed.storage_quota_bytes == 1000 * GB
    assert not changed.cancel_at_period_end

    assert cancel.cancel_at_period_end and cancel.plan == "business" and cancel.status == "active"

    assert (deleted.plan, deleted.status, deleted.interval) == ("free", "canceled", None)
    assert (deleted.seats, deleted.storage_quota_bytes) == (3, 5 * GB)
    assert deleted.subscription_id == SUB and deleted.period_end is None
    assert not deleted.cancel_at_period_end
    assert state.version == len(events) and state.customer_id == CUS


def test_plan_change_is_read_from_the_price() -> None:
    state, outcomes = fold(
        [
            sub_ev("created", T0, items=[("price_plus_monthly", 4)]),
            sub_ev("updated", T0 + DAY, items=[("price_plus_annual", 4)]),
        ]
    )
    assert (outcomes[0].view.plan, outcomes[0].view.interval) == ("plus", "monthly")
    assert (outcomes[1].view.plan, outcomes[1].view.interval) == ("plus", "annual")
    assert outcomes[1].changes["interval"] == ("monthly", "annual")
    state, outcomes = fold(
        [sub_ev("updated", T0 + 2 * DAY, items=[("price_enterprise_annual", 20)])], state=state
    )
    assert (outcomes[0].view.plan, outcomes[0].view.seats) == ("enterprise", 20)
    assert outcomes[0].changes["plan"] == ("plus", "enterprise")


def test_storage_addon_units_raise_the_quota() -> None:
    _, (outcome,) = fold(
        [sub_ev("created", T0, items=[("price_plus_monthly", 2), ("price_storage_100gb", 3)])]
    )
    assert outcome.view.seats == 2
    assert outcome.view.storage_addon_units == 3
    assert outcome.view.storage_quota_bytes == 100 * GB + 3 * 100 * GB
    assert outcome.view.unknown_price_ids == ()


def test_unknown_price_is_reported() -> None:
    _, (outcome,) = fold([sub_ev("created", T0, items=[("price_from_another_catalog", 2)])])
    assert outcome.view.plan == "unknown"
    assert outcome.view.unknown_price_ids == ("price_from_another_catalog",)


def test_custom_contract_from_metadata() -> None:
    _, (outcome,) = fold(
        [sub_ev("created", T0, items=[("price_enterprise_annual", 30)], custom_contract=True)]
    )
    assert outcome.view.custom_contract


def test_cancel_at_period_end_then_deleted_goes_free() -> None:
    state, outcomes = fold(
        [
            sub_ev("created", T0),
            sub_ev("updated", T0 + DAY, cancel_at_period_end=True, canceled_at=T0 + DAY),
        ]
    )
    assert outcomes[1].view.cancel_at_period_end and outcomes[1].view.plan == "plus"
    assert outcomes[1].changes["cancel_at_period_end"] == (False, True)
    state, (deleted,) = fold(
        [sub_ev("deleted", T0 + 31 * DAY, status="canceled", canceled_at=T0 + DAY, ended_at=T0 + 31 * DAY)],
        state=state,
    )
    assert (deleted.view.plan, deleted.view.status) == ("free", "canceled")
    # A stale update delivered days later does not resurrect the subscription.
    _, (late,) = fold([sub_ev("updated", T0 + 2 * DAY)], state=state)
    assert late.result == STALE and late.state is state and late.view.plan == "free"


@pytest.mark.parametrize("deleted_first", [True, False])
def test_deletion_wins_a_tie_on_created(deleted_first: bool) -> None:
    updated = sub_ev("updated", T0 + DAY, status="active")
    deleted = sub_ev("deleted", T0 + DAY, status="canceled", ended_at=T0 + DAY)
    events = [deleted, updated] if deleted_first else [updated, deleted]
    state, outcomes = fold([sub_ev("created", T0), *events])
    assert outcomes[-1].view.status == "canceled" and outcomes[-1].view.plan == "free"
    assert state.subscriptions[SUB].snapshot.status == "canceled"


@pytest.mark.parametrize("seven_first", [True, False])
def test_different_snapshots_tied_on_created_ask_for_a_refetch(seven_first: bool) -> None:
    seven = sub_ev("updated", T0 + DAY, items=[("price_plus_monthly", 7)], event_id="evt_tie_a")
    three = sub_ev("updated", T0 + DAY, items=[("price_plus_monthly", 3)], event_id="evt_tie_b")
    pair = [seven, three] if seven_first else [three, seven]
    _, outcomes = fold([sub_ev("created", T0), *pair])
    # Whichever arrives second sees the tie (applied or stale, it asks either way).
    assert outcomes[-1].effects[-1:] == (RefetchRequested("subscription", SUB),)
    assert not any(isinstance(e, RefetchRequested) for o in outcomes[:-1] for e in o.effects)


def test_a_duplicate_or_identical_snapshot_is_not_a_tie() -> None:
    first = sub_ev("updated", T0 + DAY, event_id="evt_same_a")
    same_content = sub_ev("updated", T0 + DAY, event_id="evt_same_b")
    _, outcomes = fold([sub_ev("created", T0), first, first, same_content])
    assert all(not o.effects for o in outcomes)


def test_invoice_snapshots_tied_on_created_and_status_ask_for_a_refetch() -> None:
    a = inv_ev("payment_failed", T0 + DAY, "open", attempt_count=1, event_id="evt_inv_a")
    b = inv_ev("payment_failed", T0 + DAY, "open", attempt_count=2, event_id="evt_inv_b")
    _, outcomes = fold([a, b])
    assert RefetchRequested("invoice", "in_1") in outcomes[-1].effects
    paid = inv_ev("paid", T0 + DAY, "paid", event_id="evt_inv_c")  # status decides: no tie
    _, outcomes = fold([a, paid])
    assert not any(isinstance(e, RefetchRequested) for e in outcomes[-1].effects)


def test_a_new_subscription_replaces_a_canceled_one() -> None:
    _, outcomes = fold(
        [
            sub_ev("created", T0),
            sub_ev("deleted", T0 + DAY, status="canceled", ended_at=T0 + DAY),
            sub_ev(
                "created",
                T0 + 2 * DAY,
                sub_id="sub_new",
                items=[("price_business_monthly", 7)],
                start_date=T0 + 2 * DAY,
            ),
        ]
    )
    assert (outcomes[-1].view.plan, outcomes[-1].view.subscription_id) == ("business", "sub_new")


# --- invoices: forward-only -----------------------------------------------------------------


def test_paid_then_late_open_stays_paid() -> None:
    state, outcomes = fold(
        [
            inv_ev("finalized", T0 + 3600, "open"),
            inv_ev("paid", T0 + 7200, "paid"),
            inv_ev("finalized", T0 + 3600, "open"),  # re-delivered late
            inv_ev("updated", T0 + 9000, "open"),  # even a newer event cannot move it back
        ]
    )
    assert [o.result for o in outcomes] == [APPLIED, APPLIED, STALE, STALE]
    assert state.invoices["in_1"].status == "paid"
    assert outcomes[1].changes["invoice.in_1.status"] == ("open", "paid")


def test_void_is_final() -> None:
    state, outcomes = fold(
        [
            inv_ev("voided", T0 + 7200, "void"),
            inv_ev("finalized", T0 + 3600, "open"),
            inv_ev("payment_failed", T0 + 3700, "open", attempt_count=1),
            inv_ev("marked_uncollectible", T0 + 8000, "uncollectible"),
        ]
    )
    assert state.invoices["in_1"].status == "void"
    assert outcomes[0].view.block is None and outcomes[-1].view.block is None
    assert outcomes[1].result == STALE and outcomes[3].result == STALE
    # The failure is remembered (history), but the voided invoice blocks nothing.
    assert state.invoices["in_1"].first_failed_at == at(3700)


def test_uncollectible_then_paid_is_allowed_but_not_back() -> None:
    state, outcomes = fold(
        [
            inv_ev("finalized", T0, "open"),
            inv_ev("marked_uncollectible", T0 + 30 * DAY, "uncollectible"),
            inv_ev("paid", T0 + 40 * DAY, "paid"),
            inv_ev("marked_uncollectible", T0 + 30 * DAY, "uncollectible"),
        ]
    )
    assert [o.result for o in outcomes] == [APPLIED, APPLIED, APPLIED, STALE]
    assert state.invoices["in_1"].status == "paid"


def test_draft_open_paid_in_order() -> None:
    _, outcomes = fold(
        [
            inv_ev("created", T0, "draft"),
            inv_ev("finalized", T0 + 3600, "open"),
            inv_ev("payment_succeeded", T0 + 3700, "paid"),
            inv_ev("paid", T0 + 3700, "paid"),
        ]
    )
    assert [o.invoice.status for o in outcomes if o.invoice] == ["draft", "open", "paid", "paid"]


# --- open-invoice block ---------------------------------------------------------------------


def test_finalized_open_invoice_alone_does_not_block() -> None:
    _, (outcome,) = fold([inv_ev("finalized", T0, "open")])
    assert outcome.view.block is None and outcome.effects == ()


@pytest.mark.parametrize("kind", ["payment_failed", "payment_action_required"])
def test_failed_payment_on_open_invoice_blocks(kind: str) -> None:
    failed_at = T0 + 3600
    state, outcomes = fold(
        [
            sub_ev("created", T0),
            inv_ev("finalized", T0, "open"),
            inv_ev(kind, failed_at, "open", attempt_count=1),
        ],
        now=at(3600),
    )
    block = outcomes[-1].view.block
    assert block is not None
    assert block.level == "payment_issue"
    assert block.blocks == frozenset({"plan_changes", "seat_changes"})
    assert block.reasons == ("open_invoice",) and block.invoice_ids == ("in_1",)
    assert block.since == at(3600)
    assert outcomes[-1].effects == (BlockApplied("payment_issue"),)
    assert state.invoices["in_1"].first_failed_at == at(3600)
    assert outcomes[-1].view.plan == "plus"  # the plan itself is untouched


@pytest.mark.parametrize(
    ("kind", "status"),
    [("paid", "paid"), ("payment_succeeded", "paid"), ("voided", "void")],
)
def test_block_is_lifted_when_paid_or_voided(kind: str, status: str) -> None:
    _, outcomes = fold(
        [inv_ev("payment_failed", T0, "open", attempt_count=1), inv_ev(kind, T0 + DAY, status)],
        now=at(DAY),
    )
    assert outcomes[0].view.block is not None
    assert outcomes[1].view.block is None
    assert outcomes[1].effects == (BlockLifted("payment_issue"),)
    assert outcomes[1].changes["block"][1] is None


@pytest.mark.parametrize("blocks", [True, False])
def test_uncollectible_blocks_per_policy(blocks: bool) -> None:
    catalog = replace(CATALOG, policy=replace(CATALOG.policy, uncollectible_blocks=blocks))
    _, outcomes = fold(
        [
            inv_ev("payment_failed", T0, "open", attempt_count=1),
            inv_ev("marked_uncollectible", T0 + 20 * DAY, "uncollectible", attempt_count=4),
        ],
        now=at(20 * DAY),
        catalog=catalog,
    )
    if blocks:
        assert outcomes[1].view.block is not None
        assert outcomes[1].view.block.level == "restricted"  # 20 days since the first failure
    else:
        assert outcomes[1].view.block is None
        assert outcomes[1].effects == (BlockLifted("restricted"),)


def test_uncollectible_without_a_failure_blocks_when_configured() -> None:
    _, (outcome,) = fold([inv_ev("marked_uncollectible", T0, "uncollectible")], now=at(0))
    assert outcome.view.block is not None and outcome.view.block.level == "payment_issue"


def test_late_failure_after_payment_does_not_block() -> None:
    state, outcomes = fold(
        [inv_ev("paid", T0 + DAY, "paid"), inv_ev("payment_failed", T0, "open", attempt_count=1)],
        now=at(DAY),
    )
    assert outcomes[-1].view.block is None
    assert state.invoices["in_1"].status == "paid"
    assert state.invoices["in_1"].first_failed_at == at(0)  # history is kept


# --- dunning ladder -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age_days", "level"),
    [
        (0, "payment_issue"),
        (13, "payment_issue"),
        (14, "restricted"),
        (29, "restricted"),
        (30, "suspended"),
        (90, "suspended"),
    ],
)
def test_dunning_level_by_age_of_the_oldest_failure(age_days: int, level: str) -> None:
    events = [inv_ev("payment_failed", T0, "open", attempt_count=1)]
    _, (outcome,) = fold(events, now=at(age_days * DAY))
    assert outcome.view.block is not None and outcome.view.block.level == level
    if level == "suspended":
        assert "paid_features" in outcome.view.block.blocks


def test_sweep_escalates_with_time_and_reports_the_change() -> None:
    state, (first,) = fold([inv_ev("payment_failed", T0, "open", attempt_count=1)], now=at(0))
    stored = first.view
    swept = reevaluate(state, stored, at(13 * DAY), CATALOG)
    assert swept.result == STALE and swept.state.version == state.version
    swept = reevaluate(state, stored, at(14 * DAY), CATALOG)
    assert swept.result == APPLIED and swept.state.version == state.version + 1
    assert swept.effects == (BlockLevelChanged("payment_issue", "restricted"),)
    swept = reevaluate(swept.state, swept.view, at(31 * DAY), CATALOG)
    assert swept.effects == (BlockLevelChanged("restricted", "suspended"),)


def test_age_counts_from_the_oldest_unpaid_invoice() -> None:
    state, outcomes = fold(
        [
            inv_ev("payment_failed", T0, "open", invoice_id="in_old", attempt_count=1),
            inv_ev("payment_failed", T0 + 10 * DAY, "open", invoice_id="in_new", attempt_count=1),
        ],
        now=at(15 * DAY),
    )
    block = outcomes[-1].view.block
    assert block is not None and block.level == "restricted"
    assert block.invoice_ids == ("in_new", "in_old") and block.since == at(0)
    # Paying the oldest one leaves the newer (5 days old): back down to payment_issue.
    _, (paid,) = fold(
        [inv_ev("paid", T0 + 15 * DAY, "paid", invoice_id="in_old")], now=at(15 * DAY), state=state
    )
    assert paid.view.block is not None and paid.view.block.level == "payment_issue"
    assert paid.effects == (BlockLevelChanged("restricted", "payment_issue"),)


def test_event_processed_late_uses_the_injected_now() -> None:
    _, (outcome,) = fold([inv_ev("payment_failed", T0, "open", attempt_count=1)], now=at(31 * DAY))
    assert outcome.view.block is not None and outcome.view.block.level == "suspended"
    assert outcome.effects == (BlockApplied("suspended"),)


# --- duplicates and ignored types -----------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        sub_ev("created", T0),
        sub_ev("updated", T0 + DAY, status="past_due"),
        inv_ev("finalized", T0, "open"),
        inv_ev("payment_failed", T0, "open", attempt_count=1),
        inv_ev("paid", T0, "paid"),
        inv_ev("marked_uncollectible", T0, "uncollectible"),
    ],
    ids=lambda e: e.meta.event_type,
)
def test_duplicate_is_stale_and_keeps_the_version(event: BillingEvent) -> None:
    state, (first, second, third) = fold([event, event, event])
    assert first.result == APPLIED and first.state.version == 1
    assert second.result == STALE and third.result == STALE
    assert second.state is first.state and state.version == 1
    assert second.changes == {} and second.effects == ()


def test_same_event_in_another_api_version_is_a_duplicate() -> None:
    events = [inv_ev("payment_failed", T0, "open", attempt_count=1, version=v) for v in sf.API_VERSIONS]
    state, outcomes = fold(events)
    assert [o.result for o in outcomes] == [APPLIED, STALE, STALE]
    assert state.version == 1


def test_subscription_checkout_and_unknown_types_are_ignored() -> None:
    # A subscription-mode Checkout is told by its subscription events; packs are in test_credits.
    checkout = normalize(
        sf.checkout_completed_event(
            api_version=sf.ENDIVE,
            created=T0,
            session_id="cs_1",
            customer=CUS,
            workspace_id=WS,
            mode="subscription",
            price_quantities=(("price_plus_monthly", 3),),
        )
    )
    other = IgnoredEvent(EventMeta("evt_other", "customer.created", at(0)))
    state, outcomes = fold([sub_ev("created", T0), checkout, other])
    assert [o.result for o in outcomes] == [APPLIED, IGNORED, IGNORED]
    assert state.version == 1 and outcomes[2].state is outcomes[0].state


def test_outcome_hands_the_shell_the_records_to_write() -> None:
    _, (sub_outcome, inv_outcome) = fold([sub_ev("created", T0), inv_ev("finalized", T0, "open")])
    assert sub_outcome.subscription is not None and sub_outcome.invoice is None
    assert sub_outcome.subscription.observed_event_id.startswith("evt_")
    assert inv_outcome.invoice is not None and inv_outcome.subscription is None
    assert inv_outcome.invoice.snapshot.invoice_id == "in_1"
    assert inv_outcome.changes["invoice.in_1.status"] == (None, "open")


def test_now_must_not_matter_without_unpaid_invoices() -> None:
    events = [sub_ev("created", T0), inv_ev("paid", T0, "paid")]
    a, _ = fold(events, now=at(0))
    b, _ = fold(events, now=at(999 * DAY))
    assert a == b


@pytest.mark.parametrize(
    ("outcome", "status", "level"),
    [
        ("paid", "active", None),
        (None, "past_due", "payment_issue"),
        ("voided", "past_due", None),
        ("uncollectible", "unpaid", "payment_issue"),
    ],
)
def test_payment_failure_history(outcome: str | None, status: str, level: str | None) -> None:
    history = sf.history_payment_failure(
        workspace_id=WS, customer=CUS, sub_id=SUB, failures=2, outcome=outcome
    )
    events = [normalize(raw) for raw in history]
    assert [e.meta.event_type for e in events][:4] == [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.payment_failed",
    ]
    last = events[-1].meta.created
    state, outcomes = fold(events, now=last)
    assert all(o.result == APPLIED for o in outcomes)
    view = outcomes[-1].view
    assert (view.status, view.plan, view.seats) == (status, "plus", 4)
    assert (view.block.level if view.block else None) == level
    applied = [e for o in outcomes for e in o.effects]
    assert applied[0] == BlockApplied("payment_issue")
    if level is None:
        assert applied[-1] == BlockLifted("payment_issue")
    assert state.invoices["in_Dunning00001"].snapshot.attempt_count == (3 if outcome == "paid" else 2)
