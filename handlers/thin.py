"""Thin event notifications (``"object": "v2.core.event"``): recognise, check, map, observe.

Stripe's event destinations can send *thin* notifications instead of snapshot events: a small,
unversioned payload naming what happened (``type`` such as ``v1.invoice.paid``, ``created`` as an
ISO 8601 string) and the object it happened to (``related_object``: ``id``, ``type``, ``url``),
plus the ``context`` (account) to fetch it with. The shell stores them like any event, fetches the
related object when it acts on the type, and hands the fetched object back here:
``thin_observation`` makes it an observation of that object at fetch time
(``handlers.observation``), reduced exactly like a reconcile, so a stale fetch never overrides a
newer snapshot and any mix of thin and snapshot events gives the same state in any order.

Handled: the ``v1.`` counterpart of every snapshot type ``handlers.normalize`` handles. Other thin
types (``v1.customer.created``, every ``v2.*``) are stored and ``ignored``.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from handlers.events import BillingEvent, EventMeta, IgnoredEvent
from handlers.evolve import quick_init
from handlers.normalize import (
    CHECKOUT_EVENT_TYPES,
    HANDLED_EVENT_TYPES,
    INVOICE_EVENT_TYPES,
    SUBSCRIPTION_EVENT_TYPES,
)
from handlers.observation import as_observation, observation_time
from handlers.stripe_fields import (
    MAPPINGS,
    NOT_A_STRIPE_EVENT,
    PayloadError,
    event_id_and_type,
    json_type,
    short_repr,
)

THIN_OBJECT = "v2.core.event"
V1_PREFIX = "v1."
MAX_URL_LENGTH = 2048
# The reason a thin event the worker acts on is dead-lettered when no API key is configured.
THIN_NEEDS_KEY = "thin events need STRIPE_API_KEY"


@quick_init
@dataclass(frozen=True)
class RelatedObject:
    object_id: str
    object_type: str  # Stripe's object name: invoice, subscription, checkout.session …
    url: str  # the API path to fetch it at, e.g. /v1/invoices/in_123


@quick_init
@dataclass(frozen=True)
class ThinNotification:
    """A checked thin notification: what the inbox stores and what the fetch needs."""

    event_id: str
    event_type: str
    created: datetime
    livemode: bool
    context: str | None
    related: RelatedObject | None
    request_id: str | None = None  # reason.request: the API request that caused the event
    idempotency_key: str | None = None


def is_thin(raw: object) -> bool:
    """Whether a decoded body is a thin notification (its ``object`` says so)."""
    return isinstance(raw, MAPPINGS) and raw.get("object") == THIN_OBJECT


def snapshot_type(thin_type: str) -> str | None:
    """``v1.invoice.paid`` → ``invoice.paid`` when billing-worker acts on it, else None."""
    if not thin_type.startswith(V1_PREFIX):
        return None
    name = thin_type[len(V1_PREFIX) :]
    return name if name in HANDLED_EVENT_TYPES else None


def object_kind(event_type: str) -> str:
    """The object family of a handled snapshot type, as ``as_observation`` names it."""
    if event_type in SUBSCRIPTION_EVENT_TYPES:
        return "customer.subscription"
    if event_type in INVOICE_EVENT_TYPES:
        return "invoice"
    if event_type in CHECKOUT_EVENT_TYPES:
        return "checkout.session"
    return event_type.rsplit(".", 1)[0]


def needs_fetch(notification: ThinNotification) -> bool:
    """Whether the worker acts on this notification (then it must fetch the related object)."""
    return notification.related is not None and snapshot_type(notification.event_type) is not None


def parse_thin(raw: Mapping[str, Any]) -> ThinNotification:
    """Check a thin notification's envelope; ``PayloadError(not_a_stripe_event)`` naming the field.

    Checks what billing-worker stores and uses: ``id`` (``evt_…``, at most 255 characters),
    ``type`` (a non-empty string), ``created`` (ISO 8601 with a time zone), ``livemode`` (a
    boolean, optional), ``context`` (a string or null), ``related_object`` (absent, null, or an
    object with string ``id``, ``type`` and a ``url`` path starting with ``/``) and
    ``reason.request`` (optional). Other fields are Stripe's to add.
    """

    def fail(field: str | None, problem: str) -> PayloadError:
        where = f"`{field}` " if field else ""
        return PayloadError(NOT_A_STRIPE_EVENT, f"not a Stripe thin event: {where}{problem}", field)

    if not is_thin(raw):
        raise fail("object", f"must be {THIN_OBJECT!r}")
    event_id, event_type = event_id_and_type(raw, fail)
    created = _iso_time(raw.get("created"))
    if created is None:
        raise fail("created", f"must be an ISO 8601 time with a zone, got {short_repr(raw.get('created'))}")
    livemode = raw.get("livemode", False)
    if not isinstance(livemode, bool):
        raise fail("livemode", f"must be a boolean, got {json_type(livemode)}")
    context = raw.get("context")
    if context is not None and not isinstance(context, str):
        raise fail("context", f"must be a string or null, got {json_type(context)}")
    related = _related(raw.get("related_object"), fail)
    request_id, idempotency_key = _reason(raw.get("reason"))
    return ThinNotification(
        event_id=event_id,
        event_type=event_type,
        created=created,
        livemode=livemode,
        context=context or None,
        related=related,
        request_id=request_id,
        idempotency_key=idempotency_key,
    )


@quick_init
@dataclass(frozen=True)
class FetchedObject:
    """A thin event's related object as the worker fetched it (plain JSON), when, and in which
    API version (the one the fetch pinned)."""

    obj: Mapping[str, Any]
    fetched_at: datetime
    api_version: str | None


def thin_event(notification: ThinNotification, fetched: FetchedObject | None) -> BillingEvent | None:
    """A thin event as the reducer takes it: ignored when billing-worker does not act on its
    type, else the observation of its fetched related object — None while that is not fetched."""
    if not needs_fetch(notification):
        return IgnoredEvent(EventMeta(notification.event_id, notification.event_type, notification.created))
    if fetched is None:
        return None
    return thin_observation(notification, fetched.obj, fetched.fetched_at, fetched.api_version)


def thin_observation(
    notification: ThinNotification, obj: Mapping[str, Any], fetched_at: datetime, api_version: str | None
) -> BillingEvent:
    """The fetched related object as the event the reducer takes: an observation of that object
    dated at the fetch (``observation_time``), carrying the notification's id, its snapshot type
    (so ``v1.invoice.payment_failed`` still records a failure, dated when it happened) and the
    request that caused it (a plan change's ``Idempotency-Key`` confirms the change).

    Raises ``PayloadError(malformed_event)`` when the object lacks what the reducer needs, and
    ``ValueError`` when called for a type billing-worker does not act on.
    """
    event_type = snapshot_type(notification.event_type)
    if event_type is None:
        raise ValueError(f"{notification.event_type} is not a thin type billing-worker acts on")
    event = as_observation(
        object_kind(event_type),
        obj,
        observation_time(fetched_at),
        event_id=notification.event_id,
        event_type=event_type,
        api_version=api_version,
        # Stripe dates snapshot events in whole seconds: the same occurrence, the same instant.
        occurred_at=notification.created.replace(microsecond=0),
    )
    if notification.request_id or notification.idempotency_key:
        meta = dataclasses.replace(
            event.meta, request_id=notification.request_id, idempotency_key=notification.idempotency_key
        )
        event = dataclasses.replace(event, meta=meta)
    return event


# --- helpers ---------------------------------------------------------------------------------


def _iso_time(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 string with a zone (``…Z`` included), else None."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


def _related(value: object, fail: Any) -> RelatedObject | None:
    if value is None:
        return None
    if not isinstance(value, MAPPINGS):
        raise fail("related_object", f"must be an object or null, got {json_type(value)}")
    fields = {}
    for name in ("id", "type", "url"):
        item = value.get(name)
        if not isinstance(item, str) or not item:
            raise fail(f"related_object.{name}", f"must be a non-empty string, got {short_repr(item)}")
        fields[name] = item
    url = fields["url"]
    if not url.startswith("/") or url.startswith("//") or len(url) > MAX_URL_LENGTH:
        raise fail("related_object.url", f"must be an API path starting with '/', got {short_repr(url)}")
    return RelatedObject(fields["id"], fields["type"], url)


def _reason(value: object) -> tuple[str | None, str | None]:
    """``reason.request.{id, idempotency_key}`` when present and well-typed (informative only)."""
    if not isinstance(value, MAPPINGS):
        return None, None
    request = value.get("request")
    if not isinstance(request, MAPPINGS):
        return None, None
    request_id, key = request.get("id"), request.get("idempotency_key")
    return (
        request_id if isinstance(request_id, str) and request_id else None,
        key if isinstance(key, str) and key else None,
    )


__all__ = [
    "THIN_NEEDS_KEY",
    "THIN_OBJECT",
    "FetchedObject",
    "RelatedObject",
    "ThinNotification",
    "is_thin",
    "needs_fetch",
    "object_kind",
    "parse_thin",
    "snapshot_type",
    "thin_event",
    "thin_observation",
]
