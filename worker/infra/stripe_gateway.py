"""Outgoing Stripe API calls through the official SDK's async client, API version pinned.

Writes (plan changes) always carry an idempotency key derived from what they do, so a retry after
a crash between the call and our commit repeats the same request instead of making a second one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import stripe

from worker.errors import BillingError, Unavailable, UpstreamFailed
from worker.infra import tracing

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
        # Tracing off at start-up: the SDK's own client, nothing in between.
        client_class = _TracedHTTPClient if tracing.enabled() else stripe.AIOHTTPClient
        self._http = client_class(timeout=timeout_seconds)
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

    async def create_checkout_session(self, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """``POST /v1/checkout/sessions``; the key comes from the caller's ``Idempotency-Key``."""
        try:
            session = await self.client.v1.checkout.sessions.create_async(
                params, {"idempotency_key": idempotency_key}
            )
        except (stripe.StripeError, OSError, TimeoutError) as exc:
            raise domain_error(exc) from exc
        return to_dict(session)

    # ------------------------------------------------------------------ reads

    async def preview_invoice(self, params: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/invoices/create_preview``: the invoice an update would produce; nothing is
        changed at Stripe (the SDK still sends a random idempotency key, as for every POST)."""
        try:
            invoice = await self.client.v1.invoices.create_preview_async(params)
        except (stripe.StripeError, OSError, TimeoutError) as exc:
            raise domain_error(exc) from exc
        return to_dict(invoice)

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


class _TracedHTTPClient(stripe.AIOHTTPClient):
    """The SDK's aiohttp client with a client span around each HTTP request (a retry is a request
    of its own). The trace context is not sent to Stripe."""

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        verb, path = method.upper(), urlsplit(url).path
        resource = "/".join(path.split("/")[:3])  # /v1/customers: a name of few values
        attributes = {"http.request.method": verb, "url.path": path, "server.address": urlsplit(url).hostname}
        with tracing.start_span(f"stripe {verb} {resource}", kind="client", attributes=attributes):
            content, status, response_headers = await super().request_async(method, url, headers, post_data)
            tracing.set_attributes(
                {"http.response.status_code": status, "stripe.request_id": response_headers.get("Request-Id")}
            )
            return content, status, response_headers


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


def domain_error(exc: BaseException) -> BillingError:
    """A failed Stripe call as the API's error: 503 ``stripe_unavailable`` when worth retrying,
    else 502 ``stripe_rejected``, both with Stripe's own message."""
    message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    if is_transient(exc):
        return Unavailable("stripe_unavailable", f"Stripe is unavailable: {message}")
    return UpstreamFailed("stripe_rejected", f"Stripe refused the call: {message}")


def to_dict(obj: Any) -> dict[str, Any]:
    """A StripeObject as plain dicts and lists (what normalize() and the store take)."""
    return obj.to_dict(recursive=True) if hasattr(obj, "to_dict") else dict(obj)
