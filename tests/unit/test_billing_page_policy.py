"""The Billing page's decisions, table-driven from ALLO's article (shared/policy-sources/
allo-change-the-plan.txt): the three rules that used to diverge, storage add-on changes, when a
payment method is required, plan options, invoice-preview parameters and checkout. Each row
quotes the article line it encodes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from handlers.catalog import GB
from handlers.checkout import ALLOWED, SUBSCRIPTION_EXISTS, CheckoutRequest, decide_checkout, session_params
from handlers.invoice_preview import catalog_preview, preview_params, summarize
from handlers.plan_options import OptionsRequest, plan_options
from handlers.plan_policy import AT_PERIOD_END, BLOCKED, IMMEDIATE, NO_CHANGE, decide, stripe_update_params
from handlers.update_outcome import payment_wait
from tests.support.policy_views import CATALOG, NOW, PERIOD_END, open_invoice_block, req, view

OVER_SEAT = (
    "If you change plans and the member count still exceeds the new seat limit, the warning may remain."
)
ADD_SEATS = "If ALLO shows an over-seat warning, add seats or reduce member count."
DOWNGRADE_FIT = "A downgrade may not be possible until member count fits the new seat limit."
UPGRADES_PAY = "Upgrades and some renewals need a valid payment method."
OPEN_INVOICE = "If the workspace has a failed or open invoice, ALLO may require that invoice to be paid before a plan update can continue."
STORAGE_ADDON = "Buy or change a storage add-on | A prorated charge or credit for the recurring storage tier"

# (article line, current view kwargs, request, expected kind, expected reasons)
SEAT_RULES = [
    (
        OVER_SEAT,
        dict(plan="business", interval="monthly", seats=6),
        req("enterprise", "monthly", 7, member_count=8),
        IMMEDIATE,
        (),
    ),
    (
        ADD_SEATS,
        dict(plan="business", interval="monthly", seats=6),
        req("business", "monthly", 7, member_count=8),
        IMMEDIATE,
        (),
    ),
    (
        DOWNGRADE_FIT,
        dict(plan="business", interval="monthly", seats=8),
        req("plus", "monthly", 7, member_count=8),
        BLOCKED,
        ("seats",),
    ),
    (
        DOWNGRADE_FIT,
        dict(plan="business", interval="monthly", seats=8),
        req("business", "monthly", 7, member_count=8),
        BLOCKED,
        ("seats",),
    ),
    (
        DOWNGRADE_FIT,
        dict(plan="business", interval="monthly", seats=8),
        req("free", None, 1, member_count=4),
        BLOCKED,
        ("seats",),
    ),
    (
        DOWNGRADE_FIT,
        dict(plan="business", interval="monthly", seats=8),
        req("business", "monthly", 7, member_count=7),
        AT_PERIOD_END,
        (),
    ),
    (
        "Seat count | paid seats above the plan's seat limit",
        dict(plan="plus", interval="monthly", seats=5),
        req("plus", "monthly", 11, member_count=3),
        BLOCKED,
        ("seats",),
    ),
]
PAYMENT_RULES = [
    (
        UPGRADES_PAY,
        dict(plan="plus"),
        req("business", "monthly", has_payment_method=False),
        BLOCKED,
        ("payment_method_required",),
    ),
    (
        UPGRADES_PAY,
        dict(plan="free", interval=None),
        req("plus", "monthly", has_payment_method=False),
        BLOCKED,
        ("payment_method_required",),
    ),
    (
        UPGRADES_PAY,
        dict(plan="plus", seats=5),
        req("plus", "monthly", 8, has_payment_method=False),
        BLOCKED,
        ("payment_method_required",),
    ),
    (
        UPGRADES_PAY + " (a downgrade is not one)",
        dict(plan="business"),
        req("plus", "monthly", has_payment_method=False),
        AT_PERIOD_END,
        (),
    ),
    (
        UPGRADES_PAY + " (fewer seats)",
        dict(plan="plus", seats=5),
        req("plus", "monthly", 4, has_payment_method=False),
        AT_PERIOD_END,
        (),
    ),
    (
        UPGRADES_PAY + " (a shorter interval)",
        dict(plan="plus", interval="annual"),
        req("plus", "monthly", has_payment_method=False),
        AT_PERIOD_END,
        (),
    ),
    (
        UPGRADES_PAY + " (a trial owes nothing yet)",
        dict(plan="plus", status="trialing"),
        req("business", "monthly", has_payment_method=False),
        IMMEDIATE,
        (),
    ),
]
_SEATS_ONLY = frozenset({"seat_changes"})
_PLANS_ONLY = frozenset({"plan_changes"})
DUNNING_RULES = [
    (
        OPEN_INVOICE + " (seat_changes blocks a seat change)",
        _SEATS_ONLY,
        req("plus", "monthly", 8),
        BLOCKED,
        ("open_invoice",),
    ),
    (
        OPEN_INVOICE + " (seat_changes leaves a plan change)",
        _SEATS_ONLY,
        req("business", "monthly", 5),
        IMMEDIATE,
        (),
    ),
    (
        OPEN_INVOICE + " (plan_changes blocks a plan change)",
        _PLANS_ONLY,
        req("business", "monthly", 5),
        BLOCKED,
        ("open_invoice",),
    ),
    (
        OPEN_INVOICE + " (plan_changes leaves a seat change)",
        _PLANS_ONLY,
        req("plus", "monthly", 8),
        IMMEDIATE,
        (),
    ),
    (
        OPEN_INVOICE + " (a plan and seat change falls under both)",
        _SEATS_ONLY,
        req("business", "monthly", 8),
        BLOCKED,
        ("open_invoice",),
    ),
    (
        OPEN_INVOICE + " (add-ons are plan changes)",
        _PLANS_ONLY,
        req("plus", "monthly", 5, storage_addon_units=1),
        BLOCKED,
        ("open_invoice",),
    ),
]
ADDON_RULES = [
    (STORAGE_ADDON + " (buy)", dict(), req("plus", "monthly", storage_addon_units=2), IMMEDIATE, ()),
    (
        STORAGE_ADDON + " (remove, files fit)",
        dict(storage_addon_units=2, storage_quota_bytes=300 * GB),
        req("plus", "monthly", storage_addon_units=0),
        IMMEDIATE,
        (),
    ),
    (
        STORAGE_ADDON + " (remove, files do not fit)",
        dict(storage_addon_units=2, storage_quota_bytes=300 * GB),
        req("plus", "monthly", storage_used_bytes=250 * GB, storage_addon_units=0),
        BLOCKED,
        ("storage",),
    ),
    (
        STORAGE_ADDON + " (more, still over quota: the warning stays)",
        dict(),
        req("plus", "monthly", storage_used_bytes=500 * GB, storage_addon_units=1),
        IMMEDIATE,
        (),
    ),
    (
        STORAGE_ADDON + " (the same units)",
        dict(storage_addon_units=2, storage_quota_bytes=300 * GB),
        req("plus", "monthly", storage_addon_units=2),
        NO_CHANGE,
        ("current_plan",),
    ),
    (
        "Custom contract status | … must use Contact Sales for plan, seat, or add-on changes.",
        dict(custom_contract=True),
        req("plus", "monthly", storage_addon_units=1),
        "contact_sales",
        ("custom_contract",),
    ),
]


def _rows(rows):
    return pytest.mark.parametrize(
        ("line", "current", "request_", "kind", "reasons"), rows, ids=[f"{i}" for i in range(len(rows))]
    )


@_rows(SEAT_RULES + PAYMENT_RULES + ADDON_RULES)
def test_allo_rules(line, current, request_, kind, reasons):
    d = decide(view(**current), request_, NOW, CATALOG)
    assert (d.kind, d.reasons) == (kind, reasons), line


@_rows(DUNNING_RULES)
def test_each_dunning_block_name_blocks_what_it_says(line, current, request_, kind, reasons):
    block = replace(open_invoice_block(), blocks=current)
    d = decide(view("plus", "monthly", 5, block=block), request_, NOW, CATALOG)
    assert (d.kind, d.reasons) == (kind, reasons), line


def test_add_on_update_items_and_a_combined_change_in_one_update():
    """ "Storage add-ons renew with the subscription until changed or removed": item quantity, delete or add."""
    with_addon = view("plus", storage_addon_units=2, storage_quota_bytes=300 * GB)
    r = req("plus", "monthly", storage_addon_units=0)
    params = stripe_update_params(
        decide(with_addon, r, NOW, CATALOG), with_addon, r, CATALOG, "si_plan", "pc_1", "si_add"
    )
    assert params["items"] == [{"id": "si_add", "deleted": True}]
    r = req("business", "monthly", storage_addon_units=3)
    params = stripe_update_params(
        decide(view("plus"), r, NOW, CATALOG), view("plus"), r, CATALOG, "si_plan", "pc_1"
    )
    assert params["items"] == [
        {"id": "si_plan", "quantity": 5, "price": "price_business_monthly"},
        {"price": "price_storage_100gb", "quantity": 3},
    ]


def test_a_new_contract_invoiced_now_waits_for_payment_and_a_proration_date_is_kept():
    """ "Switch monthly to annual: A new annual invoice" — sent pending_if_incomplete; a preview's date is reused."""
    r = req("plus", "annual", proration_date=1_800_000_000)
    d = decide(view("plus"), r, NOW, CATALOG)
    params = stripe_update_params(d, view("plus"), r, CATALOG, "si_1", "pc_1")
    assert params["payment_behavior"] == "pending_if_incomplete" and params["proration_date"] == 1_800_000_000
    yoom = replace(CATALOG, policy=replace(CATALOG.policy, proration="none"))
    params = stripe_update_params(decide(view("plus"), r, NOW, yoom), view("plus"), r, yoom, "si_1", "pc_1")
    assert "proration_date" not in params  # Stripe refuses a proration date with proration none


def test_plan_options_one_per_plan_and_offered_interval():
    """ "If monthly and annual intervals are available, ALLO shows the options the workspace can use.\""""
    found = plan_options(view("plus", "annual"), OptionsRequest("workspace_admin", 3, GB), NOW, CATALOG)
    keys = [(o.plan, o.interval) for o in found.options]
    assert keys[0] == ("free", None) and ("enterprise", "six_month") not in keys and len(keys) == 9
    by_key = {(o.plan, o.interval): o.decision.kind for o in found.options}
    assert by_key[("plus", "annual")] == NO_CHANGE and by_key[("plus", "monthly")] == AT_PERIOD_END
    custom = plan_options(
        view("plus", custom_contract=True), OptionsRequest("workspace_admin", 3, GB), NOW, CATALOG
    )
    assert custom.contact_sales  # "… and any Contact Sales path"


def test_preview_parameters_are_the_update_acting_sends():
    """ "ALLO prepares an invoice preview before applying a plan, seat, billing interval, or recurring add-on change.\""""
    r = req("business", "monthly", storage_addon_units=1)
    d = decide(view("plus"), r, NOW, CATALOG)
    p = preview_params(d, view("plus"), r, CATALOG, "cus_1", ("si_1", None), NOW)
    assert (
        p["subscription_details"]["items"]
        == stripe_update_params(d, view("plus"), r, CATALOG, "si_1", "x")["items"]
    )
    assert p["subscription_details"]["proration_date"] == int(NOW.timestamp())
    assert p["subscription_details"]["billing_cycle_anchor"] == {"type": "unchanged"}
    later = decide(view("business"), req("plus", "monthly"), NOW, CATALOG)
    p = preview_params(later, view("business"), req("plus", "monthly"), CATALOG, "cus_1", ("si_1", None), NOW)
    assert (
        p["subscription_details"]["proration_behavior"] == "none"
        and "proration_date" not in p["subscription_details"]
    )
    assert (
        preview_params(
            decide(view("free"), req("plus", "monthly"), NOW, CATALOG),
            view("free"),
            req("plus", "monthly"),
            CATALOG,
            None,
            (None, None),
            NOW,
        )
        is None
    )


def test_free_to_paid_is_previewed_from_the_catalog():
    """ "Moving from Free … to a paid plan can behave differently": no subscription, the catalog's price."""
    preview = catalog_preview(req("business", "annual", 3, storage_addon_units=1), CATALOG, NOW)
    assert preview["amount_due_now"] == 19_200 * 3 + 500 * 12 and preview["currency"] == "usd"
    assert preview["lines"][0]["period"]["end"] == "2027-11-22T12:00:00Z"


def test_summary_of_a_stripe_preview():
    """ "The invoice preview is the source of truth": amounts and lines as Stripe computed them."""
    line = {
        "amount": -50,
        "quantity": 5,
        "period": {"start": 1, "end": 2},
        "parent": {"subscription_item_details": {"proration": True}},
    }
    renewal = {
        "amount": 900,
        "quantity": 5,
        "period": {"start": 2, "end": 3},
        "pricing": {"price_details": {"price": "price_x"}},
    }
    invoice = {"currency": "usd", "amount_due": 850, "lines": {"data": [line, renewal]}}
    d = decide(view("plus"), req("business", "monthly"), NOW, CATALOG)
    out = summarize(invoice, d, 7)
    assert (
        out["amount_due_now"] == 0 and out["next_invoice"]["amount_due"] == 850 and out["proration_date"] == 7
    )
    assert [ln["proration"] for ln in out["lines"]] == [True, False] and out["lines"][1]["price"] == "price_x"
    assert out["next_invoice"]["period_start"] == datetime.fromtimestamp(2, UTC).isoformat().replace(
        "+00:00", "Z"
    )


CHECKOUT = CheckoutRequest(
    "subscription", "https://a.example/ok", "https://a.example/no", "workspace_admin", "plus", "monthly", 3
)


@pytest.mark.parametrize(
    ("line", "current", "request_", "kind"),
    [
        ("Available on | Free, trial, and paid workspaces", view("free"), CHECKOUT, ALLOWED),
        (
            "Who can change a plan | Workspace admins or billing admins",
            view("free"),
            replace(CHECKOUT, requested_by_role="member"),
            BLOCKED,
        ),
        (
            "Custom contracts | … may show Contact Sales instead of checkout",
            view("free", custom_contract=True),
            CHECKOUT,
            "contact_sales",
        ),
        (
            "Plan changes of a paid workspace go through the plan-change endpoint",
            view("plus"),
            CHECKOUT,
            SUBSCRIPTION_EXISTS,
        ),
        (
            "… or restart: an ended subscription checks out again",
            view("free", status="canceled", subscription_id="sub_old"),
            CHECKOUT,
            ALLOWED,
        ),
        (
            "Buy an AI credit pack | A one-time charge for AI credits",
            view("plus"),
            replace(CHECKOUT, kind="credit_pack", price="price_ai_pack_1000"),
            ALLOWED,
        ),
    ],
)
def test_checkout(line, current, request_, kind):
    assert decide_checkout(current, request_, NOW, CATALOG).kind == kind, line


def test_checkout_session_params_map_every_webhook_to_the_workspace():
    params = session_params("ws_1", None, CHECKOUT, CATALOG)
    assert params["metadata"] == params["subscription_data"]["metadata"] == {"workspace_id": "ws_1"}
    assert params["client_reference_id"] == "ws_1" and params["line_items"] == [
        {"price": "price_plus_monthly", "quantity": 3}
    ]


def test_payment_wait_from_stripes_answer():
    assert payment_wait({"pending_update": None}) is None
    wait = payment_wait({"pending_update": {"expires_at": 0}, "latest_invoice": "in_1"})
    assert wait == {
        "waiting_for": "payment",
        "expires_at": "1970-01-01T00:00:00Z",
        "latest_invoice": "in_1",
        "invoice_status": None,
    }
    assert PERIOD_END > NOW
