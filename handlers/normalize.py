"""Raw Stripe event payloads (any API version) → typed billing events.

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

References to other objects may be an id string or the expanded object. Unix timestamps become
aware UTC datetimes; money stays in integer minor units.

The same logical event in any of these shapes normalises to the same typed event (apart from
``meta.api_version``): on a pre-basil subscription every item gets the subscription's period
(in the classic billing mode of those versions all items share it), and on a basil-or-later
subscription ``current_period_*`` is the period all items share (``None`` if they differ).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from handlers.events import (
    INVOICE_STATUSES,
    SUBSCRIPTION_STATUSES,
    BillingEvent,
    CheckoutCompleted,
    EventMeta,
    IgnoredEvent,
    InvoiceLine,
    InvoiceObserved,
    InvoiceSnapshot,
    SubscriptionItem,
    SubscriptionObserved,
    SubscriptionSnapshot,
)
from handlers.stripe_fields import (
    MALFORMED_EVENT,
    MAPPINGS,
    MAX_TIMESTAMP,
    NOT_A_STRIPE_EVENT,
    FieldReader,
    PayloadError,
    json_type,
    malformed,
    timestamp,
    workspace_of,
)

SUBSCRIPTION_EVENT_TYPES = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.trial_will_end",
        "customer.subscription.paused",
        "customer.subscription.resumed",
    }
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
CHECKOUT_EVENT_TYPES = frozenset({"checkout.session.completed"})
HANDLED_EVENT_TYPES = SUBSCRIPTION_EVENT_TYPES | INVOICE_EVENT_TYPES | CHECKOUT_EVENT_TYPES

MAX_EVENT_ID_LENGTH = 255


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
            raise fail("object", "is 'v2.core.event': thin events are not supported")
        raise fail("object", f"must be 'event', got {_short(kind)}")
    event_id = obj.get("id")
    if not isinstance(event_id, str) or not event_id.startswith("evt_"):
        raise fail("id", f"must be a string starting with 'evt_', got {_short(event_id)}")
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        raise fail("id", f"must be at most {MAX_EVENT_ID_LENGTH} characters, got {len(event_id)}")
    event_type = obj.get("type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise fail("type", f"must be a non-empty string, got {_short(event_type)}")
    created = obj.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        raise fail("created", f"must be an integer unix timestamp, got {_short(created)}")
    if not 0 <= created <= MAX_TIMESTAMP:
        raise fail("created", f"is out of range: {created}")
    data = obj.get("data")
    if not isinstance(data, MAPPINGS):
        raise fail("data", f"must be an object, got {json_type(data)}")
    if not isinstance(data.get("object"), MAPPINGS):
        raise fail("data.object", f"must be an object, got {json_type(data.get('object'))}")


def normalize(raw: Mapping[str, Any]) -> BillingEvent:
    """Build the typed event for a raw Stripe event payload.

    Raises ``PayloadError`` with code ``not_a_stripe_event`` if the envelope is wrong and
    ``malformed_event`` (naming the field) if the object of a handled type is unusable.
    Unhandled types give ``IgnoredEvent`` without looking at their object.
    """
    validate_event_envelope(raw)
    meta = _meta(raw)
    obj = FieldReader(raw["data"]["object"], "data.object")
    if meta.event_type in SUBSCRIPTION_EVENT_TYPES:
        obj.expect_object("subscription")
        return SubscriptionObserved(meta, _subscription(obj))
    if meta.event_type in INVOICE_EVENT_TYPES:
        obj.expect_object("invoice")
        return InvoiceObserved(
            meta,
            _invoice(obj),
            payment_failed=meta.event_type == "invoice.payment_failed",
            action_required=meta.event_type == "invoice.payment_action_required",
        )
    if meta.event_type in CHECKOUT_EVENT_TYPES:
        obj.expect_object("checkout.session")
        return _checkout(meta, obj)
    return IgnoredEvent(meta)


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


# --- subscription ---------------------------------------------------------------------------


def _subscription(sub: FieldReader) -> SubscriptionSnapshot:
    top_start = sub.opt_ts("current_period_start")  # pre-basil only
    top_end = sub.opt_ts("current_period_end")
    items = tuple(
        _subscription_item(item, top_start, top_end) for item in sub.list_items("items", required=True)
    )
    if top_start is not None or top_end is not None:
        period_start, period_end = top_start, top_end
    else:
        period_start = _shared({i.period_start for i in items})
        period_end = _shared({i.period_end for i in items})
    metadata = sub.metadata("metadata")
    customer = sub.reader_or_none("customer")
    workspace_id = workspace_of(metadata) or (
        workspace_of(customer.metadata("metadata")) if customer else None
    )
    status = sub.req_str("status")
    if status not in SUBSCRIPTION_STATUSES:
        raise malformed(sub.path("status"), f"unknown subscription status {status!r}")
    return SubscriptionSnapshot(
        subscription_id=sub.req_str("id"),
        customer_id=sub.req_id("customer"),
        status=status,
        items=items,
        current_period_start=period_start,
        current_period_end=period_end,
        trial_end=sub.opt_ts("trial_end"),
        cancel_at_period_end=sub.opt_bool("cancel_at_period_end"),
        cancel_at=sub.opt_ts("cancel_at"),
        canceled_at=sub.opt_ts("canceled_at"),
        ended_at=sub.opt_ts("ended_at"),
        start_date=sub.opt_ts("start_date"),
        workspace_id=workspace_id,
        custom_contract=metadata.get("custom_contract", "").strip().lower() == "true",
    )


def _subscription_item(
    item: FieldReader, sub_start: datetime | None, sub_end: datetime | None
) -> SubscriptionItem:
    price_id = item.opt_id("price") or item.opt_id("plan")
    if price_id is None:
        raise malformed(item.path("price"), "is required (a price id or an expanded price)")
    start = item.opt_ts("current_period_start")
    end = item.opt_ts("current_period_end")
    return SubscriptionItem(
        item_id=item.req_str("id"),
        price_id=price_id,
        quantity=item.opt_int("quantity", minimum=0) or 0,  # absent on metered items
        period_start=start if start is not None else sub_start,
        period_end=end if end is not None else sub_end,
    )


def _shared(values: set[datetime | None]) -> datetime | None:
    return next(iter(values)) if len(values) == 1 else None


# --- invoice --------------------------------------------------------------------------------


def _invoice(inv: FieldReader) -> InvoiceSnapshot:
    parent = inv.reader_or_none("parent")  # basil and later
    details = parent.reader_or_none("subscription_details") if parent else None
    legacy_details = inv.reader_or_none("subscription_details")  # before basil
    subscription_id = (details.opt_id("subscription") if details else None) or inv.opt_id("subscription")
    expanded_sub = inv.reader_or_none("subscription")
    customer = inv.reader_or_none("customer")
    workspace_id = (
        (workspace_of(details.metadata("metadata")) if details else None)
        or (workspace_of(legacy_details.metadata("metadata")) if legacy_details else None)
        or (workspace_of(expanded_sub.metadata("metadata")) if expanded_sub else None)
        or workspace_of(inv.metadata("metadata"))
        or (workspace_of(customer.metadata("metadata")) if customer else None)
    )
    status = inv.req_str("status")
    if status not in INVOICE_STATUSES:
        raise malformed(inv.path("status"), f"unknown invoice status {status!r}")
    amount_due = inv.req_int("amount_due")
    amount_paid = inv.req_int("amount_paid")
    remaining = inv.opt_int("amount_remaining")
    return InvoiceSnapshot(
        invoice_id=inv.req_str("id"),
        customer_id=inv.req_id("customer"),
        subscription_id=subscription_id,
        status=status,
        currency=inv.req_str("currency"),
        amount_due=amount_due,
        amount_paid=amount_paid,
        amount_remaining=remaining if remaining is not None else max(amount_due - amount_paid, 0),
        attempt_count=inv.opt_int("attempt_count", minimum=0) or 0,
        next_payment_attempt=inv.opt_ts("next_payment_attempt"),
        billing_reason=inv.opt_str("billing_reason"),
        created=inv.req_ts("created"),
        due_date=inv.opt_ts("due_date"),
        period_start=inv.opt_ts("period_start"),
        period_end=inv.opt_ts("period_end"),
        lines=tuple(_invoice_line(line) for line in inv.list_items("lines", required=False)),
        workspace_id=workspace_id,
    )


def _invoice_line(line: FieldReader) -> InvoiceLine:
    pricing = line.reader_or_none("pricing")  # basil and later
    price_details = pricing.reader_or_none("price_details") if pricing else None
    price_id = (
        (price_details.opt_id("price") if price_details else None)
        or line.opt_id("price")
        or line.opt_id("plan")
    )
    parent = line.reader_or_none("parent")
    if parent is not None:
        proration = False
        for key in ("subscription_item_details", "invoice_item_details"):
            details = parent.reader_or_none(key)
            if details is not None:
                proration = proration or details.opt_bool("proration")
    else:
        proration = line.opt_bool("proration")
    return InvoiceLine(
        price_id=price_id,
        quantity=line.opt_int("quantity", minimum=0) or 0,
        amount=line.req_int("amount"),
        proration=proration,
    )


# --- checkout -------------------------------------------------------------------------------


def _checkout(meta: EventMeta, session: FieldReader) -> CheckoutCompleted:
    metadata = session.metadata("metadata")
    line_items = session.reader_or_none("line_items")  # only when expanded (never in webhooks)
    pairs: list[tuple[str, int]] = []
    if line_items is not None:
        for item in line_items.list_items("data", required=True, list_object=False):
            price_id = item.opt_id("price")
            if price_id is None:
                raise malformed(item.path("price"), "is required on a checkout line item")
            quantity = item.opt_int("quantity", minimum=0)
            pairs.append((price_id, 1 if quantity is None else quantity))
    elif metadata.get("price_id"):
        pairs.append((metadata["price_id"], _metadata_quantity(metadata, session.path("metadata"))))
    reference = session.opt_str("client_reference_id")
    return CheckoutCompleted(
        meta=meta,
        session_id=session.req_str("id"),
        customer_id=session.opt_id("customer"),
        mode=session.req_str("mode"),
        payment_status=session.req_str("payment_status"),
        price_quantities=tuple(pairs),
        workspace_id=workspace_of(metadata) or reference or None,
        invoice_id=session.opt_id("invoice"),
    )


def _metadata_quantity(metadata: Mapping[str, str], path: str) -> int:
    value = metadata.get("quantity", "1")
    try:
        quantity = int(value.strip())
    except ValueError:
        raise malformed(f"{path}.quantity", f"must be a whole number, got {value!r}") from None
    if quantity < 1:
        raise malformed(f"{path}.quantity", f"must be at least 1, got {quantity}")
    return quantity


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = [
    "CHECKOUT_EVENT_TYPES",
    "HANDLED_EVENT_TYPES",
    "INVOICE_EVENT_TYPES",
    "MALFORMED_EVENT",
    "NOT_A_STRIPE_EVENT",
    "SUBSCRIPTION_EVENT_TYPES",
    "PayloadError",
    "normalize",
    "validate_event_envelope",
]
