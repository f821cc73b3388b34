"""The timeline's pure half: cursors round-trip, and anything that is not a cursor is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from handlers.timeline import (
    CREDIT,
    EVENT,
    PLAN_CHANGE,
    TRANSITION,
    Cursor,
    decode_cursor,
    encode_cursor,
    event_status,
)

AT = datetime(2026, 11, 5, 9, 0, 15, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    "cursor",
    [
        Cursor(AT, TRANSITION, "12"),
        Cursor(AT, CREDIT, "999999999999999999"),
        Cursor(AT, EVENT, "evt_1AbC_x"),
        Cursor(AT, PLAN_CHANGE, "pc_0123abcd"),
        Cursor(datetime(1970, 1, 1, tzinfo=UTC), EVENT, "evt_a"),
    ],
)
def test_a_cursor_comes_back_as_it_went(cursor: Cursor):
    assert decode_cursor(encode_cursor(cursor)) == cursor


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "1.t.0",  # version 0 does not exist
        "1.t.01",
        "1.t.1x",
        "1.x.1",
        "-1.t.1",
        "12345678901234567.t.1",  # past the year 2286
        "1.e.evt_",
        "1.e.evt_a b",
        "1.p.pc_",
        "1.t.1\n",
        "1.c.1234567890123456789",
        "eyJhdCI6IjIwMjYifQ",
    ],
)
def test_anything_else_is_not_a_cursor(text: str):
    assert decode_cursor(text) is None


def test_a_cursor_of_another_listing_is_refused():
    assert decode_cursor(encode_cursor(Cursor(AT, TRANSITION, "3")), (EVENT,)) is None


@pytest.mark.parametrize(
    ("status", "outcome", "shown"),
    [
        ("processed", "applied", "processed"),
        ("processed", "stale", "stale"),
        ("ignored", "ignored", "ignored"),
        ("dead", None, "dead"),
        ("failed", "stale", "failed"),
    ],
)
def test_the_desk_sees_stale_events_as_stale(status: str, outcome: str | None, shown: str):
    assert event_status(status, outcome) == shown
