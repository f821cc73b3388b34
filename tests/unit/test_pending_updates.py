"""Pending updates (``payment_behavior=pending_if_incomplete``): the view shows what the
subscription will become and until when, and clears it once it is applied or has expired."""

from __future__ import annotations

from datetime import timedelta
from itertools import permutations
from typing import Any

from handlers.normalize import normalize
from handlers.reducer import apply_event
from handlers.state import PendingUpdateView, WorkspaceState, WorkspaceView
from tests.support import stripe_factory as sf
from tests.support.core import CATALOG, CUS, SUB, WS

START = sf.T0
UPDATE_AT, SETTLED_AT = START + 3600, START + 7200
EXPIRES = UPDATE_AT + 23 * 3600
NOW = sf.at(SETTLED_AT + 60)  # before the pending update would expire
PLUS, BUSINESS = ("price_plus_monthly", 3), ("price_business_annual", 5)


def sub_event(kind: str, created: int, items: list[tuple[str, int]], **kw: Any) -> dict[str, Any]:
    return sf.subscription_event(
        kind,
        api_version=kw.pop("api_version", sf.ENDIVE),
        created=created,
        sub_id=SUB,
        customer=CUS,
        workspace_id=WS,
        status="active",
        items=items,
        period_start=START,
        period_end=sf.add_months(START, 1),
        **kw,
    )


def pending(items: list[tuple[str, int]] | None, version: str = sf.ENDIVE, **kw: Any) -> dict[str, Any]:
    return sf.pending_update_object(api_version=version, sub_id=SUB, items=items, expires_at=EXPIRES, **kw)


def view_after(*raws: dict[str, Any], now: Any = NOW) -> WorkspaceView:
    state = WorkspaceState.new(WS)
    for raw in raws:
        state = apply_event(state, normalize(raw), now, CATALOG).state
    return apply_event(state, normalize(raws[-1]), now, CATALOG).view


CREATED = sub_event("created", START, [PLUS])
WAITING = sub_event("updated", UPDATE_AT, [PLUS], pending_update=pending([BUSINESS]))
APPLIED = sub_event("pending_update_applied", SETTLED_AT, [BUSINESS])
EXPIRED = sub_event("pending_update_expired", SETTLED_AT, [PLUS])


def test_a_waiting_update_is_shown_beside_the_current_plan() -> None:
    for version in sf.API_VERSIONS:
        raw = sub_event(
            "updated", UPDATE_AT, [PLUS], pending_update=pending([BUSINESS], version), api_version=version
        )
        view = view_after(CREATED, raw)
        assert (view.plan, view.interval, view.seats) == ("plus", "monthly", 3)
        assert view.pending_update == PendingUpdateView("business", "annual", 5, sf.at(EXPIRES), None)


def test_applied_shows_the_new_plan_and_clears_the_update() -> None:
    view = view_after(CREATED, WAITING, APPLIED)
    assert (view.plan, view.interval, view.seats, view.pending_update) == ("business", "annual", 5, None)


def test_expired_keeps_the_plan_and_clears_the_update() -> None:
    view = view_after(CREATED, WAITING, EXPIRED)
    assert (view.plan, view.seats, view.pending_update) == ("plus", 3, None)


def test_the_settling_events_clear_the_update_whatever_their_payload_still_says() -> None:
    stale_payload = sub_event(
        "pending_update_expired", SETTLED_AT, [PLUS], pending_update=pending([BUSINESS])
    )
    assert view_after(CREATED, WAITING, stale_payload).pending_update is None


def test_an_update_past_its_expiry_is_no_longer_shown() -> None:
    assert view_after(CREATED, WAITING, now=sf.at(EXPIRES)).pending_update is None
    assert view_after(CREATED, WAITING, now=sf.at(EXPIRES) - timedelta(seconds=1)).pending_update is not None


def test_an_update_without_items_keeps_plan_and_seats() -> None:
    trial = sub_event("updated", UPDATE_AT, [PLUS], pending_update=pending(None, trial_end=EXPIRES))
    assert view_after(CREATED, trial).pending_update == PendingUpdateView(
        "plus", "monthly", 3, sf.at(EXPIRES), sf.at(EXPIRES)
    )


def test_any_order_gives_the_state_of_the_latest_observation() -> None:
    for history, expected in (
        ((CREATED, WAITING, APPLIED), "business"),
        ((CREATED, WAITING, EXPIRED), "plus"),
    ):
        views = set()
        for order in permutations(history):
            state = WorkspaceState.new(WS)
            for raw in [*order, *order]:  # with every event delivered twice
                state = apply_event(state, normalize(raw), NOW, CATALOG).state
            view = apply_event(state, normalize(history[0]), NOW, CATALOG).view
            views.add((view.plan, view.pending_update))
        assert views == {(expected, None)}
