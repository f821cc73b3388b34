"""AI credits: which ledger entries an event grants, and whether a consumption fits the balance.

The ledger is append-only and every entry has a unique source key, so a purchase seen through
several events (duplicates, replays, ``checkout.session.completed`` *and* the paid invoice of the
same purchase) grants once. Key rules:

* pack bought through an invoice (a paid one-off invoice, or a Checkout session that created one):
  ``pack:invoice:<invoice id>:<price>`` — the checkout event and the invoice events share it;
* pack bought through a Checkout session without an invoice: ``pack:checkout:<session id>:<price>``;
* a delayed payment method (bank debit): ``checkout.session.completed`` comes ``unpaid`` and grants
  nothing; ``checkout.session.async_payment_succeeded`` grants, with the same key as a paid
  ``completed`` would (and as the paid invoice, when the session created one);
  ``checkout.session.async_payment_failed`` never grants;
* plan credits: ``cycle:<invoice id>`` for a paid subscription_create / subscription_cycle invoice;
* consumption: ``consume:<workspace id>:<idempotency key>``.

Proration lines are money on invoices and never become AI credits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from handlers.catalog import Catalog
from handlers.events import BillingEvent, CheckoutCompleted, InvoiceObserved
from handlers.evolve import evolve, quick_init
from handlers.state import WorkspaceState

CYCLE_BILLING_REASONS = frozenset({"subscription_create", "subscription_cycle"})
ASYNC_PAYMENT_SUCCEEDED = "checkout.session.async_payment_succeeded"
ASYNC_PAYMENT_FAILED = "checkout.session.async_payment_failed"
PACK, CYCLE, CONSUME = "pack", "cycle", "consume"


@quick_init
@dataclass(frozen=True)
class CreditEntry:
    """One ledger row: positive grants, negative consumption."""

    source_key: str
    amount: int
    kind: str  # pack | cycle | consume
    reference: str  # the Stripe object or request it came from
    reason: str | None = None


@dataclass(frozen=True)
class InsufficientCredits:
    balance: int
    requested: int


def credit_grants(event: BillingEvent, catalog: Catalog) -> tuple[CreditEntry, ...]:
    """Every grant this event entitles to, whether or not it was already granted."""
    if isinstance(event, CheckoutCompleted):
        return checkout_packs(event, catalog) if checkout_paid(event) else ()
    if isinstance(event, InvoiceObserved) and event.invoice.status == "paid":
        inv = event.invoice
        regular = [line for line in inv.lines if not line.proration and line.price_id]
        grants = list(
            _packs(
                ((line.price_id or "", line.quantity) for line in regular),
                catalog,
                f"pack:invoice:{inv.invoice_id}",
                inv.invoice_id,
            )
        )
        if inv.billing_reason in CYCLE_BILLING_REASONS and inv.amount_paid > 0:
            plans = {ref.plan for line in regular if (ref := catalog.price(line.price_id)) and ref.plan}
            credits = max((catalog.plans[p].ai_credits_per_cycle for p in plans), default=0)
            if credits > 0:
                grants.append(CreditEntry(f"cycle:{inv.invoice_id}", credits, CYCLE, inv.invoice_id))
        return tuple(grants)
    return ()


def checkout_paid(event: CheckoutCompleted) -> bool:
    """Whether the session's payment is in: paid at completion, or its delayed payment succeeded."""
    if event.meta.event_type == ASYNC_PAYMENT_FAILED:
        return False
    return event.payment_status == "paid" or event.meta.event_type == ASYNC_PAYMENT_SUCCEEDED


def checkout_packs(event: CheckoutCompleted, catalog: Catalog) -> tuple[CreditEntry, ...]:
    """The packs a payment-mode session buys, paid or not (one key per purchase, see above)."""
    if event.mode != "payment":
        return ()
    if event.invoice_id:
        prefix, ref = f"pack:invoice:{event.invoice_id}", event.invoice_id
    else:
        prefix, ref = f"pack:checkout:{event.session_id}", event.session_id
    return _packs(event.price_quantities, catalog, prefix, ref)


def _packs(
    pairs: Iterable[tuple[str, int]], catalog: Catalog, prefix: str, reference: str
) -> tuple[CreditEntry, ...]:
    """One entry per pack price (quantities of one price summed), so the key is stable."""
    totals: dict[str, int] = {}
    for price_id, quantity in pairs:
        pack = catalog.credit_pack(price_id)
        if pack is not None and quantity > 0:
            totals[price_id] = totals.get(price_id, 0) + quantity * pack.credits
    return tuple(
        CreditEntry(f"{prefix}:{p}", amount, PACK, reference) for p, amount in sorted(totals.items())
    )


def grant(
    state: WorkspaceState, candidates: Iterable[CreditEntry]
) -> tuple[WorkspaceState, tuple[CreditEntry, ...]]:
    """Apply the grants whose source key is not in the ledger yet."""
    new = tuple(e for e in candidates if e.source_key not in state.credit_keys)
    if not new:
        return state, ()
    return evolve(
        state,
        credit_balance=state.credit_balance + sum(e.amount for e in new),
        credit_keys=state.credit_keys | {e.source_key for e in new},
    ), new


def consume_key(workspace_id: str, idempotency_key: str) -> str:
    return f"{CONSUME}:{workspace_id}:{idempotency_key}"


def consume(
    state: WorkspaceState, amount: int, idempotency_key: str, reason: str | None
) -> tuple[WorkspaceState, CreditEntry] | InsufficientCredits:
    """Spend ``amount`` credits, or refuse (and change nothing) when the balance is short."""
    if amount <= 0:
        raise ValueError("amount must be positive")
    if amount > state.credit_balance:
        return InsufficientCredits(state.credit_balance, amount)
    key = consume_key(state.workspace_id, idempotency_key)
    entry = CreditEntry(key, -amount, CONSUME, idempotency_key, reason)
    return evolve(
        state,
        credit_balance=state.credit_balance - amount,
        credit_keys=state.credit_keys | {key},
    ), entry
