"""handlers.catalog: the shipped example parses; malformed catalogs name file, key and problem."""

from __future__ import annotations

import pytest

from handlers.catalog import GB, CatalogError, PriceRef, parse_catalog
from tests.support.paths import ROOT

EXAMPLE = ROOT / "worker" / "catalog.example.toml"
SOURCE = "/etc/billing/catalog.toml"


def test_shipped_example_parses() -> None:
    catalog = parse_catalog(EXAMPLE.read_text(), str(EXAMPLE))
    assert set(catalog.plans) == {"free", "plus", "business", "enterprise"}
    assert catalog.free_plan == "free" and catalog.plans["free"].is_free
    assert [p.tier for p in catalog.plans.values()] == [0, 1, 2, 3]
    plus = catalog.plans["plus"]
    assert (plus.seat_limit, plus.storage_bytes, plus.ai_credits_per_cycle) == (10, 100 * GB, 500)
    assert set(plus.prices) == {"monthly", "six_month", "annual"}
    enterprise = catalog.plans["enterprise"]
    assert enterprise.seat_limit is None and set(enterprise.prices) == {"monthly", "annual"}
    assert catalog.price("price_business_6m") == PriceRef("plan", "business", "six_month")
    assert catalog.price("price_storage_100gb") == PriceRef("storage_addon")
    assert catalog.price("price_ai_pack_5000") == PriceRef("credit_pack")
    assert catalog.price("price_nope") is None and catalog.price(None) is None
    addon = catalog.storage_addon("price_storage_100gb")
    assert addon is not None and addon.unit_bytes == 100 * GB
    pack = catalog.credit_pack("price_ai_pack_1000")
    assert pack is not None and pack.credits == 1000
    policy = catalog.policy
    assert (policy.proration, policy.fire_lead_seconds, policy.uncollectible_blocks) == (
        "provider",
        3600,
        True,
    )
    assert [(lvl.name, lvl.after_days) for lvl in policy.dunning] == [
        ("payment_issue", 0),
        ("restricted", 14),
        ("suspended", 30),
    ]
    assert "paid_features" in policy.dunning[-1].blocks


def test_example_price_ids_match_the_factory_price_book() -> None:
    from tests.support.stripe_factory import PRICES

    catalog = parse_catalog(EXAMPLE.read_text(), str(EXAMPLE))
    for price_id in PRICES:
        assert catalog.price(price_id) is not None, price_id


MINIMAL = """
[plans.free]
tier = 0
storage_gb = 5

[plans.plus]
tier = 1
storage_gb = 100
prices = { monthly = "price_plus_monthly" }
"""


def test_minimal_catalog_uses_defaults() -> None:
    catalog = parse_catalog(MINIMAL, SOURCE)
    assert catalog.plans["plus"].name == "Plus"
    assert catalog.plans["plus"].seat_limit is None
    assert catalog.policy.dunning[0].name == "payment_issue"
    assert catalog.storage_addons == () and catalog.credit_packs == ()


PLUS = '[plans.plus]\ntier = 1\nstorage_gb = 100\nprices = { monthly = "price_plus_monthly" }\n'
FREE = "[plans.free]\ntier = 0\nstorage_gb = 5\n"

# (label, TOML text, key named in the message, problem named in the message)
BAD: list[tuple[str, str, str, str]] = [
    ("not toml", "plans = [", SOURCE, "not valid TOML"),
    ("unknown root key", MINIMAL + "\n[extras]\nx = 1\n", "<root>.extras", "unknown key"),
    ("no plans", "[policy]\nproration = 'none'\n", "plans", "at least one plan is required"),
    ("empty plans", "plans = {}\n", "plans", "at least one plan is required"),
    ("plans not a table", "plans = 3\n", "plans", "must be a table"),
    ("plan not a table", "[plans]\nfree = 1\n", "plans.free", "must be a table"),
    ("no free plan", PLUS, "plans", "exactly one plan must have no prices"),
    (
        "two free plans",
        FREE + "[plans.team]\ntier = 1\nstorage_gb = 5\n",
        "plans",
        "exactly one plan must have no prices",
    ),
    ("tier missing", FREE.replace("tier = 0\n", "") + PLUS, "plans.free.tier", "is required"),
    (
        "tier not int",
        FREE.replace("tier = 0", 'tier = "zero"') + PLUS,
        "plans.free.tier",
        "must be an integer",
    ),
    ("tier bool", FREE.replace("tier = 0", "tier = true") + PLUS, "plans.free.tier", "must be an integer"),
    ("tier float", FREE.replace("tier = 0", "tier = 0.5") + PLUS, "plans.free.tier", "must be an integer"),
    (
        "duplicate tier",
        FREE + PLUS.replace("tier = 1", "tier = 0"),
        "plans.plus.tier",
        "also used by plans.free",
    ),
    (
        "negative storage",
        FREE.replace("storage_gb = 5", "storage_gb = -1") + PLUS,
        "plans.free.storage_gb",
        ">= 0",
    ),
    ("storage missing", FREE.replace("storage_gb = 5\n", "") + PLUS, "plans.free.storage_gb", "is required"),
    ("seat limit zero", FREE + PLUS + "seat_limit = 0\n", "plans.plus.seat_limit", ">= 1"),
    ("unknown plan key", FREE + PLUS + 'colour = "blue"\n', "plans.plus.colour", "unknown key"),
    (
        "unknown interval",
        FREE + PLUS.replace("monthly =", "weekly ="),
        "plans.plus.prices.weekly",
        "unknown key",
    ),
    (
        "empty price id",
        FREE + PLUS.replace('"price_plus_monthly"', '""'),
        "plans.plus.prices.monthly",
        "must be a non-empty string",
    ),
    (
        "prices not table",
        FREE + PLUS.replace('{ monthly = "price_plus_monthly" }', '"p"'),
        "plans.plus.prices",
        "must be a table",
    ),
    (
        "custom_contract not bool",
        FREE + PLUS + 'custom_contract = "yes"\n',
        "plans.plus.custom_contract",
        "must be true or false",
    ),
    ("name empty", FREE + PLUS + 'name = ""\n', "plans.plus.name", "must be a non-empty string"),
    (
        "price id reused",
        FREE + PLUS + '[plans.team]\ntier = 2\nstorage_gb = 1\nprices = { annual = "price_plus_monthly" }\n',
        "plans.team.prices.annual",
        "also used at plans.plus.prices.monthly",
    ),
    ("addons not array", "storage_addons = 1\n" + MINIMAL, "storage_addons", "must be an array of tables"),
    ("addon not table", "storage_addons = [1]\n" + MINIMAL, "storage_addons[0]", "must be a table"),
    (
        "addon unit zero",
        MINIMAL + '[[storage_addons]]\nprice = "price_s"\nunit_gb = 0\n',
        "storage_addons[0].unit_gb",
        ">= 1",
    ),
    (
        "addon price missing",
        MINIMAL + "[[storage_addons]]\nunit_gb = 10\n",
        "storage_addons[0].price",
        "non-empty string",
    ),
    (
        "addon unknown key",
        MINIMAL + '[[storage_addons]]\nprice = "p"\nunit_gb = 1\ngb = 2\n',
        "storage_addons[0].gb",
        "unknown key",
    ),
    (
        "addon price reused",
        MINIMAL + '[[storage_addons]]\nprice = "price_plus_monthly"\nunit_gb = 10\n',
        "storage_addons[0].price",
        "also used at plans.plus.prices.monthly",
    ),
    (
        "pack credits missing",
        MINIMAL + '[[credit_packs]]\nprice = "price_pack"\n',
        "credit_packs[0].credits",
        "is required",
    ),
    (
        "pack credits zero",
        MINIMAL + '[[credit_packs]]\nprice = "p"\ncredits = 0\n',
        "credit_packs[0].credits",
        ">= 1",
    ),
    (
        "pack price reused",
        MINIMAL
        + '[[credit_packs]]\nprice = "p1"\ncredits = 1\n[[credit_packs]]\nprice = "p1"\ncredits = 2\n',
        "credit_packs[1].price",
        "also used at credit_packs[0].price",
    ),
    ("policy not table", "policy = 1\n" + MINIMAL, "policy", "must be a table"),
    ("policy unknown key", MINIMAL + "[policy]\nretries = 3\n", "policy.retries", "unknown key"),
    ("proration unknown", MINIMAL + '[policy]\nproration = "daily"\n', "policy.proration", "must be one of"),
    ("lead negative", MINIMAL + "[policy]\nfire_lead_seconds = -5\n", "policy.fire_lead_seconds", ">= 0"),
    (
        "uncollectible not bool",
        MINIMAL + '[policy]\nuncollectible_blocks = "no"\n',
        "policy.uncollectible_blocks",
        "must be true or false",
    ),
    (  # catalog.py names this key "dunning", without the "policy." prefix
        "dunning not array",
        MINIMAL + "[policy]\ndunning = 3\n",
        "dunning",
        "must be an array of tables",
    ),
    (
        "dunning name missing",
        MINIMAL + "[[policy.dunning]]\nafter_days = 1\n",
        "policy.dunning[0].name",
        "must be a non-empty string",
    ),
    (
        "dunning after_days missing",
        MINIMAL + '[[policy.dunning]]\nname = "late"\n',
        "policy.dunning[0].after_days",
        "is required",
    ),
    (
        "dunning blocks unknown",
        MINIMAL + '[[policy.dunning]]\nname = "late"\nafter_days = 1\nblocks = ["everything"]\n',
        "policy.dunning[0].blocks",
        "unknown 'everything'",
    ),
    (
        "dunning blocks not list",
        MINIMAL + '[[policy.dunning]]\nname = "late"\nafter_days = 1\nblocks = "plan_changes"\n',
        "policy.dunning[0].blocks",
        "must be an array of strings",
    ),
    (
        "dunning min invoices zero",
        MINIMAL + '[[policy.dunning]]\nname = "late"\nafter_days = 1\nmin_unpaid_invoices = 0\n',
        "policy.dunning[0].min_unpaid_invoices",
        ">= 1",
    ),
    (
        "dunning duplicate names",
        MINIMAL
        + '[[policy.dunning]]\nname = "late"\nafter_days = 1\n[[policy.dunning]]\nname = "late"\nafter_days = 9\n',
        "policy.dunning",
        "level names must be unique",
    ),
    (
        "dunning unknown key",
        MINIMAL + '[[policy.dunning]]\nname = "late"\nafter_days = 1\nemail = true\n',
        "policy.dunning[0].email",
        "unknown key",
    ),
]


@pytest.mark.parametrize(("label", "text", "key", "problem"), BAD, ids=[b[0] for b in BAD])
def test_malformed_catalog_names_file_key_and_problem(label: str, text: str, key: str, problem: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, SOURCE)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: "), message
    assert key in message, message
    assert problem in message, message
    assert isinstance(info.value, ValueError)


def test_dunning_levels_are_sorted_by_age() -> None:
    text = (
        MINIMAL
        + '[[policy.dunning]]\nname = "suspended"\nafter_days = 30\n'
        + '[[policy.dunning]]\nname = "payment_issue"\nafter_days = 0\nblocks = ["plan_changes"]\n'
    )
    catalog = parse_catalog(text, SOURCE)
    assert [lvl.name for lvl in catalog.policy.dunning] == ["payment_issue", "suspended"]
    assert catalog.policy.dunning[0].blocks == frozenset({"plan_changes"})
