"""Thin event notifications for tests: shaped as Stripe's API reference shows them, checked
against the official SDK's own notification classes, and delivered over HTTP with the related
object served by the local server that plays Stripe.

A thin notification is built as the counterpart of a snapshot event of the factory
(``stripe_factory``): the same occurrence (``v1.<type>``, same instant), its object being what
Stripe answers when the worker fetches it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from stripe.events._event_classes import get_v2_event_notification_class

from tests.support.clock import MovableClock
from tests.support.helpers import RunningService
from tests.support.stripe_server import StripeServer

# related_object.type and the API path of each object family a handled thin type points at.
_PATHS = {
    "invoice": "/v1/invoices/",
    "subscription": "/v1/subscriptions/",
    "checkout.session": "/v1/checkout/sessions/",
    "customer": "/v1/customers/",
}
_SDK = stripe.StripeClient("sk_test_thin_factory")


def iso(moment: datetime) -> str:
    """Stripe's thin ``created``: ISO 8601, milliseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def thin_notification(
    event_type: str,
    related_id: str,
    related_type: str,
    *,
    created: datetime,
    event_id: str,
    context: str | None = None,
    idempotency_key: str | None = None,
    livemode: bool = False,
) -> dict[str, Any]:
    """A thin notification as the API reference's example shows it (``v2.core.event``)."""
    payload: dict[str, Any] = {
        "id": event_id,
        "object": "v2.core.event",
        "type": event_type,
        "livemode": livemode,
        "created": iso(created),
        "related_object": {"id": related_id, "type": related_type, "url": _PATHS[related_type] + related_id},
    }
    if context is not None:
        payload["context"] = context
    if idempotency_key is not None:
        payload["reason"] = {
            "type": "request",
            "request": {"id": "req_thin", "idempotency_key": idempotency_key},
        }
    check_with_sdk(payload)
    return payload


def check_with_sdk(payload: Mapping[str, Any]) -> stripe.v2.core.EventNotification:
    """Parse ``payload`` with the SDK: it must give the SDK's own class for its type, with the same
    id, type, context and related object."""
    parsed = _SDK.parse_event_notification_without_verification(json.dumps(payload))
    assert type(parsed) is get_v2_event_notification_class(payload["type"]), type(parsed)
    assert (parsed.id, parsed.type, parsed.created) == (payload["id"], payload["type"], payload["created"])
    assert str(parsed.context or "") == (payload.get("context") or "")
    related = parsed.related_object  # type: ignore[attr-defined]
    assert (related.id, related.type, related.url) == tuple(
        payload["related_object"][k] for k in ("id", "type", "url")
    )
    return parsed


def thin_of(
    snapshot: Mapping[str, Any],
    *,
    context: str | None = None,
    suffix: str = "thin",
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """The thin counterpart of a snapshot event: ``v1.<type>``, the same instant (plus the
    milliseconds Stripe's ISO time carries), its ``data.object`` as the related object."""
    obj = snapshot["data"]["object"]
    related_type = "checkout.session" if obj["object"] == "checkout.session" else obj["object"]
    created = datetime.fromtimestamp(snapshot["created"], UTC) + timedelta(milliseconds=123)
    return thin_notification(
        f"v1.{snapshot['type']}",
        obj["id"],
        related_type,
        created=created,
        event_id=f"{snapshot['id']}_{suffix}",
        context=context,
        idempotency_key=idempotency_key,
    )


async def deliver_thin(
    svc: RunningService,
    server: StripeServer,
    snapshot: Mapping[str, Any],
    *,
    clock: MovableClock | None = None,
    context: str | None = None,
    fetch_after: int = 5,
) -> dict[str, Any]:
    """Stripe's side of one occurrence sent as a thin event: its object becomes what Stripe
    serves, the notification is signed and posted (200), and it is waited for until final. With
    ``clock``, the worker's clock first moves on to ``fetch_after`` seconds after the event."""
    server.put(snapshot["data"]["object"])
    thin = thin_of(snapshot, context=context)
    server.expect_thin(thin)
    if clock is not None:
        clock.now = max(clock.now, datetime.fromtimestamp(snapshot["created"] + fetch_after, UTC))
    status, body = await svc.post_event(thin)
    assert status == 200, body
    assert body == {"received": True, "duplicate": False, "event_id": thin["id"]}
    await svc.wait_processed([thin["id"]])
    return thin


def related_fetches(server: StripeServer, thin: Mapping[str, Any]) -> list[Any]:
    """The requests the worker made for ``thin``'s related object."""
    return [r for r in server.requests if r.request_trigger == f"event={thin['id']}"]
