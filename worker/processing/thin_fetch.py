"""A thin event's related object, fetched by the event's job between two transactions.

The unit of work leaves a thin event it acts on ``received`` with the outcome ``NEEDS_FETCH``
(no Stripe call ever runs inside a transaction, nor in the receiver). Its job then fetches the
related object through the gateway (the official SDK, with the notification's ``context``) and
applies the event again with it (``worker.processing.batches``), reduced as an observation at
fetch time. Failures:

* no STRIPE_API_KEY → the event is kept and dead-lettered: ``thin events need STRIPE_API_KEY``;
* Stripe answers 404 (the object is gone) or 401/403 (wrong key or context) → dead, with that reason;
* anything else (network, timeout, 5xx, 429) is raised: the event fails alone, its failure is
  counted on its row and it is queued again with backoff, dead only after ``BW_MAX_TRIES``, like
  any failing event.
"""

from __future__ import annotations

import asyncio

from handlers.thin import THIN_NEEDS_KEY, FetchedObject
from worker.infra import metrics
from worker.infra.logging import get_logger
from worker.infra.stripe_gateway import API_VERSION, fetch_refused, is_transient
from worker.processing.unit_of_work import ProcessResult
from worker.services import Services
from worker.storage import inbox

log = get_logger("thin_events")
OPERATION = "fetch_related_object"


async def related_object(services: Services, pending: ProcessResult) -> FetchedObject | ProcessResult:
    """``pending``'s related object, or the event's final result when it was dead-lettered."""
    gateway = services.stripe
    if gateway is None:
        return await _dead_letter(services, pending, "no_api_key", THIN_NEEDS_KEY)
    assert pending.thin_payload is not None
    fetched_at = services.clock()  # before the call: the object is Stripe's truth as of then
    try:
        # Within half the job's time limit, so a hung connection is retried rather than the job
        # being cancelled (the SDK's own retries and timeouts count inside this budget).
        async with asyncio.timeout(services.settings.job_timeout_seconds / 2):
            obj = await gateway.fetch_related_object(pending.thin_payload)
    except Exception as exc:
        reason = fetch_refused(exc)
        kind = "refused" if reason else "transient" if is_transient(exc) else "error"
        metrics.STRIPE_API_ERRORS.labels(operation=OPERATION, kind=kind).inc()
        if reason is None:
            raise
        return await _dead_letter(services, pending, "fetch_refused", reason)
    return FetchedObject(obj, fetched_at, API_VERSION)


async def _dead_letter(
    services: Services, pending: ProcessResult, outcome: str, reason: str
) -> ProcessResult:
    status = await inbox.dead_letter(services.pool, pending.event_id, outcome, reason)
    log.warning(
        "thin_event_dead_lettered",
        event_id=pending.event_id,
        event_type=pending.event_type,
        outcome=outcome,
        reason=reason,
    )
    return ProcessResult(pending.event_id, status or "missing", outcome, pending.event_type)
