"""``evolve`` must be ``dataclasses.replace`` for the reducer's records, only faster."""

from __future__ import annotations

from dataclasses import MISSING, FrozenInstanceError, dataclass, fields, is_dataclass, replace
from datetime import UTC, datetime

import pytest

from handlers.evolve import evolve, quick_init
from handlers.state import Block, Usage, WorkspaceState, WorkspaceView
from tests.support.core import history_records

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


# ---------------------------------------------------------------- quick_init


def _quick_classes() -> list[type]:
    """Every record class whose ``__init__`` ``quick_init`` replaced."""
    import handlers.credits
    import handlers.events
    import handlers.reducer
    import handlers.state
    import worker.processing.unit_of_work
    import worker.storage.audit
    import worker.storage.inbox

    modules = [
        handlers.credits,
        handlers.events,
        handlers.reducer,
        handlers.state,
        worker.processing.unit_of_work,
        worker.storage.audit,
        worker.storage.inbox,
    ]
    return [
        cls
        for m in modules
        for cls in vars(m).values()
        if isinstance(cls, type) and hasattr(vars(cls).get("__init__"), "dataclass_init")
    ]


def _both_ways(cls: type, *args: object, **kwargs: object) -> tuple[object, object]:
    """The instance ``cls`` builds now, and the one the dataclass's own ``__init__`` builds."""
    original = object.__new__(cls)
    cls.__init__.dataclass_init(original, *args, **kwargs)  # type: ignore[misc]
    return cls(*args, **kwargs), original


def test_quick_init_covers_the_hot_records():
    names = {cls.__name__ for cls in _quick_classes()}
    assert {"WorkspaceView", "WorkspaceState", "SubscriptionSnapshot", "Outcome", "ProcessResult"} <= names


def test_quick_init_builds_what_the_dataclass_builds_from_real_histories():
    quick = set(_quick_classes())
    seen = set()
    for record in _nested(history_records()):
        if type(record) not in quick:
            continue
        seen.add(type(record))
        values = [getattr(record, f.name) for f in fields(record)]
        for made, original in (
            _both_ways(type(record), *values),
            _both_ways(type(record), **record.__dict__),
        ):
            assert made == original == record and hash(made) == hash(original)
            assert list(made.__dict__.items()) == list(original.__dict__.items())  # order too
    assert len(seen) >= 7  # views, records, snapshots, items, lines, blocks, states


def _nested(values: list[object]) -> list[object]:
    """The values and every dataclass instance inside them (fields, tuples, mapping values)."""
    out: list[object] = []
    stack = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, tuple | list | frozenset):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif is_dataclass(value) and not isinstance(value, type):
            out.append(value)
            stack.extend(getattr(value, f.name) for f in fields(value))
    return out


@pytest.mark.parametrize("cls", _quick_classes(), ids=lambda c: c.__name__)
def test_quick_init_keeps_defaults_factories_and_argument_errors(cls: type):
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    args = [f"value_{name}" for name in required]
    made, original = _both_ways(cls, *args)
    assert made.__dict__ == original.__dict__ and list(made.__dict__) == list(original.__dict__)
    for f in fields(cls):  # a factory gives each instance its own value, as before
        if f.default_factory is not MISSING:
            assert getattr(made, f.name) is not getattr(cls(*args), f.name) or not isinstance(
                getattr(made, f.name), dict | list | set
            )
    if required:
        with pytest.raises(TypeError):
            cls(*args[:-1])
    with pytest.raises(TypeError):
        cls(*args, no_such_field=1)
    with pytest.raises(FrozenInstanceError):
        setattr(made, fields(cls)[0].name, "changed")


def test_quick_init_refuses_what_it_cannot_rebuild():
    @dataclass(frozen=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="not a plain dataclass"):
        quick_init(Checked)
