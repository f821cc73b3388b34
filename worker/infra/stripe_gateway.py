"""Outgoing Stripe API calls through the official SDK's async client, API version pinned.

Writes (plan changes) always carry an idempotency key derived from what they do, so a retry after
a crash between the call and our commit repeats the same request instead of making a second one.
"""

from __future__ import annotations

import json
from typing import Any

import stripe

# The API version every outgoing call pins: the one stripe-python 16.1 is generated for.
API_VERSION = "2026-10-28.endive"


class StripeGateway:
    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        max_network_retries: int = 2,
        timeout_seconds: float = 20.0,
    ) -> None:
        self._http = stripe.AIOHTTPClient(timeout=timeout_seconds)
        self.client = stripe.StripeClient(
            api_key,
            stripe_version=API_VERSION,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=self._http,
        )

    async def close(self) -> None:
        await self._http.close_async()

    # ------------------------------------------------------------------ writes (plan changes)

    async def update_subscription(
        self, subscription_id: str, params: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        """``POST /v1/subscriptions/{id}``; the caller passes the same params and key on every retry."""
        sub = await self.client.v1.subscriptions.update_async(
            subscription_id, params, {"idempotency_key": idempotency_key}
        )
        return to_dict(sub)

    # ------------------------------------------------------------------ reads (reconcile, backfill)

    async def customer_objects(self, customer_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Stripe's current truth for one customer: every subscription (any status) and every
        open invoice, as plain dicts. Raises stripe errors (``is_transient`` tells which)."""
        await self.client.v1.customers.retrieve_async(customer_id)  # 404s for an unknown customer
        subs = await self._all(
            self.client.v1.subscriptions.list_async, {"customer": customer_id, "status": "all"}
        )
        invoices = await self._all(
            self.client.v1.invoices.list_async, {"customer": customer_id, "status": "open"}
        )
        return subs, invoices

    async def fetch_related_object(self, notification: str) -> dict[str, Any]:
        """A thin event's related object, fetched the SDK's way: the notification (its stored text)
        parsed by ``parse_event_notification_without_verification`` (the receiver verified it),
        then ``fetch_related_object_async``: GET ``related_object.url`` with the notification's
        ``context`` as ``Stripe-Context`` and ``Stripe-Request-Trigger: event=<id>``. Returns the
        object exactly as Stripe sent it; raises stripe errors (``fetch_refused`` tells the final ones)."""
        parsed = self.client.parse_event_notification_without_verification(notification)
        fetched = await parsed.fetch_related_object_async()
        if fetched is None:  # an unknown type without a related object: never asked for
            raise ValueError(f"thin event {parsed.id} has no related object")
        return _raw_object(fetched)

    async def events_page(
        self, created_gte: int, starting_after: str | None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of Stripe's events API, newest first: (events, has_more)."""
        params: dict[str, Any] = {"created": {"gte": created_gte}, "limit": limit}
        if starting_after:
            params["starting_after"] = starting_after
        page = await self.client.v1.events.list_async(params)
        return _raw_data(page), bool(page.has_more)

    @staticmethod
    async def _all(list_call: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = await list_call(
                {**params, "limit": 100, **({"starting_after": out[-1]["id"]} if out else {})}
            )
            out.extend(_raw_data(page))
            if not page.has_more or not page.data:
                return out


def _raw_data(page: Any) -> list[dict[str, Any]]:
    """A list page's objects exactly as Stripe sent them (the SDK's objects turn decimals into
    Decimal, which is neither JSON nor what a webhook would have carried)."""
    return list(json.loads(page.last_response.body)["data"])


def _raw_object(obj: Any) -> dict[str, Any]:
    """One fetched object exactly as Stripe sent it (see ``_raw_data``)."""
    response = getattr(obj, "last_response", None)
    if response is None:
        return to_dict(obj)
    return dict(json.loads(response.body))


def fetch_refused(exc: BaseException) -> str | None:
    """The reason a fetch can never succeed as it stands — Stripe answered 404 (the object is gone)
    or 401/403 (wrong key or context) — else None (worth retrying, or a bug)."""
    if not isinstance(exc, stripe.StripeError) or exc.http_status not in (401, 403, 404):
        return None
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or type(exc).__name__
    message = (getattr(error, "message", None) or exc.user_message or "")[:300]
    return f"Stripe answered {exc.http_status} ({code}) fetching the related object: {message}"


def is_transient(exc: BaseException) -> bool:
    """Worth retrying later: network trouble, rate limits, Stripe-side 5xx and lock conflicts."""
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    if isinstance(exc, stripe.StripeError):
        status = exc.http_status or 0
        return status >= 500 or status == 409
    return isinstance(exc, TimeoutError | OSError)


def to_dict(obj: Any) -> dict[str, Any]:
    """A StripeObject as plain dicts and lists (what normalize() and the store take)."""
    return obj.to_dict(recursive=True) if hasattr(obj, "to_dict") else dict(obj)
