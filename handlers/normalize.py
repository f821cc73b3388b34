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

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
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

# JSON objects and arrays are dicts and lists: the concrete types first, so the common case
# skips the abstract-class check (a Python-level call each, ten per event).
_MAPPINGS = (dict, Mapping)
_SEQUENCES = (list, tuple, Sequence)

NOT_A_STRIPE_EVENT = "not_a_stripe_event"
MALFORMED_EVENT = "malformed_event"

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
# Metadata keys the worker reads; other keys are the app's business and are not checked.
_METADATA_KEYS = ("workspace_id", "custom_contract", "price_id", "quantity")
# Latest unix time datetime can represent (9999-12-31T23:59:59Z); Stripe's are far below it.
_MAX_TIMESTAMP = 253_402_300_799


class PayloadError(ValueError):
    """A payload the worker cannot use.

    ``code`` is machine-readable: ``not_a_stripe_event`` (the envelope is not a Stripe event) or
    ``malformed_event`` (a handled event whose object lacks or mistypes a field). ``field`` is
    the dotted path of the offending field, when there is one.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field

    @property
    def message(self) -> str:
        return str(self)


def validate_event_envelope(obj: object) -> None:
    """Raise ``PayloadError(code="not_a_stripe_event")`` unless ``obj`` looks like a Stripe event.

    Checks only the envelope: ``object == "event"``, ``id`` a string ``evt_…`` of at most 255
    characters, ``type`` a non-empty string, ``created`` an integer (not a bool) and ``data`` an
    object whose ``object`` is an object. The content of ``data.object`` is ``normalize``'s job.
    """

    def fail(field: str | None, problem: str) -> PayloadError:
        where = f"`{field}` " if field else ""
        return PayloadError(NOT_A_STRIPE_EVENT, f"not a Stripe event: {where}{problem}", field)

    if not isinstance(obj, _MAPPINGS):
        raise fail(None, f"expected a JSON object, got {_json_type(obj)}")
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
    if not 0 <= created <= _MAX_TIMESTAMP:
        raise fail("created", f"is out of range: {created}")
    data = obj.get("data")
    if not isinstance(data, _MAPPINGS):
        raise fail("data", f"must be an object, got {_json_type(data)}")
    if not isinstance(data.get("object"), _MAPPINGS):
        raise fail("data.object", f"must be an object, got {_json_type(data.get('object'))}")


def normalize(raw: Mapping[str, Any]) -> BillingEvent:
    """Build the typed event for a raw Stripe event payload.

    Raises ``PayloadError`` with code ``not_a_stripe_event`` if the envelope is wrong and
    ``malformed_event`` (naming the field) if the object of a handled type is unusable.
    Unhandled types give ``IgnoredEvent`` without looking at their object.
    """
    validate_event_envelope(raw)
    meta = _meta(raw)
    obj = _Reader(raw["data"]["object"], "data.object")
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
    env = _Reader(raw, "")
    request = raw.get("request")
    request_id: str | None = None
    idempotency_key: str | None = None
    if isinstance(request, str):  # API versions before 2017-05-25: the request id alone
        request_id = request or None
    elif isinstance(request, _MAPPINGS):
        req = _Reader(request, "request")
        request_id = req.opt_str("id")
        idempotency_key = req.opt_str("idempotency_key")
    elif request is not None:
        raise _malformed("request", f"must be an object, a string or null, got {_json_type(request)}")
    return EventMeta(
        event_id=raw["id"],
        event_type=raw["type"],
        created=_timestamp(raw["created"], "created"),
        api_version=env.opt_str("api_version"),
        request_id=request_id,
        idempotency_key=idempotency_key,
    )


# --- subscription ---------------------------------------------------------------------------


def _subscription(sub: _Reader) -> SubscriptionSnapshot:
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
    workspace_id = _workspace(metadata) or (_workspace(customer.metadata("metadata")) if customer else None)
    status = sub.req_str("status")
    if status not in SUBSCRIPTION_STATUSES:
        raise _malformed(sub.path("status"), f"unknown subscription status {status!r}")
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
    item: _Reader, sub_start: datetime | None, sub_end: datetime | None
) -> SubscriptionItem:
    price_id = item.opt_id("price") or item.opt_id("plan")
    if price_id is None:
        raise _malformed(item.path("price"), "is required (a price id or an expanded price)")
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


def _invoice(inv: _Reader) -> InvoiceSnapshot:
    parent = inv.reader_or_none("parent")  # basil and later
    details = parent.reader_or_none("subscription_details") if parent else None
    legacy_details = inv.reader_or_none("subscription_details")  # before basil
    subscription_id = (details.opt_id("subscription") if details else None) or inv.opt_id("subscription")
    expanded_sub = inv.reader_or_none("subscription")
    customer = inv.reader_or_none("customer")
    workspace_id = (
        (_workspace(details.metadata("metadata")) if details else None)
        or (_workspace(legacy_details.metadata("metadata")) if legacy_details else None)
        or (_workspace(expanded_sub.metadata("metadata")) if expanded_sub else None)
        or _workspace(inv.metadata("metadata"))
        or (_workspace(customer.metadata("metadata")) if customer else None)
    )
    status = inv.req_str("status")
    if status not in INVOICE_STATUSES:
        raise _malformed(inv.path("status"), f"unknown invoice status {status!r}")
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


def _invoice_line(line: _Reader) -> InvoiceLine:
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


def _checkout(meta: EventMeta, session: _Reader) -> CheckoutCompleted:
    metadata = session.metadata("metadata")
    line_items = session.reader_or_none("line_items")  # only when expanded (never in webhooks)
    pairs: list[tuple[str, int]] = []
    if line_items is not None:
        for item in line_items.list_items("data", required=True, list_object=False):
            price_id = item.opt_id("price")
            if price_id is None:
                raise _malformed(item.path("price"), "is required on a checkout line item")
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
        workspace_id=_workspace(metadata) or reference or None,
        invoice_id=session.opt_id("invoice"),
    )


def _metadata_quantity(metadata: Mapping[str, str], path: str) -> int:
    value = metadata.get("quantity", "1")
    try:
        quantity = int(value.strip())
    except ValueError:
        raise _malformed(f"{path}.quantity", f"must be a whole number, got {value!r}") from None
    if quantity < 1:
        raise _malformed(f"{path}.quantity", f"must be at least 1, got {quantity}")
    return quantity


# --- helpers --------------------------------------------------------------------------------


def _workspace(metadata: Mapping[str, str]) -> str | None:
    value = metadata.get("workspace_id")
    return value if value else None


def _malformed(field: str, problem: str) -> PayloadError:
    return PayloadError(MALFORMED_EVENT, f"malformed event: `{field}` {problem}", field)


def _timestamp(value: int, field: str) -> datetime:
    if not 0 <= value <= _MAX_TIMESTAMP:
        raise _malformed(field, f"is out of range: {value}")
    return datetime.fromtimestamp(value, tz=UTC)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, _MAPPINGS):
        return "an object"
    if isinstance(value, _SEQUENCES):
        return "an array"
    return type(value).__name__


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Reader:
    """Typed access to one JSON object, naming the field's full path in every error."""

    __slots__ = ("_data", "_path")

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        self._data = data
        self._path = path

    def path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def expect_object(self, expected: str) -> None:
        kind = self._data.get("object")
        if kind is not None and kind != expected:
            raise _malformed(self.path("object"), f"must be {expected!r} for this event type, got {kind!r}")

    def req_str(self, key: str) -> str:
        value = self._data.get(key)
        if not isinstance(value, str) or not value:
            raise _malformed(self.path(key), f"must be a non-empty string, got {_json_type(value)}")
        return value

    def opt_str(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise _malformed(self.path(key), f"must be a string or null, got {_json_type(value)}")
        return value or None

    def req_int(self, key: str) -> int:
        value = self._data.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _malformed(self.path(key), f"must be an integer, got {_json_type(value)}")
        return value

    def opt_int(self, key: str, minimum: int | None = None) -> int | None:
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _malformed(self.path(key), f"must be an integer or null, got {_json_type(value)}")
        if minimum is not None and value < minimum:
            raise _malformed(self.path(key), f"must be >= {minimum}, got {value}")
        return value

    def opt_bool(self, key: str) -> bool:
        value = self._data.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise _malformed(self.path(key), f"must be true or false, got {_json_type(value)}")
        return value

    def req_ts(self, key: str) -> datetime:
        value = self.req_int(key)
        if 0 <= value <= _MAX_TIMESTAMP:  # the field's path is only built for an error
            return datetime.fromtimestamp(value, tz=UTC)
        return _timestamp(value, self.path(key))

    def opt_ts(self, key: str) -> datetime | None:
        value = self._data.get(key)
        if value.__class__ is int and 0 <= value <= _MAX_TIMESTAMP:  # the usual case, checked first
            return datetime.fromtimestamp(value, tz=UTC)
        value = self.opt_int(key)
        return None if value is None else _timestamp(value, self.path(key))

    def opt_id(self, key: str) -> str | None:
        """A reference: an id string, an expanded object with an ``id``, or null."""
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            if not value:
                raise _malformed(self.path(key), "must not be an empty string")
            return value
        if isinstance(value, _MAPPINGS):
            return _Reader(value, self.path(key)).req_str("id")
        raise _malformed(self.path(key), f"must be an id or an expanded object, got {_json_type(value)}")

    def req_id(self, key: str) -> str:
        value = self.opt_id(key)
        if value is None:
            raise _malformed(self.path(key), "is required (an id or an expanded object)")
        return value

    def reader_or_none(self, key: str) -> _Reader | None:
        """The nested object at ``key`` if it is an object (an id string or null gives None)."""
        value = self._data.get(key)
        if isinstance(value, _MAPPINGS):
            return _Reader(value, self.path(key))
        if value is None or isinstance(value, str):
            return None
        raise _malformed(self.path(key), f"must be an object, an id or null, got {_json_type(value)}")

    def metadata(self, key: str) -> Mapping[str, str]:
        """The metadata keys the worker reads (Stripe metadata values are strings)."""
        value = self._data.get(key)
        if value is None:
            return {}
        if not isinstance(value, _MAPPINGS):
            raise _malformed(self.path(key), f"must be an object or null, got {_json_type(value)}")
        out = {}
        for name in _METADATA_KEYS:
            item = value.get(name)
            if item is None:
                continue
            if not isinstance(item, str):
                raise _malformed(f"{self.path(key)}.{name}", f"must be a string, got {_json_type(item)}")
            out[name] = item
        return out

    def list_items(self, key: str, *, required: bool, list_object: bool = True) -> list[_Reader]:
        """Elements of a Stripe list object (``{"object": "list", "data": [...]}``) or array."""
        value = self._data.get(key)
        path = self.path(key)
        if value is None:
            if required:
                raise _malformed(path, "is required")
            return []
        if list_object:
            if not isinstance(value, _MAPPINGS):
                raise _malformed(path, f"must be a list object, got {_json_type(value)}")
            value = value.get("data")
            path = f"{path}.data"
        if isinstance(value, str | bytes) or not isinstance(value, _SEQUENCES):
            raise _malformed(path, f"must be an array, got {_json_type(value)}")
        out = []
        for index, element in enumerate(value):
            if not isinstance(element, _MAPPINGS):
                raise _malformed(f"{path}[{index}]", f"must be an object, got {_json_type(element)}")
            out.append(_Reader(element, f"{path}[{index}]"))
        return out


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
