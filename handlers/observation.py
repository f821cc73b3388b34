"""A Stripe object fetched from the API, as an observation the reducer orders against events.

One rule for every fetch (``reconcile`` and thin events): the object is Stripe's truth as of the
fetch, dated just before the second the fetch started (``floor(fetch) - 1 µs``). Events created in
earlier seconds are older than what was seen and lose to it; events of the fetch's own second or
later win, because Stripe dates events in whole seconds and cannot tell which side of the fetch
they fell on. So a stale fetch never overrides a newer snapshot, and the reducer's max over
``order_key`` keeps the final state independent of the order observations and events arrive in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from handlers.events import BillingEvent
from handlers.normalize import normalize


def observation_time(fetched_at: datetime) -> datetime:
    """The instant a fetch started at ``fetched_at`` is dated: just before its whole second."""
    return fetched_at.replace(microsecond=0) - timedelta(microseconds=1)


def as_observation(
    kind: str,
    obj: Mapping[str, Any],
    observed_at: datetime,
    *,
    event_id: str | None = None,
    event_type: str | None = None,
    api_version: str | None = None,
    occurred_at: datetime | None = None,
) -> BillingEvent:
    """A fetched object as the typed event the reducer takes, dated ``observed_at``.

    ``kind`` names the object (``invoice``, ``customer.subscription``); ``event_type`` the snapshot
    type it stands for (default ``<kind>.updated``); ``event_id`` the event that caused the fetch
    (default a reconcile id); ``occurred_at`` when that event happened, if it matters (a payment
    failure is dated when it happened, not when the invoice was fetched).
    """
    raw = {
        "object": "event",
        "id": event_id or f"evt_reconcile_{int(observed_at.timestamp()) + 1}_{obj.get('id')}",
        "type": event_type or f"{kind}.updated",
        "created": max(int(observed_at.timestamp()), 0),
        "api_version": api_version,
        "data": {"object": obj},
    }
    event = normalize(raw)
    meta = dataclasses.replace(event.meta, created=observed_at, occurred_at=occurred_at)
    return dataclasses.replace(event, meta=meta)
