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
