"""Raw Stripe event payloads (any API version) → typed billing events: envelope checks and dispatch.

The objects are read by ``stripe_subscription``, ``stripe_invoice`` and ``stripe_checkout`` through
the typed field reader of ``stripe_fields``; ``PayloadError`` is re-exported from there.

Pure: no I/O, no clock, no globals beyond constant tables. The shell calls
``validate_event_envelope`` on every body it receives (a failure is a 400: "JSON that is not a
Stripe event") and ``normalize`` when it processes a stored event.

Shapes accepted (see ``tests/fixtures/stripe/README.md`` for sources):

* pre-2025 (e.g. ``2024-06-20``): ``subscription.current_period_start/end`` at the top level,
  ``invoice.subscription`` and ``invoice.subscription_details.metadata``, invoice lines with
  ``price`` / ``plan`` and a top-level ``proration`` flag.
* ``2025-03-31.basil`` and later: periods on ``subscription.items.data[].current_period_*``,
  ``invoice.parent.subscription_details.{subscription, metadata}``, line prices at
  ``pricing.price_details.price`` and the proration flag at
  ``parent.subscription_item_details.proration`` / ``parent.invoice_item_details.proration``.
* ``2026-09-30.endive`` adds fields (``status_details``, item ``billed_until`` /
  ``current_trial``, ``billing_mode`` …) that are simply ignored: unknown fields are tolerated.

Unknown enum values (a subscription status a newer API version adds …) are kept as they came, and
optional shapes that are off (``"lines": {}`` of 2020-era invoices, an object that is a number …)
are read around; ``read_event`` returns both as ``Unexpected`` paths beside the event. Only a
payload without what the reducer needs (an object id, the customer, an integer amount, a status)
raises ``PayloadError``.

References to other objects may be an id string or the expanded object. Unix timestamps become
aware UTC datetimes; money stays in integer minor units.

The same logical event in any of these shapes normalises to the same typed event (apart from
``meta.api_version``): on a pre-basil subscription every item gets the subscription's period
(in the classic billing mode of those versions all items share it), and on a basil-or-later
subscription ``current_period_*`` is the period all items share (``None`` if they differ).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers.events import BillingEvent, EventMeta, IgnoredEvent, InvoiceObserved, SubscriptionObserved
from handlers.evolve import evolve, quick_init
from handlers.stripe_checkout import read_checkout
from handlers.stripe_fields import (
    MALFORMED_EVENT,
    MAPPINGS,
    MAX_TIMESTAMP,
    NOT_A_STRIPE_EVENT,
    FieldReader,
    PayloadError,
    Unexpected,
    event_id_and_type,
    json_type,
    malformed,
    short_repr,
    timestamp,
)
from handlers.stripe_invoice import read_invoice
from handlers.stripe_subscription import read_subscription

SUBSCRIPTION_EVENT_TYPES = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.trial_will_end",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.pending_update_applied",
        "customer.subscription.pending_update_expired",
    }
)
# The subscription these carry has no pending update any more, whatever its payload says.
PENDING_UPDATE_SETTLED_TYPES = frozenset(
    {"customer.subscription.pending_update_applied", "customer.subscription.pending_update_expired"}
)
INVOICE_EVENT_TYPES = frozenset(
    {
        "invoice.created",
        "invoice.updated",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "invoice.payment_action_required",
        "invoice.voided",
        "invoice.marked_uncollectible",
    }
)
CHECKOUT_EVENT_TYPES = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",  # a delayed payment method (bank debit) paid
        "checkout.session.async_payment_failed",
    }
)
HANDLED_EVENT_TYPES = SUBSCRIPTION_EVENT_TYPES | INVOICE_EVENT_TYPES | CHECKOUT_EVENT_TYPES


def validate_event_envelope(obj: object) -> None:
    """Raise ``PayloadError(code="not_a_stripe_event")`` unless ``obj`` looks like a Stripe event.

    Checks only the envelope: ``object == "event"``, ``id`` a string ``evt_…`` of at most 255
    characters, ``type`` a non-empty string, ``created`` an integer (not a bool) and ``data`` an
    object whose ``object`` is an object. The content of ``data.object`` is ``normalize``'s job.
    """

    def fail(field: str | None, problem: str) -> PayloadError:
        where = f"`{field}` " if field else ""
        return PayloadError(NOT_A_STRIPE_EVENT, f"not a Stripe event: {where}{problem}", field)

    if not isinstance(obj, MAPPINGS):
        raise fail(None, f"expected a JSON object, got {json_type(obj)}")
    kind = obj.get("object")
    if kind != "event":
        if kind == "v2.core.event":
            raise fail("object", "is 'v2.core.event': a thin notification, read by handlers.thin")
        raise fail("object", f"must be 'event', got {short_repr(kind)}")
    event_id_and_type(obj, fail)
    created = obj.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        raise fail("created", f"must be an integer unix timestamp, got {short_repr(created)}")
    if not 0 <= created <= MAX_TIMESTAMP:
        raise fail("created", f"is out of range: {created}")
    data = obj.get("data")
    if not isinstance(data, MAPPINGS):
        raise fail("data", f"must be an object, got {json_type(data)}")
    if not isinstance(data.get("object"), MAPPINGS):
        raise fail("data.object", f"must be an object, got {json_type(data.get('object'))}")


@quick_init
@dataclass(frozen=True)
class Reading:
    """A typed event and the shapes of its payload that were read around (for the shell to log)."""

    event: BillingEvent
    unexpected: tuple[Unexpected, ...] = ()


def normalize(raw: Mapping[str, Any]) -> BillingEvent:
    """Build the typed event for a raw Stripe event payload (``read_event`` without the notes)."""
    return read_event(raw).event


def read_event(raw: Mapping[str, Any]) -> Reading:
    """Build the typed event for a raw Stripe event payload, with what was unexpected in it.

    Raises ``PayloadError`` with code ``not_a_stripe_event`` if the envelope is wrong and
    ``malformed_event`` (naming the field) if the object of a handled type lacks what the reducer
    needs. Unhandled types give ``IgnoredEvent`` without looking at their object.
    """
    validate_event_envelope(raw)
    meta = _meta(raw)
    obj = FieldReader(raw["data"]["object"], "data.object")
    event: BillingEvent
    if meta.event_type in SUBSCRIPTION_EVENT_TYPES:
        obj.expect_object("subscription")
        snapshot = read_subscription(obj)
        if meta.event_type in PENDING_UPDATE_SETTLED_TYPES and snapshot.pending_update is not None:
            snapshot = evolve(snapshot, pending_update=None)
        event = SubscriptionObserved(meta, snapshot)
    elif meta.event_type in INVOICE_EVENT_TYPES:
        obj.expect_object("invoice")
        event = InvoiceObserved(
            meta,
            read_invoice(obj),
            payment_failed=meta.event_type == "invoice.payment_failed",
            action_required=meta.event_type == "invoice.payment_action_required",
        )
    elif meta.event_type in CHECKOUT_EVENT_TYPES:
        obj.expect_object("checkout.session")
        event = read_checkout(meta, obj)
    else:
        return Reading(IgnoredEvent(meta))
    return Reading(event, tuple(obj.unexpected))


# --- envelope -------------------------------------------------------------------------------


def _meta(raw: Mapping[str, Any]) -> EventMeta:
    env = FieldReader(raw, "")
    request = raw.get("request")
    request_id: str | None = None
    idempotency_key: str | None = None
    if isinstance(request, str):  # API versions before 2017-05-25: the request id alone
        request_id = request or None
    elif isinstance(request, MAPPINGS):
        req = FieldReader(request, "request")
        request_id = req.opt_str("id")
        idempotency_key = req.opt_str("idempotency_key")
    elif request is not None:
        raise malformed("request", f"must be an object, a string or null, got {json_type(request)}")
    return EventMeta(
        event_id=raw["id"],
        event_type=raw["type"],
        created=timestamp(raw["created"], "created"),
        api_version=env.opt_str("api_version"),
        request_id=request_id,
        idempotency_key=idempotency_key,
    )


__all__ = [
    "CHECKOUT_EVENT_TYPES",
    "HANDLED_EVENT_TYPES",
    "INVOICE_EVENT_TYPES",
    "MALFORMED_EVENT",
    "NOT_A_STRIPE_EVENT",
    "PENDING_UPDATE_SETTLED_TYPES",
    "SUBSCRIPTION_EVENT_TYPES",
    "PayloadError",
    "Reading",
    "Unexpected",
    "normalize",
    "read_event",
    "validate_event_envelope",
]
