"""Workspace billing state as the pure core sees it.

State is kept as *observations* (the latest snapshot of each Stripe object, with the event that
carried it) plus a *view* derived from them. Merging an observation is commutative, associative
and idempotent (latest ``created`` wins; invoice status only moves forward), so any order and any
duplication of the same events gives the same state. The view is recomputed, never patched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from handlers.events import InvoiceSnapshot, SubscriptionSnapshot
from handlers.evolve import quick_init


@quick_init
@dataclass(frozen=True)
class SubscriptionRecord:
    snapshot: SubscriptionSnapshot
    observed_at: datetime  # ``created`` of the event that carried the snapshot
    observed_event_id: str

    @property
    def order_key(self) -> tuple[datetime, int, str]:
        # On a tie of ``created``, a terminal status wins (a deletion is never undone), then the
        # event id breaks the tie so the choice does not depend on arrival order.
        terminal = 1 if self.snapshot.status in ("canceled", "incomplete_expired") else 0
        return (self.observed_at, terminal, self.observed_event_id)


# Forward-only invoice statuses: draft → open → paid | void | uncollectible; uncollectible → paid | void.
INVOICE_STATUS_RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}
# A status a newer API version adds is kept as it came and ranks like ``open``: ordered by time
# among unsettled statuses, overtaken by a settled one. It neither blocks nor grants.
UNKNOWN_INVOICE_STATUS_RANK = 1
UNPAID_INVOICE_STATUSES = frozenset({"open", "uncollectible"})


@quick_init
@dataclass(frozen=True)
class InvoiceRecord:
    snapshot: InvoiceSnapshot
    observed_at: datetime
    observed_event_id: str
    first_failed_at: datetime | None = None  # earliest failed or action-required payment attempt
    last_failed_at: datetime | None = None

    @property
    def status(self) -> str:
        return self.snapshot.status

    @property
    def order_key(self) -> tuple[int, datetime, str]:
        rank = INVOICE_STATUS_RANK.get(self.snapshot.status, UNKNOWN_INVOICE_STATUS_RANK)
        return (rank, self.observed_at, self.observed_event_id)

    @property
    def payment_failed(self) -> bool:
        return self.first_failed_at is not None


@quick_init
@dataclass(frozen=True)
class Block:
    """The open-invoice block: which dunning level, what it blocks, and why."""

    level: str
    blocks: frozenset[str]
    reasons: tuple[str, ...]
    invoice_ids: tuple[str, ...]
    since: datetime  # when the oldest failed unpaid invoice first failed


@quick_init
@dataclass(frozen=True)
class PendingUpdateView:
    """A change Stripe applies once its invoice is paid (``pending_if_incomplete``): what the
    subscription will become and until when the offer stands."""

    plan: str
    interval: str | None
    seats: int
    expires_at: datetime | None
    trial_end: datetime | None = None


@quick_init
@dataclass(frozen=True)
class WorkspaceView:
    """What the product asks for: derived from the observations, persisted for queries."""

    plan: str
    interval: str | None
    seats: int
    status: str  # a Stripe subscription status, or "free"
    subscription_id: str | None
    trial_end: datetime | None
    period_start: datetime | None
    period_end: datetime | None
    cancel_at_period_end: bool
    custom_contract: bool
    storage_addon_units: int
    storage_quota_bytes: int
    block: Block | None
    unknown_price_ids: tuple[str, ...] = ()
    # Usage the product reported and the warnings derived from it (None: never reported).
    members: int | None = None
    over_seat_limit: bool = False
    storage_used_bytes: int | None = None
    over_storage_quota: bool = False
    ai_credit_balance: int = 0  # the AI-credit ledger sum (minor credits, never negative)
    pending_update: PendingUpdateView | None = None  # the current subscription's, until it expires

    @property
    def blocked(self) -> bool:
        return self.block is not None


@quick_init
@dataclass(frozen=True)
class Usage:
    """What the product reports about a workspace: an input of the view, never derived."""

    members: int | None = None
    storage_used_bytes: int | None = None


@quick_init
@dataclass(frozen=True)
class WorkspaceState:
    workspace_id: str
    customer_id: str | None = None
    subscriptions: Mapping[str, SubscriptionRecord] = field(default_factory=dict)
    # The invoices the shell loaded: every unpaid one plus any the event touches.
    invoices: Mapping[str, InvoiceRecord] = field(default_factory=dict)
    version: int = 0
    usage: Usage = field(default_factory=Usage)
    credit_balance: int = 0  # the ledger sum, loaded under the workspace row lock
    # Ledger source keys the shell found already granted, among those the current event could grant.
    credit_keys: frozenset[str] = frozenset()

    @classmethod
    def new(cls, workspace_id: str) -> WorkspaceState:
        return cls(workspace_id=workspace_id)
