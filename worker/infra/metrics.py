"""Prometheus metrics. Names are stable: alerts and the Grafana dashboard in deploy/ use them."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
# process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, process_start_time_seconds …
ProcessCollector(registry=REGISTRY)


def _version() -> str:
    try:
        return version("billing-worker")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


BUILD = Info(
    "billing_build", "The running build (always 1): billing_build_info{version, python}.", registry=REGISTRY
)
BUILD.info({"version": _version(), "python": platform.python_version()})

WEBHOOKS = Counter(
    "billing_webhooks_total",
    "Webhook deliveries by event type and outcome (accepted, duplicate, rejected, unavailable).",
    ["type", "outcome"],
    registry=REGISTRY,
)
SIGNATURE_FAILURES = Counter(
    "billing_webhook_signature_failures_total",
    "Webhooks refused for their signature, by error code.",
    ["code"],
    registry=REGISTRY,
)
INBOX_TO_JOB_LATENCY = Histogram(
    "billing_inbox_to_job_latency_seconds",
    "Time from receipt of a webhook to the start of its processing job (one observation per event).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "billing_job_duration_seconds",
    "Job duration by handler (event type or job name) and outcome.",
    ["handler", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    registry=REGISTRY,
)
EVENT_BATCH_SIZE = Histogram(
    "billing_event_batch_size",
    "Events written per transaction by a worker (the events of one job, or one of them alone).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "billing_queue_depth", "Jobs in the arq queue, deferred ones included.", registry=REGISTRY
)
QUEUE_DUE = Gauge(
    "billing_queue_due_jobs",
    "Jobs in the arq queue whose time has come (deferred retries and plan changes excluded).",
    registry=REGISTRY,
)
GAUGE_REFRESH_FAILURES = Counter(
    "billing_gauge_refresh_failures_total",
    "Scrape-time gauge refreshes that failed or outlived the scrape budget (the last values were served).",
    ["gauge"],
    registry=REGISTRY,
)
OLDEST_UNPROCESSED = Gauge(
    "billing_oldest_unprocessed_event_age_seconds",
    "Age of the oldest inbox event still received, failed or unmatched.",
    registry=REGISTRY,
)
INBOX_EVENTS = Gauge("billing_inbox_events", "Inbox events by status.", ["status"], registry=REGISTRY)
DEAD_LETTERS = Gauge("billing_dead_letters", "Inbox events dead-lettered.", registry=REGISTRY)
BLOCKED_WORKSPACES = Gauge(
    "billing_blocked_workspaces",
    "Workspaces under an open-invoice block, by level.",
    ["level"],
    registry=REGISTRY,
)
PENDING_PLAN_CHANGES = Gauge(
    "billing_pending_plan_changes", "Plan changes waiting, by status.", ["status"], registry=REGISTRY
)
STRIPE_API_ERRORS = Counter(
    "billing_stripe_api_errors_total",
    "Errors from outgoing Stripe API calls, by operation and error kind.",
    ["operation", "kind"],
    registry=REGISTRY,
)
STRIPE_SHAPE_UNEXPECTED = Counter(
    "billing_stripe_shape_unexpected_total",
    "Fields of Stripe payloads read around (unknown enum value, odd nullable or expandable shape), "
    "by event type and field path (array indices as []).",
    ["type", "path"],
    registry=REGISTRY,
)
