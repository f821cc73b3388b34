"""Operations read JSON log lines: one per webhook and per job, with stable keys, no secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import stripe_factory as sf
from tests.support.helpers import SECRET_A, TOKEN, running_service, wait_for
from tests.support.paths import ROOT
from worker.config import Settings
from worker.infra import logging as logging_module
from worker.infra.logging import LineWriter, configure, render_json


@dataclass
class _Point:
    x: int
    y: int


@pytest.fixture
def log_lines():
    buffer = io.StringIO()
    configure("info", stream=buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    structlog.reset_defaults()
    logging.basicConfig(force=True, level=logging.WARNING)


async def test_one_json_line_per_webhook_and_per_job(settings: Settings, log_lines):
    u = uuid.uuid4().hex[:10]
    event = sf.history_lifecycle(workspace_id=f"ws_log_{u}", customer=f"cus_log{u}", sub_id=f"sub_log{u}")[0]
    async with running_service(settings) as svc:
        await svc.deliver(event)

        # The job logs after its commit (and after the notification): wait for the line itself.
        async def job_lines() -> int:
            return sum(
                1
                for line in log_lines()
                if line.get("event_id") == event["id"] and line["msg"] == "job_finished"
            )

        await wait_for(job_lines, what="the job_finished line")
        await svc.post_raw("{}", {"Stripe-Signature": "t=1,v1=deadbeef"})
    lines = [line for line in log_lines() if line.get("event_id") == event["id"]]
    received = [line for line in lines if line["msg"] == "webhook_received"]
    finished = [line for line in lines if line["msg"] == "job_finished"]
    assert len(received) == 1 and len(finished) == 1, lines
    for line in (*received, *finished):
        assert {
            "ts",
            "level",
            "component",
            "msg",
            "event_id",
            "event_type",
            "outcome",
            "duration_ms",
        } <= line.keys()
    assert finished[0]["workspace_id"] == f"ws_log_{u}"
    assert (finished[0]["outcome"], finished[0]["attempt"]) == ("applied", 1)
    rejected = [line for line in log_lines() if line["msg"] == "webhook_rejected"]
    assert rejected and rejected[-1]["code"] == "signature_mismatch", rejected
    everything = json.dumps(log_lines())
    assert SECRET_A not in everything and TOKEN not in everything and "whsec_" not in everything


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


def test_lines_of_a_loop_stopped_before_its_next_iteration_are_written_at_exit():
    program = (
        "import asyncio\n"
        "from worker.infra.logging import configure, get_logger\n"
        "configure('info')\n"
        "loop = asyncio.new_event_loop()\n"
        "loop.call_soon(lambda: (get_logger('t').info('last_words'), loop.stop()))\n"
        "loop.run_forever()\n"
        "loop.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=ROOT, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1])["msg"] == "last_words"
