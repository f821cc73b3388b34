"""The dunning ladder (Kill Bill's overdue engine): a level is re-derived, never patched.

The deepest configured level whose conditions all hold wins; with no overdue invoice there is
no block. Lifting is therefore just re-evaluation after the last unpaid invoice is paid or voided.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from handlers.catalog import Policy
from handlers.state import Block, InvoiceRecord

OPEN_INVOICE = "open_invoice"


def overdue_invoices(invoices: Iterable[InvoiceRecord], policy: Policy) -> list[InvoiceRecord]:
    """Unpaid invoices whose payment failed (an open one) or that were written off (uncollectible)."""
    return [
        inv
        for inv in invoices
        if (inv.status == "open" and inv.payment_failed)
        or (inv.status == "uncollectible" and policy.uncollectible_blocks)
    ]


def overdue_since(invoice: InvoiceRecord) -> datetime:
    return invoice.first_failed_at or invoice.observed_at


def evaluate_block(invoices: Iterable[InvoiceRecord], policy: Policy, now: datetime) -> Block | None:
    overdue = overdue_invoices(invoices, policy)
    if not overdue:
        return None
    since = min(overdue_since(inv) for inv in overdue)
    age = now - since
    amount = sum(inv.snapshot.amount_remaining for inv in overdue)
    level = None
    for candidate in policy.dunning:  # sorted by after_days, ascending
        if (
            age >= timedelta(days=candidate.after_days)
            and len(overdue) >= candidate.min_unpaid_invoices
            and amount >= candidate.min_unpaid_amount
        ):
            level = candidate
    if level is None:
        return None
    return Block(
        level=level.name,
        blocks=level.blocks,
        reasons=(OPEN_INVOICE,),
        invoice_ids=tuple(sorted(inv.snapshot.invoice_id for inv in overdue)),
        since=since,
    )


def next_escalation(invoices: Iterable[InvoiceRecord], policy: Policy) -> datetime | None:
    """When the ladder would next move up with no event arriving (for scheduling the sweep)."""
    overdue = overdue_invoices(invoices, policy)
    if not overdue:
        return None
    since = min(overdue_since(inv) for inv in overdue)
    times = [since + timedelta(days=lvl.after_days) for lvl in policy.dunning]
    later = [t for t in times if t > since]
    return min(later) if later else None


def level_due_at(block: Block, policy: Policy) -> datetime:
    """The moment ``block``'s level became due: the audit's effective time for a time-driven change."""
    for level in policy.dunning:
        if level.name == block.level:
            return block.since + timedelta(days=level.after_days)
    return block.since
