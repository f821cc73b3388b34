"""``evolve`` must be ``dataclasses.replace`` for the reducer's records, only faster."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from handlers.evolve import evolve
from handlers.state import Block, Usage, WorkspaceState, WorkspaceView

T = datetime(2026, 11, 1, tzinfo=UTC)
VIEW = WorkspaceView(
    plan="plus",
    interval="month",
    seats=5,
    status="active",
    subscription_id="sub_1",
    trial_end=None,
    period_start=T,
    period_end=T,
    cancel_at_period_end=False,
    custom_contract=False,
    storage_addon_units=0,
    storage_quota_bytes=10,
    block=Block("warning", frozenset({"upgrade"}), ("failed",), ("in_1",), T),
)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"seats": 7},
        {"members": 9, "over_seat_limit": True, "block": None},
        {"unknown_price_ids": ("price_x",), "ai_credit_balance": 300},
    ],
)
def test_evolve_equals_replace_and_leaves_the_original_alone(changes: dict[str, object]):
    before = replace(VIEW)
    evolved = evolve(VIEW, **changes)
    assert evolved == replace(VIEW, **changes) and type(evolved) is WorkspaceView
    assert hash(evolved) == hash(replace(VIEW, **changes))
    assert before == VIEW and evolved is not VIEW
    with pytest.raises(AttributeError):  # still frozen
        evolved.seats = 1  # type: ignore[misc]


def test_evolve_of_a_state_keeps_its_defaults_and_collections():
    state = WorkspaceState("ws_1", usage=Usage(members=3))
    evolved = evolve(state, version=state.version + 1)
    assert evolved == replace(state, version=state.version + 1)
    assert evolved.usage is state.usage and evolved.subscriptions is state.subscriptions


def test_evolve_refuses_unknown_fields_and_classes_it_cannot_copy():
    with pytest.raises(TypeError, match="no field"):
        evolve(VIEW, seat=3)

    @dataclass(frozen=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("negative")

    with pytest.raises(TypeError, match="not a plain dataclass"):
        evolve(Checked(1), n=-1)
