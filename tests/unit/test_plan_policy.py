"""The plan-change policy, table-driven from the two articles in shared/policy-sources.

Each case cites the row of the article it encodes: the Yoom "Plan Change Timing Chart", ALLO's
"If a plan change fails" and "Before you change the plan" tables.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.catalog import GB, INTERVAL_MONTHS
from handlers.plan_policy import (
    AT_PERIOD_END,
    BLOCKED,
    CONTACT_SALES,
    IMMEDIATE,
    NO_CHANGE,
    ChangeRequest,
    decide,
    stripe_update_params,
)
from tests.support.policy_views import (
    CATALOG,
    INTERVALS,
    NAMES,
    NOW,
    PERIOD_END,
    open_invoice_block,
    req,
    view,
)


def parse(cell: str) -> tuple[str, str]:
    name, _, interval = cell.partition(" (")
    return NAMES[name], INTERVALS[interval.rstrip(")")]


# --------------------------------------------------------------- Yoom: Plan Change Timing Chart

YOOM_CHART = [
    # (row number, "Before plan | After Plan | When It Takes Effect" as in the article)
    (1, "Plus (Monthly) | Plus (Yearly) | Immediately"),
    (2, "Plus (Monthly) | Business (Yearly) | Immediately"),
    (3, "Plus (Monthly) | Business (Yearly) | Immediately"),  # the article lists this row twice
    (4, "Plus (Monthly) | Enterprise (Yearly) | Immediately"),
    (5, "Plus (Yearly) | Plus (Monthly) | After the contract ends"),
    (6, "Plus (Yearly) | Business (Monthly) | After the contract ends"),
    (7, "Plus (Yearly) | Business (Yearly) | Immediately"),
    (8, "Plus (Yearly) | Enterprise (Yearly) | Immediately"),
    (9, "Business (Monthly) | Plus (Monthly) | After the contract ends"),
    (10, "Business (Monthly) | Plus (Yearly) | After the contract ends"),
    (11, "Business (Monthly) | Business (Yearly) | Immediately"),
    (12, "Business (Monthly) | Enterprise (Yearly) | Immediately"),
    (13, "Business (Yearly) | Plus (Monthly) | After the contract ends"),
    (14, "Business (Yearly) | Plus (Yearly) | After the contract ends"),
    (15, "Business (Yearly) | Business (Monthly) | After the contract ends"),
    (16, "Business (Yearly) | Enterprise (Yearly) | Immediately"),
]


@pytest.mark.parametrize(("row", "text"), YOOM_CHART, ids=[f"yoom-row-{r}" for r, _ in YOOM_CHART])
def test_yoom_timing_chart(row: int, text: str):
    before, after, when = (c.strip() for c in text.split("|"))
    (p0, i0), (p1, i1) = parse(before), parse(after)
    decision = decide(view(p0, i0), req(p1, i1), NOW, CATALOG)
    if when == "Immediately":
        assert decision.kind == IMMEDIATE, (row, decision)
        assert decision.effective_at == NOW
    else:
        assert decision.kind == AT_PERIOD_END, (row, decision)
        assert decision.effective_at == PERIOD_END
        assert decision.proration_behavior == "none"  # the paid contract runs out on the old plan


@pytest.mark.parametrize("interval", ["Monthly", "Yearly"])
def test_yoom_enterprise_to_any_other_plan_after_the_contract_unless_upgrading(interval: str):
    """Rows 17-18: "Enterprise (Monthly|Yearly) | Any other plan | After the contract ends (unless upgrading)"."""
    current = view("enterprise", INTERVALS[interval])
    for plan, plan_def in CATALOG.plans.items():
        for target_interval in plan_def.prices or {None: None}:
            if (plan, target_interval) == ("enterprise", INTERVALS[interval]):
                continue
            decision = decide(current, req(plan, target_interval), NOW, CATALOG)
            longer = (
                plan == "enterprise"
                and INTERVAL_MONTHS[target_interval] > INTERVAL_MONTHS[INTERVALS[interval]]
            )
            expected = IMMEDIATE if longer else AT_PERIOD_END  # the only upgrade: a longer term
            assert decision.kind == expected, (plan, target_interval, decision)


def test_yoom_free_to_paid_is_immediate():
    """ "Upgrading from Free to a Paid Plan" — takes effect immediately, nothing to prorate."""
    decision = decide(view("free"), req("business", "monthly"), NOW, CATALOG)
    assert decision.kind == IMMEDIATE and decision.proration_behavior == "none"


def test_yoom_annual_to_annual_upgrade_keeps_the_contract_end_date():
    """ "From Annual (Lower Plan) → Annual (Higher Plan): … Contract end date stays the same.\""""
    current = view("plus", "annual")
    decision = decide(current, req("business", "annual"), NOW, CATALOG)
    assert decision.kind == IMMEDIATE and decision.billing_cycle_anchor == "unchanged"
    params = stripe_update_params(decision, current, req("business", "annual"), CATALOG, "si_1", "pc_1")
    assert params["billing_cycle_anchor"] == {"type": "unchanged"}  # endive object form
    assert params["items"] == [{"id": "si_1", "quantity": 5, "price": "price_business_annual"}]


def test_yoom_monthly_to_annual_starts_the_new_contract_now():
    """ "From Monthly to Annual: The new annual plan starts immediately.\""""
    decision = decide(view("plus", "monthly"), req("plus", "annual"), NOW, CATALOG)
    assert decision.kind == IMMEDIATE and decision.billing_cycle_anchor == "now"


def test_yoom_annual_to_six_month_waits_for_the_contract_end():
    """ "From Annual to Monthly or 6-Month: The new plan starts after the current annual contract ends.\""""
    decision = decide(view("business", "annual"), req("business", "six_month"), NOW, CATALOG)
    assert decision.kind == AT_PERIOD_END and decision.effective_at == PERIOD_END


def test_yoom_paid_to_free_ends_the_subscription_at_the_contract_end():
    """ "Downgrading from a Paid Plan to a Free Plan: the new plan starts the day after your current plan ends.\""""
    current = view("business", "annual")
    decision = decide(current, req("free", None, member_count=2), NOW, CATALOG)
    assert decision.kind == AT_PERIOD_END and decision.ends_subscription
    params = stripe_update_params(decision, current, req("free", None), CATALOG, "si_1", "pc_1")
    assert params == {"cancel_at_period_end": True, "metadata": {"plan_change_id": "pc_1"}}


def test_proration_follows_the_policy_setting():
    """ALLO proration through the provider vs Yoom's "No proration of base or license fees"."""
    provider = decide(view("plus", "monthly"), req("business", "monthly"), NOW, CATALOG)
    assert provider.proration_behavior == "create_prorations"
    yoom = replace(CATALOG, policy=replace(CATALOG.policy, proration="none"))
    assert decide(view("plus", "monthly"), req("business", "monthly"), NOW, yoom).proration_behavior == "none"


# --------------------------------------------------------------- ALLO: If a plan change fails

ALLO_FAILS = [
    "Checkout asks for payment verification | Your card or bank requires confirmation",
    "The current plan is disabled | You are already on that plan",
    "Upgrade is unavailable | You may not be an admin, or the workspace may use a custom contract",
    "Downgrade is blocked | Current seats, storage, or contract terms may not fit the lower plan",
    "Plan changed but the app still shows the old state | The page may have stale billing data loaded",
    "A payment banner remains after changing plan | There may still be an open invoice",
]


@pytest.mark.parametrize("row", ALLO_FAILS, ids=[f"allo-fails-{i}" for i in range(1, 7)])
def test_allo_if_a_plan_change_fails(row: str):
    symptom = row.split(" | ")[0]
    if symptom.startswith("Checkout asks"):
        d = decide(view("plus"), req("business", "monthly", has_payment_method=False), NOW, CATALOG)
        assert (d.kind, d.reasons) == (BLOCKED, ("payment_method_required",))
    elif symptom.startswith("The current plan"):
        d = decide(view("business", "monthly", seats=5), req("business", "monthly", seats=5), NOW, CATALOG)
        assert (d.kind, d.reasons) == (NO_CHANGE, ("current_plan",))
    elif symptom.startswith("Upgrade is unavailable"):
        d = decide(view("plus"), req("business", "monthly", requested_by_role="member"), NOW, CATALOG)
        assert (d.kind, d.reasons) == (BLOCKED, ("not_admin",))
        d = decide(view("plus", custom_contract=True), req("business", "monthly"), NOW, CATALOG)
        assert (d.kind, d.reasons) == (CONTACT_SALES, ("custom_contract",))
    elif symptom.startswith("Downgrade is blocked"):
        over = req("plus", "monthly", seats=12, member_count=12, storage_used_bytes=500 * GB)
        d = decide(view("business", "monthly", seats=12), over, NOW, CATALOG)
        assert (d.kind, d.reasons) == (BLOCKED, ("seats", "storage"))
    elif symptom.startswith("Plan changed but"):
        # The decision is taken on the workspace's state now, not on what a stale page showed:
        # asking again for the plan that was already applied changes nothing.
        d = decide(view("business", "monthly"), req("business", "monthly"), NOW, CATALOG)
        assert d.kind == NO_CHANGE
    else:
        d = decide(view("plus", block=open_invoice_block()), req("business", "monthly"), NOW, CATALOG)
        assert (d.kind, d.reasons) == (BLOCKED, ("open_invoice",))


# --------------------------------------------------------------- ALLO: Before you change the plan

ALLO_BEFORE = [
    "Current plan | The current plan option may be disabled because you are already on it.",
    "Seat count | A downgrade may not be possible until member count fits the new seat limit.",
    "Storage usage | A lower plan may not include enough storage for current files.",
    "Payment method | Upgrades and some renewals need a valid payment method.",
    "Trial or cancellation state | A trial, scheduled cancellation, or restart can change what action appears.",
    "Custom contract status | Some large enterprise, campus, government, university, institution, lab, or "
    "education contracts must use Contact Sales for plan, seat, or add-on changes.",
]


@pytest.mark.parametrize("row", ALLO_BEFORE, ids=[f"allo-before-{i}" for i in range(1, 7)])
def test_allo_before_you_change_the_plan(row: str):
    check = row.split(" | ")[0]
    if check == "Current plan":
        d = decide(view("plus", "annual"), req("plus", "annual"), NOW, CATALOG)
        assert (d.kind, d.reasons) == (NO_CHANGE, ("current_plan",))
    elif check == "Seat count":
        d = decide(view("business"), req("plus", "monthly", seats=11, member_count=11), NOW, CATALOG)
        assert (d.kind, d.reasons) == (BLOCKED, ("seats",))
        d = decide(view("business"), req("free", None, seats=1, member_count=4), NOW, CATALOG)
        assert (d.kind, d.reasons) == (BLOCKED, ("seats",))
        fits = decide(view("business"), req("plus", "monthly", seats=10, member_count=10), NOW, CATALOG)
        assert fits.kind == AT_PERIOD_END
    elif check == "Storage usage":
        d = decide(view("business"), req("plus", "monthly", storage_used_bytes=101 * GB), NOW, CATALOG)
        assert (d.kind, d.reasons) == (BLOCKED, ("storage",))
        # Storage add-ons stay with a paid plan, so they count toward the lower plan's quota.
        with_addon = view("business", storage_addon_units=1, storage_quota_bytes=1100 * GB)
        d = decide(with_addon, req("plus", "monthly", storage_used_bytes=150 * GB), NOW, CATALOG)
        assert d.kind == AT_PERIOD_END
    elif check == "Payment method":
        d = decide(view("free"), req("plus", "monthly", has_payment_method=False), NOW, CATALOG)
        assert (d.kind, d.reasons) == (BLOCKED, ("payment_method_required",))
        assert (
            decide(view("free"), req("plus", "monthly", has_payment_method=True), NOW, CATALOG).kind
            == IMMEDIATE
        )
    elif check == "Trial or cancellation state":
        trial = view("plus", status="trialing", trial_end=PERIOD_END)
        d = decide(trial, req("business", "monthly"), NOW, CATALOG)
        assert d.kind == IMMEDIATE and d.keeps_trial_end and d.proration_behavior == "none"
        canceling = view("business", "annual", cancel_at_period_end=True)
        d = decide(canceling, req("free", None), NOW, CATALOG)
        assert (d.kind, d.reasons) == (NO_CHANGE, ("cancellation_scheduled",))
        d = decide(canceling, req("enterprise", "annual"), NOW, CATALOG)
        assert d.kind == IMMEDIATE and d.clears_cancellation
        params = stripe_update_params(d, canceling, req("enterprise", "annual"), CATALOG, "si_1", "pc_1")
        assert params["cancel_at_period_end"] is False
    else:
        d = decide(view("enterprise", "annual", custom_contract=True), req("plus", "monthly"), NOW, CATALOG)
        assert (d.kind, d.reasons) == (CONTACT_SALES, ("custom_contract",))


def test_every_blocking_reason_that_applies_is_reported():
    everything = req(
        "plus",
        "monthly",
        seats=20,
        member_count=20,
        storage_used_bytes=900 * GB,
        requested_by_role="guest",
        has_payment_method=False,
    )
    d = decide(view("business", block=open_invoice_block()), everything, NOW, CATALOG)
    assert d.kind == BLOCKED
    # A downgrade charges nothing: no payment method is needed for it (ALLO: "Upgrades … need a
    # valid payment method").
    assert d.reasons == ("not_admin", "open_invoice", "seats", "storage")
    # An upgrade past the seat limit that also drops add-on storage below the files: all five.
    with_addons = view(
        "plus", block=open_invoice_block(), storage_addon_units=10, storage_quota_bytes=1100 * GB
    )
    upgrade = replace(
        everything, plan="business", seats=60, storage_used_bytes=1050 * GB, storage_addon_units=0
    )
    d = decide(with_addons, upgrade, NOW, CATALOG)
    assert d.reasons == ("not_admin", "open_invoice", "seats", "storage", "payment_method_required")


def test_seat_changes_on_the_same_plan():
    assert decide(view("plus", seats=5), req("plus", "monthly", seats=8), NOW, CATALOG).kind == IMMEDIATE
    down = decide(view("plus", seats=5), req("plus", "monthly", seats=4), NOW, CATALOG)
    assert down.kind == AT_PERIOD_END  # ALLO: "A lower future recurring quantity"


# --------------------------------------------------------------- property

PAID = [(p, i) for p, plan in CATALOG.plans.items() for i in plan.prices]
TARGETS = [*PAID, ("free", None)]


@settings(max_examples=400, deadline=None)
@given(
    current=st.sampled_from([*PAID, ("free", None)]),
    target=st.sampled_from(TARGETS),
    seats=st.integers(1, 60),
    new_seats=st.integers(1, 60),
    members=st.integers(0, 60),
    storage_gb=st.integers(0, 12000),
    status=st.sampled_from(["active", "trialing", "past_due"]),
    cancel=st.booleans(),
    blocked=st.booleans(),
    role=st.sampled_from(["workspace_admin", "billing_admin", "member", "guest"]),
    proration=st.sampled_from(["provider", "none"]),
)
def test_no_decision_is_an_immediate_downgrade_or_shorter_interval(
    current, target, seats, new_seats, members, storage_gb, status, cancel, blocked, role, proration
):
    catalog = replace(CATALOG, policy=replace(CATALOG.policy, proration=proration))
    (p0, i0), (p1, i1) = current, target
    v = view(p0, i0, seats, block=open_invoice_block() if blocked else None)
    if p0 != "free":
        v = replace(v, status=status, cancel_at_period_end=cancel)
    r = ChangeRequest(p1, i1, new_seats, role, members, storage_gb * GB)
    d = decide(v, r, NOW, catalog)
    if d.kind != IMMEDIATE or p0 == "free":
        return
    assert p1 != "free", d
    assert CATALOG.plans[p1].tier >= CATALOG.plans[p0].tier, d  # never an immediate downgrade
    assert INTERVAL_MONTHS[i1] >= INTERVAL_MONTHS[i0], d  # never immediate annual → monthly/6-month
