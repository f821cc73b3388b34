"""The plan catalog: plans, their prices per interval, limits, add-ons, credit packs and policy.

Parsed from TOML text (reading the file is the shell's job). Every problem raises
``CatalogError`` naming the source, the key and what is wrong, so a bad deploy fails at start-up.
The field-by-field reference is docs/catalog.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

INTERVALS = ("monthly", "six_month", "annual")
INTERVAL_MONTHS = {"monthly": 1, "six_month": 6, "annual": 12}
BLOCKABLE = frozenset({"plan_changes", "seat_changes", "paid_features"})
PRORATION_MODES = ("provider", "none")
GB = 1024**3


class CatalogError(ValueError):
    """The catalog is malformed; the message names the file, the key and the problem."""


@dataclass(frozen=True)
class Plan:
    key: str
    name: str
    tier: int
    seat_limit: int | None  # None: unlimited
    storage_bytes: int
    ai_credits_per_cycle: int
    custom_contract: bool
    prices: Mapping[str, str]  # interval -> Stripe price id
    amounts: Mapping[str, int] = field(default_factory=dict)  # interval -> unit amount, minor units

    @property
    def is_free(self) -> bool:
        return not self.prices


@dataclass(frozen=True)
class StorageAddon:
    price_id: str
    unit_bytes: int
    amount: int | None = None  # unit amount per billing month, minor units (previews without Stripe)


@dataclass(frozen=True)
class CreditPack:
    price_id: str
    credits: int


@dataclass(frozen=True)
class DunningLevel:
    """A Kill Bill-style overdue state: entered when every condition it sets holds."""

    name: str
    after_days: int
    min_unpaid_invoices: int = 1
    min_unpaid_amount: int = 0
    blocks: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Policy:
    proration: str = "provider"
    fire_lead_seconds: int = 3600
    uncollectible_blocks: bool = True
    dunning: tuple[DunningLevel, ...] = (
        DunningLevel("payment_issue", 0, blocks=frozenset({"plan_changes", "seat_changes"})),
    )


@dataclass(frozen=True)
class PriceRef:
    """What a Stripe price id stands for."""

    kind: str  # "plan" | "storage_addon" | "credit_pack"
    plan: str | None = None
    interval: str | None = None


@dataclass(frozen=True)
class Catalog:
    plans: Mapping[str, Plan]
    storage_addons: tuple[StorageAddon, ...] = ()
    credit_packs: tuple[CreditPack, ...] = ()
    policy: Policy = field(default_factory=Policy)
    free_plan: str = "free"
    currency: str = "usd"  # the currency of ``amounts`` (previews that need no Stripe call)

    def price(self, price_id: str | None) -> PriceRef | None:
        return None if price_id is None else self._prices.get(price_id)

    @property
    def _prices(self) -> dict[str, PriceRef]:
        # Built lazily once per catalog; the dataclass is frozen so cache on the instance dict.
        cached = self.__dict__.get("_price_index")
        if cached is None:
            cached = {}
            for plan in self.plans.values():
                for interval, price_id in plan.prices.items():
                    cached[price_id] = PriceRef("plan", plan.key, interval)
            for addon in self.storage_addons:
                cached[addon.price_id] = PriceRef("storage_addon")
            for pack in self.credit_packs:
                cached[pack.price_id] = PriceRef("credit_pack")
            object.__setattr__(self, "_price_index", cached)
        return cached

    def storage_addon(self, price_id: str) -> StorageAddon | None:
        return next((a for a in self.storage_addons if a.price_id == price_id), None)

    def credit_pack(self, price_id: str) -> CreditPack | None:
        return next((p for p in self.credit_packs if p.price_id == price_id), None)


def parse_catalog(text: str, source: str = "<catalog>") -> Catalog:
    """Parse and validate catalog TOML; ``source`` names the file in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from None
    return _Parser(source).catalog(data)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> CatalogError:
        return CatalogError(f"{self.source}: {key}: {problem}")

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {type(value).__name__}")
        return value

    def known(self, table: dict[str, Any], key: str, allowed: set[str]) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def integer(
        self, table: dict[str, Any], name: str, key: str, default: int | None = None, minimum: int = 0
    ) -> int:
        value = table.get(name, default)
        if value is None:
            raise self.fail(f"{key}.{name}", "is required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{key}.{name}", f"must be an integer, got {value!r}")
        if value < minimum:
            raise self.fail(f"{key}.{name}", f"must be >= {minimum}, got {value}")
        return value

    def string(self, table: dict[str, Any], name: str, key: str, default: str | None = None) -> str:
        value = table.get(name, default)
        if not isinstance(value, str) or not value:
            raise self.fail(f"{key}.{name}", f"must be a non-empty string, got {value!r}")
        return value

    def boolean(self, table: dict[str, Any], name: str, key: str, default: bool) -> bool:
        value = table.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(f"{key}.{name}", f"must be true or false, got {value!r}")
        return value

    def catalog(self, data: dict[str, Any]) -> Catalog:
        self.known(data, "<root>", {"currency", "plans", "storage_addons", "credit_packs", "policy"})
        currency = self.string(data, "currency", "<root>", default="usd")
        if not currency.isascii() or not currency.isalpha() or len(currency) != 3:
            raise self.fail("currency", f"must be a three-letter ISO currency code, got {currency!r}")
        plans_table = self.table(data.get("plans"), "plans") if "plans" in data else None
        if not plans_table:
            raise self.fail("plans", "at least one plan is required")
        plans = {key: self.plan(key, self.table(v, f"plans.{key}")) for key, v in plans_table.items()}
        free = [p.key for p in plans.values() if p.is_free]
        if len(free) != 1:
            raise self.fail("plans", f"exactly one plan must have no prices (the free plan), found {free}")
        tiers: dict[int, str] = {}
        for plan in plans.values():
            if plan.tier in tiers:
                raise self.fail(
                    f"plans.{plan.key}.tier", f"tier {plan.tier} is also used by plans.{tiers[plan.tier]}"
                )
            tiers[plan.tier] = plan.key
        addons = tuple(
            self.addon(i, self.table(v, f"storage_addons[{i}]"))
            for i, v in enumerate(self.array(data, "storage_addons"))
        )
        packs = tuple(
            self.pack(i, self.table(v, f"credit_packs[{i}]"))
            for i, v in enumerate(self.array(data, "credit_packs"))
        )
        policy = self.policy(self.table(data.get("policy", {}), "policy"))
        catalog = Catalog(
            plans=plans,
            storage_addons=addons,
            credit_packs=packs,
            policy=policy,
            free_plan=free[0],
            currency=currency.lower(),
        )
        seen: dict[str, str] = {}
        for where, price_id in self.price_ids(catalog):
            if price_id in seen:
                raise self.fail(where, f"price id {price_id!r} is also used at {seen[price_id]}")
            seen[price_id] = where
        return catalog

    def array(self, data: dict[str, Any], key: str, where: str | None = None) -> list[Any]:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise self.fail(where or key, "must be an array of tables ([[...]])")
        return value

    def plan(self, key: str, t: dict[str, Any]) -> Plan:
        where = f"plans.{key}"
        self.known(
            t,
            where,
            {
                "name",
                "tier",
                "seat_limit",
                "storage_gb",
                "ai_credits_per_cycle",
                "custom_contract",
                "prices",
                "amounts",
            },
        )
        prices_table = self.table(t.get("prices", {}), f"{where}.prices")
        self.known(prices_table, f"{where}.prices", set(INTERVALS))
        prices = {
            interval: self.string(prices_table, interval, f"{where}.prices") for interval in prices_table
        }
        amounts_table = self.table(t.get("amounts", {}), f"{where}.amounts")
        self.known(amounts_table, f"{where}.amounts", set(prices))
        amounts = {
            interval: self.integer(amounts_table, interval, f"{where}.amounts") for interval in amounts_table
        }
        seat_limit = t.get("seat_limit")
        if seat_limit is not None:
            seat_limit = self.integer(t, "seat_limit", where, minimum=1)
        return Plan(
            key=key,
            name=self.string(t, "name", where, default=key.title()),
            tier=self.integer(t, "tier", where),
            seat_limit=seat_limit,
            storage_bytes=self.integer(t, "storage_gb", where) * GB,
            ai_credits_per_cycle=self.integer(t, "ai_credits_per_cycle", where, default=0),
            custom_contract=self.boolean(t, "custom_contract", where, default=False),
            prices=prices,
            amounts=amounts,
        )

    def addon(self, i: int, t: dict[str, Any]) -> StorageAddon:
        where = f"storage_addons[{i}]"
        self.known(t, where, {"price", "unit_gb", "amount"})
        amount = self.integer(t, "amount", where) if "amount" in t else None
        return StorageAddon(
            self.string(t, "price", where), self.integer(t, "unit_gb", where, minimum=1) * GB, amount
        )

    def pack(self, i: int, t: dict[str, Any]) -> CreditPack:
        where = f"credit_packs[{i}]"
        self.known(t, where, {"price", "credits"})
        return CreditPack(self.string(t, "price", where), self.integer(t, "credits", where, minimum=1))

    def policy(self, t: dict[str, Any]) -> Policy:
        self.known(t, "policy", {"proration", "fire_lead_seconds", "uncollectible_blocks", "dunning"})
        proration = self.string(t, "proration", "policy", default="provider")
        if proration not in PRORATION_MODES:
            raise self.fail("policy.proration", f"must be one of {PRORATION_MODES}, got {proration!r}")
        levels = Policy().dunning
        if "dunning" in t:
            levels = tuple(
                self.level(i, self.table(v, f"policy.dunning[{i}]"))
                for i, v in enumerate(self.array(t, "dunning", "policy.dunning"))
            )
            names = [lvl.name for lvl in levels]
            if len(set(names)) != len(names):
                raise self.fail("policy.dunning", f"level names must be unique, got {names}")
        return Policy(
            proration=proration,
            fire_lead_seconds=self.integer(t, "fire_lead_seconds", "policy", default=3600),
            uncollectible_blocks=self.boolean(t, "uncollectible_blocks", "policy", default=True),
            dunning=tuple(sorted(levels, key=lambda lvl: lvl.after_days)),
        )

    def level(self, i: int, t: dict[str, Any]) -> DunningLevel:
        where = f"policy.dunning[{i}]"
        self.known(t, where, {"name", "after_days", "min_unpaid_invoices", "min_unpaid_amount", "blocks"})
        blocks = t.get("blocks", [])
        if not isinstance(blocks, list) or not all(isinstance(b, str) for b in blocks):
            raise self.fail(f"{where}.blocks", "must be an array of strings")
        bad = sorted(set(blocks) - BLOCKABLE)
        if bad:
            raise self.fail(
                f"{where}.blocks", f"unknown {bad[0]!r} (allowed: {', '.join(sorted(BLOCKABLE))})"
            )
        return DunningLevel(
            name=self.string(t, "name", where),
            after_days=self.integer(t, "after_days", where),
            min_unpaid_invoices=self.integer(t, "min_unpaid_invoices", where, default=1, minimum=1),
            min_unpaid_amount=self.integer(t, "min_unpaid_amount", where, default=0),
            blocks=frozenset(blocks),
        )

    @staticmethod
    def price_ids(catalog: Catalog) -> list[tuple[str, str]]:
        out = [
            (f"plans.{p.key}.prices.{i}", pid) for p in catalog.plans.values() for i, pid in p.prices.items()
        ]
        out += [(f"storage_addons[{i}].price", a.price_id) for i, a in enumerate(catalog.storage_addons)]
        out += [(f"credit_packs[{i}].price", c.price_id) for i, c in enumerate(catalog.credit_packs)]
        return out
