"""JSON for the hot paths (webhook payloads, jsonb columns): orjson, 3 to 5 times faster than ``json``
on Stripe-sized documents (bench/README.md). Strict: NaN, Infinity and integers beyond 64 bits
are refused, none of which a Stripe payload contains."""

from __future__ import annotations

from typing import Any

import orjson

loads = orjson.loads
JSONDecodeError = orjson.JSONDecodeError  # a ValueError


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _sorted_set(value: Any) -> list[Any]:
    if isinstance(value, frozenset | set):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _record_bytes(value: Any) -> bytes:
    return orjson.dumps(value, default=_sorted_set, option=orjson.OPT_UTC_Z)


def dumps_record(value: Any) -> str:
    """``dumps(to_jsonable(value))`` for our frozen records (dataclasses of str, int, bool, None,
    UTC datetimes, tuples, dicts and frozensets of str), in one C call: the same text (field
    order, ``Z`` datetimes, sorted sets), about ten times faster (tests/unit/test_json_codec.py)."""
    return _record_bytes(value).decode()


def record_fragment(value: Any) -> orjson.Fragment:
    """``dumps_record(value)`` to embed as is in a document ``dumps`` writes (a batch's rows)."""
    return orjson.Fragment(_record_bytes(value))


def jsonable(value: Any) -> Any:
    """``to_jsonable(value)`` for our frozen records, through ``dumps_record``."""
    return orjson.loads(_record_bytes(value))
