"""Realistic, validly signed webhook bodies with unique ids, cheap enough to make by the ten thousand.

One body per event type is rendered by ``tests.support.stripe_factory`` (the 2026 API shape, ~3.5 kB, like
Stripe's); unique events are that body with the ids substituted, so a load generator spends its
CPU on sending, not on building dicts.
"""

from __future__ import annotations

import json
import time

import stripe

from tests.support import stripe_factory as sf
from tests.support.thin_events import thin_of

_WS, _CUS, _SUB, _EVT = "ws_BENCHWSXX", "cus_BENCHCUSXX", "sub_BENCHSUBXX", "evt_BENCHEVTXX"


def _template(kind: str) -> str:
    (created, *_rest) = sf.history_lifecycle(workspace_id=_WS, customer=_CUS, sub_id=_SUB, id_prefix=_EVT)
    event = created if kind == "created" else _rest[1]  # created (trialing) or updated (active)
    event["id"] = _EVT
    return json.dumps(event)


_TEMPLATES: dict[str, str] = {}


def event_body(serial: int | str, *, kind: str = "created", workspace: str | None = None) -> str:
    """A ``customer.subscription.<kind>`` body: unique event id; workspace ``ws_b<serial>`` unless given."""
    text = _TEMPLATES.get(kind) or _TEMPLATES.setdefault(kind, _template(kind))
    ws = workspace or f"ws_b{serial}"
    return (
        text.replace(_EVT, f"evt_b{serial}_{kind}")
        .replace(_WS, ws)
        .replace(_CUS, f"cus_{ws}")
        .replace(_SUB, f"sub_{ws}")
    )


_THIN_TEMPLATE: list[str] = []


def thin_body(serial: int | str) -> str:
    """A thin notification (``v1.customer.subscription.created``, ~0.3 kB, checked against the
    SDK's class by ``tests.support.thin_events``): the receiver stores it and calls nobody."""
    if not _THIN_TEMPLATE:
        created = json.loads(_template("created"))
        _THIN_TEMPLATE.append(json.dumps(thin_of(created, context="acct_BENCH")))
    ws = f"ws_b{serial}"
    return _THIN_TEMPLATE[0].replace(f"{_EVT}_thin", f"evt_b{serial}_thin").replace(_SUB, f"sub_{ws}")


def signature(body: str, secret: str, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        body, secret, timestamp=timestamp or int(time.time())
    )
