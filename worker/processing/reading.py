"""Reading a stored Stripe payload in the shell: the pure reader's notes become logs and a metric.

``handlers.normalize.read_event`` returns the typed event with the paths it read around (an
unknown enum value, a nullable or expandable field in an odd shape); here each one is logged as
``stripe_shape_unexpected`` and counted, so a Stripe shape change shows before it matters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from handlers.events import BillingEvent
from handlers.normalize import PayloadError, read_event
from worker.infra import metrics
from worker.infra.logging import get_logger

log = get_logger("reading")

_INDEX = re.compile(r"\[\d+\]")


def read_payload(raw: Mapping[str, Any], event_id: str, event_type: str | None) -> BillingEvent:
    """The typed event of ``raw``; raises ``PayloadError`` as ``normalize`` does."""
    reading = read_event(raw)
    for odd in reading.unexpected:
        log.warning(
            "stripe_shape_unexpected",
            event_id=event_id,
            event_type=event_type,
            path=odd.path,
            problem=odd.problem,
        )
        metrics.STRIPE_SHAPE_UNEXPECTED.labels(
            type=event_type or "unknown", path=_INDEX.sub("[]", odd.path)
        ).inc()
    return reading.event


def malformed_error(exc: PayloadError | ValueError) -> str:
    """The dead letter's ``last_error``: the offending field's path first, when there is one."""
    field = getattr(exc, "field", None)
    return f"malformed payload at {field}: {exc}" if field else f"malformed payload: {exc}"
