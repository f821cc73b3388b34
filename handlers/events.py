"""Typed billing events: what the pure core knows of a Stripe event, whatever its API version.

``handlers.normalize`` builds these from raw payloads; the reducer consumes only these. Times are
aware UTC datetimes, money is integer minor units.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from handlers.evolve import quick_init

# Subscription statuses Stripe sends (plus our own "free" for a workspace with no subscription).
SUBSCRIPTION_STATUSES = frozenset(
    {
        "trialing",
        "active",
        "past_due",
        "unpaid",
        "canceled",
        "incomplete",
        "incomplete_expired",
        "paused",
    }
)
TERMINAL_SUBSCRIPTION_STATUSES = frozenset({"canceled", "incomplete_expired"})
INVOICE_STATUSES = frozenset({"draft", "open", "paid", "void", "uncollectible"})
BILLING_REASONS = frozenset(
    {
        "automatic_pending_invoice_item_invoice",
        "manual",
        "quote_accept",
        "subscription",
        "subscription_create",
        "subscription_cycle",
        "subscription_threshold",
        "subscription_update",
        "upcoming",
    }
)
CHECKOUT_MODES = frozenset({"payment", "setup", "subscription"})
CHECKOUT_PAYMENT_STATUSES = frozenset({"paid", "unpaid", "no_payment_required"})


@quick_init
@dataclass(frozen=True)
class EventMeta:
    """Identity and ordering of the Stripe event that carried an observation."""

    event_id: str
    event_type: str
    created: datetime
    api_version: str | None = None
    request_id: str | None = None
    idempotency_key: str | None = None
    # When Stripe says the event happened, if that differs from ``created`` — an observation
    # fetched later (a thin event) is dated at the fetch, its payment failure when it happened.
    occurred_at: datetime | None = None


@quick_init
@dataclass(frozen=True)
class SubscriptionItem:
    item_id: str
    price_id: str
    quantity: int
    period_start: datetime | None = None
    period_end: datetime | None = None


@quick_init
@dataclass(frozen=True)
class PendingUpdate:
    """``subscription.pending_update``: changes Stripe applies once their invoice is paid
    (``payment_behavior=pending_if_incomplete``), dropped at ``expires_at``."""

    expires_at: datetime | None
    items: tuple[SubscriptionItem, ...] | None  # ``subscription_items``; None: items unchanged
    trial_end: datetime | None = None


@quick_init
@dataclass(frozen=True)
class SubscriptionSnapshot:
    subscription_id: str
    customer_id: str
    status: str
    items: tuple[SubscriptionItem, ...]
    current_period_start: datetime | None
    current_period_end: datetime | None
    trial_end: datetime | None
    cancel_at_period_end: bool
    cancel_at: datetime | None
    canceled_at: datetime | None
    ended_at: datetime | None
    start_date: datetime | None
    workspace_id: str | None  # metadata.workspace_id, when present
    custom_contract: bool = False  # metadata.custom_contract == "true"
    pending_update: PendingUpdate | None = None


@quick_init
@dataclass(frozen=True)
class InvoiceLine:
    price_id: str | None
    quantity: int
    amount: int
    proration: bool


@quick_init
@dataclass(frozen=True)
class InvoiceSnapshot:
    invoice_id: str
    customer_id: str
    subscription_id: str | None
    status: str
    currency: str
    amount_due: int
    amount_paid: int
    amount_remaining: int
    attempt_count: int
    next_payment_attempt: datetime | None
    billing_reason: str | None
    created: datetime
    due_date: datetime | None
    period_start: datetime | None
    period_end: datetime | None
    lines: tuple[InvoiceLine, ...]
    workspace_id: str | None  # from parent.subscription_details.metadata / subscription_details


@quick_init
@dataclass(frozen=True)
class SubscriptionObserved:
    """customer.subscription.created|updated|deleted|paused|resumed|trial_will_end|
    pending_update_applied|pending_update_expired."""

    meta: EventMeta
    subscription: SubscriptionSnapshot


@quick_init
@dataclass(frozen=True)
class InvoiceObserved:
    """invoice.* — the invoice as of the event, plus what the event says happened to it."""

    meta: EventMeta
    invoice: InvoiceSnapshot
    payment_failed: bool = False  # invoice.payment_failed
    action_required: bool = False  # invoice.payment_action_required


@quick_init
@dataclass(frozen=True)
class CheckoutCompleted:
    """checkout.session.completed|async_payment_succeeded|async_payment_failed (one-time AI credit
    packs are bought through Checkout; ``meta.event_type`` says which)."""

    meta: EventMeta
    session_id: str
    customer_id: str | None
    mode: str
    payment_status: str
    price_quantities: tuple[tuple[str, int], ...]  # (price id, quantity) of the line items
    workspace_id: str | None
    invoice_id: str | None = None  # the invoice the session created (invoice_creation), if any


@quick_init
@dataclass(frozen=True)
class IgnoredEvent:
    """A type the worker does not act on; stored and marked ``ignored``."""

    meta: EventMeta


BillingEvent = SubscriptionObserved | InvoiceObserved | CheckoutCompleted | IgnoredEvent


def customer_of(event: BillingEvent) -> str | None:
    """The Stripe customer an event belongs to, used to map it to a workspace."""
    if isinstance(event, SubscriptionObserved):
        return event.subscription.customer_id
    if isinstance(event, InvoiceObserved):
        return event.invoice.customer_id
    if isinstance(event, CheckoutCompleted):
        return event.customer_id
    return None


def workspace_hint(event: BillingEvent) -> str | None:
    """The workspace id the payload itself names (metadata), if any."""
    if isinstance(event, SubscriptionObserved):
        return event.subscription.workspace_id
    if isinstance(event, InvoiceObserved):
        return event.invoice.workspace_id
    if isinstance(event, CheckoutCompleted):
        return event.workspace_id
    return None
