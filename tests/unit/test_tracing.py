"""When tracing is on, and what its API does while it is off (the traces themselves:
tests/integration/test_tracing.py)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from worker.config import ConfigError, Settings
from worker.infra import tracing


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"BW_TRACING": "1"}, True),
        ({"BW_TRACING": "true"}, True),
        ({"BW_TRACING": "0", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"BW_TRACING": " ", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ],
)
def test_tracing_is_on_with_an_endpoint_or_bw_tracing(env: dict[str, str], on: bool):
    assert Settings.from_env(env).tracing is on


def test_a_malformed_bw_tracing_is_refused():
    with pytest.raises(ConfigError, match="BW_TRACING"):
        Settings.from_env({"BW_TRACING": "yes please"})


def test_the_service_name_is_a_setting():
    assert Settings.from_env({}).service_name == "billing-worker"
    assert Settings.from_env({"OTEL_SERVICE_NAME": "billing-eu"}).service_name == "billing-eu"


def test_while_off_every_call_returns_at_once_with_nothing():
    assert not tracing.enabled()
    with tracing.start_span("x", parent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") as span:
        assert span is None
        tracing.set_attributes({"event_id": "evt_1"})
        assert tracing.inject() is None
    assert tracing.record_span("y", start_ns=1, end_ns=2) is None
    assert tracing.extract("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") is None


def test_on_without_an_exporter_given_the_otlp_exporter_is_built():
    tracing.configure()  # reads OTEL_EXPORTER_OTLP_*; nothing is sent before a span ends
    try:
        assert tracing.enabled()
    finally:
        tracing.shutdown()
    assert not tracing.enabled()


def test_a_span_continues_a_stored_traceparent():
    exporter = InMemorySpanExporter()
    tracing.configure(exporter)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    try:
        with tracing.start_span("child", parent=parent, attributes={"event_id": "evt_1", "none": None}):
            traceparent = tracing.inject()
        recorded = tracing.record_span("later", start_ns=1_000, end_ns=2_000, parent=traceparent)
    finally:
        tracing.shutdown()
    child, later = exporter.get_finished_spans()
    assert f"{child.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert child.parent is not None and f"{child.parent.span_id:016x}" == "b7ad6b7169203331"
    assert dict(child.attributes or {}) == {"event_id": "evt_1"}
    assert (
        traceparent
        == f"00-{child.context.trace_id:032x}-{child.context.span_id:016x}-{int(child.context.trace_flags):02x}"
    )
    assert later.parent is not None and later.parent.span_id == child.context.span_id
    assert (later.start_time, later.end_time) == (1_000, 2_000)
    assert recorded is not None and f"{later.context.span_id:016x}" in recorded
