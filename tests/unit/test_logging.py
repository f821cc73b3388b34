"""Operations read JSON log lines with stable keys and no secrets: masking, rendering, writing.

One line per webhook and per job from a running service: tests/integration/test_logging_service.py;
lines written at a process's exit: tests/system/test_logging_at_exit.py."""

from __future__ import annotations

import asyncio
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.config import ConfigError, Settings
from worker.infra import logging as logging_module
from worker.infra.logging import LineWriter, configure, render_json


@dataclass
class _Point:
    x: int
    y: int


def test_secrets_are_masked_wherever_they_appear():
    buffer = io.StringIO()
    configure("info", stream=buffer)
    try:
        structlog.get_logger().info(
            "oops", detail="key whsec_abc123 and sk_live_XYZ", token="t0ken", api_key="k"
        )
    finally:
        structlog.reset_defaults()
    line = json.loads(buffer.getvalue())
    assert line["detail"] == "key whsec_[redacted] and sk_live_[redacted]"
    assert line["token"] == line["api_key"] == "[redacted]"


def _redact_reference(event: dict) -> dict:
    """The rule in its plainest form: secret keys masked, secret-looking substrings masked."""
    out = {}
    for key, value in event.items():
        if key.lower() in logging_module._SECRET_KEYS:
            out[key] = "[redacted]"
        elif isinstance(value, str):
            out[key] = logging_module._SECRET.sub(r"\1[redacted]", value)
        else:
            out[key] = value
    return out


_SECRETISH = st.sampled_from(["whsec_", "sk_live_", "sk_test_", "rk_live_", "rk_test_", "k_", "sk_", "_"])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["msg", "token", "Secret", "API_KEY", "detail", "event_id", "authorization"])
        | st.text(max_size=8),
        st.none()
        | st.integers()
        | st.text(max_size=20)
        | st.builds(lambda a, p, b: a + p + b, st.text(max_size=5), _SECRETISH, st.text(max_size=12)),
        max_size=8,
    )
)
def test_redaction_masks_exactly_what_the_plain_rule_masks(event: dict):
    assert logging_module._redact(None, "info", dict(event)) == _redact_reference(event)


def _stdlib_line(event: dict) -> str:
    """What structlog's JSONRenderer (stdlib json, structlog's repr fallback) made of a line."""
    return structlog.processors.JSONRenderer(sort_keys=False)(None, "info", dict(event))


@pytest.mark.parametrize(
    "event",
    [
        {"msg": "webhook_received", "event_id": "evt_1", "duration_ms": 3.142, "duplicate": False},
        {"msg": "x", "n": None, "i": -(2**63), "u": 2**64 - 1, "f": 1e16, "t": (1, "a"), "l": [{"k": [1]}]},
        {"msg": "odd", "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "day": date(2026, 1, 2)},
        {"msg": "odd", "obj": _Point(1, 2), "set": {3}, "raw": b"\x00\xff", "exc": ValueError("boom")},
        {"msg": "big", "n": 2**70, "nested": {"n": -(2**65)}},
        {"msg": "keys", "m": {1: "a", None: "b", False: "c", 2.5: "d"}},
        {"msg": "text", "s": 'é ✓ 💳 "quoted" \\ \n\t\u0001', "surrogate": "\ud800"},
    ],
)
def test_lines_read_the_same_as_with_the_stdlib_renderer(event: dict):
    """Same keys, same order, same values once parsed: only separators and escapes may differ."""
    ours = render_json(None, "info", dict(event))
    assert isinstance(ours, str) and "\n" not in ours
    theirs = _stdlib_line(event)
    assert list(json.loads(ours).items()) == list(json.loads(theirs).items())


def test_a_structlog_aware_value_renders_through_its_hook():
    class Aware:
        def __structlog__(self) -> str:
            return "aware"

    assert json.loads(render_json(None, "info", {"v": Aware()})) == {"v": "aware"}


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes: list[str] = []  # what had been written at each flush
        self.flushed: asyncio.Event | None = None

    def flush(self) -> None:
        self.flushes.append(self.getvalue())
        if self.flushed is not None:
            self.flushed.set()
        super().flush()


def test_lines_logged_close_together_are_written_together_and_soon():
    stream = _CountingStream()
    writer = LineWriter(stream)

    async def burst() -> float:
        stream.flushed = asyncio.Event()
        started = time.monotonic()
        for n in range(3):
            writer.info(f"line {n}")
            await asyncio.sleep(0)  # separate loop iterations, as separate jobs finish
        assert stream.flushes == []  # held for a moment …
        await asyncio.wait_for(stream.flushed.wait(), 5)
        return time.monotonic() - started

    assert asyncio.run(burst()) < 1.0
    assert stream.flushes == ["line 0\nline 1\nline 2\n"]  # … then written in one call
    writer.info("outside a loop")  # CLI and start-up: at once
    assert stream.flushes[-1].endswith("outside a loop\n") and len(stream.flushes) == 2


def test_with_no_batch_delay_each_line_is_written_at_once_inside_a_loop():
    stream = _CountingStream()
    writer = LineWriter(stream, delay=0)

    async def lines() -> None:
        writer.info("one")
        assert stream.flushes == ["one\n"]
        writer.info("two")
        assert stream.flushes == ["one\n", "one\ntwo\n"]

    asyncio.run(lines())


@pytest.mark.parametrize(("raw", "expected"), [(None, 20), ("0", 0), ("5", 5)])
def test_the_batch_delay_is_a_setting(raw: str | None, expected: int):
    env = {} if raw is None else {"BW_LOG_BATCH_MS": raw}
    assert Settings.from_env(env).log_batch_ms == expected


def test_a_negative_batch_delay_is_refused():
    with pytest.raises(ConfigError, match="BW_LOG_BATCH_MS"):
        Settings.from_env({"BW_LOG_BATCH_MS": "-1"})
