"""OpenTelemetry traces, off by default: one trace follows a Stripe event from its webhook request
through the queue to the committed transaction and the Stripe calls it causes.

The rest of the shell sees only this module's small API: ``start_span`` (a context manager),
``record_span`` (a span whose times are already known), ``set_attributes``, ``inject`` (the current
span as a W3C ``traceparent``, which the inbox stores with the event and job arguments carry)
and ``extract``. While tracing is off (no ``configure``) each returns at once and nothing of
OpenTelemetry is even imported: the SDK is an optional dependency (the ``tracing`` extra),
imported inside ``configure`` only (``opentelemetry`` is in the architecture test's
``LAZY_DEPENDENCIES``). Call sites on hot paths test ``enabled()`` first, so "off" costs one call.

The tracer is this module's own provider, not OpenTelemetry's global one (which can be set only
once per process): tests switch tracing on and off around a test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from worker.config import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

_AttributeValue = str | bool | int | float
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


class _Otel:
    """The OpenTelemetry pieces, imported and built by ``configure``."""

    def __init__(self, exporter: SpanExporter | None, service_name: str) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError as exc:
            raise ConfigError(
                f"tracing is on (BW_TRACING / OTEL_EXPORTER_OTLP_ENDPOINT) but {exc.name} is not "
                "installed: pip install 'billing-worker[tracing]'"
            ) from None
        if exporter is None:
            # Reads OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, _TIMEOUT … itself.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            processor: Any = BatchSpanProcessor(OTLPSpanExporter())
        else:
            processor = SimpleSpanProcessor(exporter)  # tests: every span exported as it ends
        self.trace = trace
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("billing-worker")
        self.propagator = TraceContextTextMapPropagator()
        self.kinds = {
            "internal": trace.SpanKind.INTERNAL,
            "server": trace.SpanKind.SERVER,
            "client": trace.SpanKind.CLIENT,
            "consumer": trace.SpanKind.CONSUMER,
        }

    def context_of(self, traceparent: str | None) -> Any:
        return self.propagator.extract({"traceparent": traceparent}) if traceparent else None

    def links_to(self, traceparents: Sequence[str | None]) -> list[Any]:
        links = []
        for traceparent in traceparents:
            context = self.context_of(traceparent)
            if context is not None:
                span_context = self.trace.get_current_span(context).get_span_context()
                if span_context.is_valid:
                    links.append(self.trace.Link(span_context))
        return links

    def traceparent_of(self, span: Any) -> str | None:
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=self.trace.set_span_in_context(span))
        return carrier.get("traceparent")


_otel: _Otel | None = None


def configure(exporter: SpanExporter | None = None, *, service_name: str = "billing-worker") -> None:
    """Switch tracing on: spans go to ``exporter`` (tests: the SDK's ``InMemorySpanExporter``), by
    default to OTLP over HTTP as the ``OTEL_EXPORTER_OTLP_*`` variables say."""
    global _otel
    shutdown()
    _otel = _Otel(exporter, service_name)


def shutdown() -> None:
    """Export what waits and switch tracing off (a stopping process, the end of a test)."""
    global _otel
    otel, _otel = _otel, None
    if otel is not None:
        otel.provider.shutdown()


def enabled() -> bool:
    return _otel is not None


def start_span(
    name: str,
    *,
    parent: str | None = None,
    kind: str = "internal",
    attributes: Mapping[str, _AttributeValue | None] | None = None,
    links: Sequence[str | None] = (),
) -> contextlib.AbstractContextManager[Any]:
    """A span around a block, current inside it: a child of ``parent`` (a ``traceparent``) when
    given, else of the current span. None is yielded while tracing is off."""
    if _otel is None:
        return _NO_SPAN
    return _otel.tracer.start_as_current_span(
        name,
        context=_otel.context_of(parent),
        kind=_otel.kinds[kind],
        attributes=_clean(attributes),
        links=_otel.links_to(links),
    )


def record_span(
    name: str,
    *,
    start_ns: int,
    end_ns: int,
    parent: str | None = None,
    attributes: Mapping[str, _AttributeValue | None] | None = None,
    links: Sequence[str | None] = (),
) -> str | None:
    """A finished span with known times (``time.time_ns()``); its ``traceparent`` (None: off)."""
    if _otel is None:
        return None
    span = _otel.tracer.start_span(
        name,
        context=_otel.context_of(parent),
        attributes=_clean(attributes),
        links=_otel.links_to(links),
        start_time=start_ns,
    )
    span.end(end_time=end_ns)
    return _otel.traceparent_of(span)


def set_attributes(attributes: Mapping[str, _AttributeValue | None]) -> None:
    """Add attributes to the current span (None values are left out)."""
    if _otel is not None:
        _otel.trace.get_current_span().set_attributes(_clean(attributes) or {})


def inject() -> str | None:
    """The current span as a W3C ``traceparent`` to store or send on; None when there is none."""
    if _otel is None:
        return None
    span = _otel.trace.get_current_span()
    return _otel.traceparent_of(span) if span.get_span_context().is_valid else None


def extract(traceparent: str | None) -> Any:
    """The OpenTelemetry context a stored ``traceparent`` names (None: off, absent or invalid)."""
    return _otel.context_of(traceparent) if _otel is not None else None


def _clean(attributes: Mapping[str, _AttributeValue | None] | None) -> dict[str, _AttributeValue] | None:
    if not attributes:
        return None
    return {key: value for key, value in attributes.items() if value is not None}
