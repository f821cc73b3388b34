"""Outgoing Stripe API calls through the official SDK's async client, API version pinned.

Writes (plan changes) always carry an idempotency key derived from what they do, so a retry after
a crash between the call and our commit repeats the same request instead of making a second one.
"""

from __future__ import annotations

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
