"""Shared data of the pure-core tests: the example catalog, one workspace's ids, a ``NOW`` after
every factory event, and the records real histories go through."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from handlers.catalog import parse_catalog
from handlers.normalize import normalize
from handlers.reducer import apply_event
from handlers.state import WorkspaceState
from tests.support import stripe_factory as sf
from tests.support.paths import EXAMPLE_CATALOG
from worker.services import load_catalog

CATALOG = parse_catalog(EXAMPLE_CATALOG.read_text(), str(EXAMPLE_CATALOG))
WS, CUS, SUB = "ws_r", "cus_r", "sub_r"
NOW = sf.at(sf.T0 + 400 * sf.DAY)  # after every event of the reducer tests


def history_records() -> list[Any]:
    """Every state, view, subscription and invoice record a few real histories go through."""
    catalog = load_catalog(None)
    events = [
        *sf.history_lifecycle(storage_units=2),
        *sf.history_payment_failure(failures=3, outcome=None, workspace_id="ws_lifecycle"),
    ]
    state = WorkspaceState.new("ws_lifecycle")
    records: list[Any] = []
    for raw in sorted(events, key=lambda e: e["created"]):
        now = sf.at(raw["created"]) + timedelta(days=20, microseconds=123_456)
        outcome = apply_event(state, normalize(raw), now, catalog)
        state = outcome.state
        records += [outcome.view, outcome.subscription, outcome.invoice]
        records += [*state.subscriptions.values(), *state.invoices.values()]
    return [r for r in records if r is not None]
