"""Traces: with tracing on (the SDK's in-memory exporter), one trace follows a webhook's event from
its request through the queue and the committed transaction to the Stripe calls the event causes;
with tracing off, no span is made and nothing of OpenTelemetry runs."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support import stripe_factory as sf
from tests.support.helpers import running_service, wait_for
from tests.support.money_helpers import ids as fresh_ids
from tests.support.scenarios import tied_updates
from tests.support.stripe_server import StripeServer
from worker.config import Settings
from worker.infra import tracing

_OTEL_DIR = f"{os.sep}opentelemetry{os.sep}"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure(exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def _one(found: Iterable[ReadableSpan]) -> ReadableSpan:
    found = list(found)
    assert len(found) == 1, [(s.name, dict(s.attributes or {})) for s in found]
    return found[0]


def _traceparent(span: ReadableSpan) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


async def test_one_trace_from_the_webhook_through_the_transaction_to_the_stripe_calls(
    stripe_settings: Settings, stripe_server: StripeServer, spans: InMemorySpanExporter
):
    # Two updates of one subscription stamped with the same second and saying different things:
    # the worker asks Stripe (a reconcile job, SPEC §4) — the Stripe calls an event causes.
    ids = fresh_ids("trace")
    now = int(time.time())
    truth, other = tied_updates(ids, now - 60, "trace", stripe_server)
    async with running_service(stripe_settings) as svc:
        for event in (truth, other):
            assert (await svc.post_event(event))[0] == 200
        await svc.wait_processed([truth["id"], other["id"]])

        async def reconciled() -> list[ReadableSpan]:
            return [s for s in spans.get_finished_spans() if s.name == "reconcile_workspace"]

        await wait_for(reconciled, what="the reconcile job's span")
        stored = {
            r["event_id"]: r["traceparent"]
            for r in await svc.services.pool.fetch(
                "SELECT event_id, traceparent FROM webhook_events WHERE event_id = ANY($1::text[])",
                [truth["id"], other["id"]],
            )
        }
    finished = spans.get_finished_spans()
    reconcile = _one(s for s in finished if s.name == "reconcile_workspace")
    trace = [s for s in finished if s.context.trace_id == reconcile.context.trace_id]

    receiver = _one(s for s in trace if s.name == "POST /webhooks/stripe")
    asked = receiver.attributes["event_id"]  # the event processed second asked for the refetch
    assert asked in (truth["id"], other["id"]) and receiver.parent is None
    assert receiver.attributes["event_type"] == "customer.subscription.updated"
    assert receiver.attributes["http.response.status_code"] == 200
    assert stored[asked] == _traceparent(receiver)  # carried durably with the inbox row

    processing = _one(s for s in trace if s.name == "process_event")
    assert processing.parent is not None and processing.parent.span_id == receiver.context.span_id
    assert {k: processing.attributes[k] for k in ("event_id", "event_type", "workspace_id", "outcome")} == {
        "event_id": asked,
        "event_type": "customer.subscription.updated",
        "workspace_id": ids["workspace_id"],
        "outcome": "applied",
    }
    # The committed transaction: the batch's span, of its own trace, linked both ways.
    batch = _one(s for s in finished if s.context.span_id == processing.links[0].context.span_id)
    assert batch.name == "event_batch" and batch.context.trace_id != receiver.context.trace_id
    assert receiver.context.span_id in {link.context.span_id for link in batch.links}
    assert batch.start_time == processing.start_time and batch.end_time == processing.end_time

    assert reconcile.parent is not None and reconcile.parent.span_id == processing.context.span_id
    assert reconcile.attributes["workspace_id"] == ids["workspace_id"]
    calls = [s for s in trace if s.name.startswith("stripe ")]
    assert {s.name for s in calls} == {
        "stripe GET /v1/customers",
        "stripe GET /v1/subscriptions",
        "stripe GET /v1/invoices",
    }
    for call in calls:
        assert call.parent is not None and call.parent.span_id == reconcile.context.span_id
        assert call.attributes["http.response.status_code"] == 200
        assert call.attributes["url.path"].startswith("/v1/")
    assert len(stripe_server.calls("GET", rf"/v1/customers/{ids['customer']}")) == 1

    # The other event has its own trace: its request, then its processing.
    first = truth["id"] if asked == other["id"] else other["id"]
    first_receiver = _one(
        s for s in finished if s.name == "POST /webhooks/stripe" and s.attributes["event_id"] == first
    )
    first_processing = _one(
        s for s in finished if s.name == "process_event" and s.attributes["event_id"] == first
    )
    assert first_processing.context.trace_id == first_receiver.context.trace_id != receiver.context.trace_id


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
async def test_with_tracing_off_no_span_is_made_and_nothing_of_opentelemetry_runs(
    settings: Settings, on: bool
):
    exporter = InMemorySpanExporter()
    if on:  # the same probe sees OpenTelemetry at work when tracing is on
        tracing.configure(exporter)
    u = uuid.uuid4().hex[:10]
    event = sf.history_lifecycle(workspace_id=f"ws_trc_{u}", customer=f"cus_trc{u}", sub_id=f"sub_trc{u}")[0]
    called: set[str] = set()

    def profile(frame: Any, what: str, arg: Any) -> None:
        if what == "call" and _OTEL_DIR in frame.f_code.co_filename:
            called.add(frame.f_code.co_qualname)

    try:
        async with running_service(settings) as svc:
            sys.setprofile(profile)  # every Python call of this thread: the loop, all its tasks
            try:
                await svc.deliver(event)
            finally:
                sys.setprofile(None)
            traceparent = await svc.services.pool.fetchval(
                "SELECT traceparent FROM webhook_events WHERE event_id = $1", event["id"]
            )
    finally:
        tracing.shutdown()
    if on:
        assert called and traceparent is not None
        assert {s.name for s in exporter.get_finished_spans()} >= {"POST /webhooks/stripe", "process_event"}
    else:
        assert called == set() and traceparent is None
        assert exporter.get_finished_spans() == ()
