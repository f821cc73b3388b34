"""Views, requests and the example catalog for the plan-policy unit tables (pure, no servers)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources

from handlers.catalog import GB, parse_catalog
from handlers.plan_policy import ChangeRequest
from handlers.state import Block, WorkspaceView

CATALOG = parse_catalog(
    resources.files("worker").joinpath("catalog.example.toml").read_text(encoding="utf-8"), "example"
)
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PERIOD_END = NOW + timedelta(days=40)
NAMES = {"Plus": "plus", "Business": "business", "Enterprise": "enterprise"}
INTERVALS = {"Monthly": "monthly", "Yearly": "annual"}


def view(plan: str = "plus", interval: str | None = "monthly", seats: int = 5, **kw) -> WorkspaceView:
    paid = plan != "free"
    base = WorkspaceView(
        plan=plan,
        interval=interval if paid else None,
        seats=seats,
        status="active" if paid else "free",
        subscription_id="sub_1" if paid else None,
        trial_end=None,
        period_start=NOW - timedelta(days=10) if paid else None,
        period_end=PERIOD_END if paid else None,
        cancel_at_period_end=False,
        custom_contract=False,
        storage_addon_units=0,
        storage_quota_bytes=CATALOG.plans[plan].storage_bytes,
        block=None,
    )
    return replace(base, **kw)


def req(plan: str, interval: str | None, seats: int = 5, **kw) -> ChangeRequest:
    base = ChangeRequest(plan, interval, seats, "workspace_admin", member_count=3, storage_used_bytes=GB)
    return replace(base, **kw)


def open_invoice_block() -> Block:
    return Block(
        "payment_issue", frozenset({"plan_changes", "seat_changes"}), ("open_invoice",), ("in_1",), NOW
    )
