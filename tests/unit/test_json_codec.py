"""``json_codec.dumps_record`` / ``jsonable`` must write exactly what ``to_jsonable`` writes.

They replace ``dumps(to_jsonable(…))`` on the worker's hot path (snapshots, views, audit before
and after), so every record the reducer produces from real histories is compared, plus the edge
cases of the encoding rules: microseconds, UTC ``Z``, sets sorted, tuples as lists, None.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from handlers.codec import to_jsonable
from handlers.reducer import view_diff, view_json_diff
from tests.support.core import history_records
from worker.infra import json_codec
from worker.services import load_catalog

CATALOG = load_catalog(None)


RECORDS = history_records()


def test_the_histories_reach_the_interesting_shapes():
    views = [r for r in RECORDS if type(r).__name__ == "WorkspaceView"]
    assert any(v.block is not None for v in views)  # a frozenset and a tuple inside
    assert any(v.storage_addon_units for v in views)


@pytest.mark.parametrize("index", range(len(RECORDS)))
def test_a_record_encodes_as_to_jsonable_does(index: int):
    record = RECORDS[index]
    assert json_codec.dumps_record(record) == json_codec.dumps(to_jsonable(record))
    assert json_codec.jsonable(record) == to_jsonable(record)


@dataclass(frozen=True)
class _Edge:
    at: datetime
    maybe: datetime | None
    tags: frozenset[str]
    pair: tuple[int, ...]
    nested: dict[str, Any]


def test_the_encoding_rules_hold_at_the_edges():
    edge = _Edge(
        at=datetime(2026, 11, 22, 8, 30, 1, 5, tzinfo=UTC),
        maybe=None,
        tags=frozenset({"zeta", "alpha", "mu"}),
        pair=(3, 1),
        nested={"when": datetime(2026, 1, 1, tzinfo=UTC), "set": frozenset({"b", "a"})},
    )
    text = json_codec.dumps_record(edge)
    assert text == json_codec.dumps(to_jsonable(edge))
    assert '"2026-11-22T08:30:01.000005Z"' in text and '["alpha","mu","zeta"]' in text


def test_views_compared_as_json_differ_as_the_views_do():
    views = [r for r in RECORDS if type(r).__name__ == "WorkspaceView"]
    pairs = [(a, b) for a in views[::3] for b in views[::3]]
    assert any(view_diff(a, b) for a, b in pairs)
    for a, b in pairs:
        assert view_json_diff(json_codec.jsonable(a), json_codec.jsonable(b)) == view_diff(a, b)


def test_a_stored_view_lacking_a_newer_field_reads_it_as_its_default():
    view = next(r for r in RECORDS if type(r).__name__ == "WorkspaceView")
    stored = {k: v for k, v in json_codec.jsonable(view).items() if k != "ai_credit_balance"}
    assert view_json_diff(stored, json_codec.jsonable(view)) == {}
    richer = json_codec.jsonable(view) | {"ai_credit_balance": 500}
    assert view_json_diff(stored, richer) == {"ai_credit_balance": (0, 500)}
