"""Credit packs paid by a delayed payment method (bank debit): ``checkout.session.completed``
comes ``unpaid``, then ``async_payment_succeeded`` or ``async_payment_failed``. Any order of the
events of one purchase, with duplicates, grants the pack exactly once, or never if it failed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.credits import credit_grants
from handlers.normalize import normalize
from handlers.reducer import APPLIED, STALE, apply_event
from handlers.state import WorkspaceState
from tests.support import credit_events as ce
from tests.support import stripe_factory as sf
from tests.support.core import CATALOG, CUS, NOW, WS

SESSION, INVOICE = "cs_bank", "in_bank"


def purchase_events(*, invoice: bool) -> dict[str, dict[str, Any]]:
    """The events one bank-debit purchase of a 1,000-credit pack can produce, by name."""

    def checkout(kind: str, payment_status: str, created: int) -> dict[str, Any]:
        return ce.pack_checkout(
            workspace_id=WS,
            customer=CUS,
            session_id=SESSION,
            invoice_id=INVOICE if invoice else None,
            payment_status=payment_status,
            kind=kind,
            created=created,
        )

    events = {
        "completed_unpaid": checkout("completed", "unpaid", sf.T0),
        "succeeded": checkout("async_payment_succeeded", "paid", sf.T0 + 3 * sf.DAY),
        "failed": checkout("async_payment_failed", "unpaid", sf.T0 + 3 * sf.DAY),
    }
    if invoice:  # the session created an invoice: its own paid event describes the same purchase
        events["invoice_paid"] = ce.pack_invoice(
            workspace_id=WS, customer=CUS, invoice_id=INVOICE, created=sf.T0 + 3 * sf.DAY
        )
    return events


def fold(deliveries: list[dict[str, Any]]) -> tuple[WorkspaceState, dict[str, int], list[str]]:
    """The worker's part: tell the reducer which grants the ledger holds, append what it grants."""
    state, ledger, results = WorkspaceState.new(WS), {}, []
    for raw in deliveries:
        event = normalize(raw)
        known = {e.source_key for e in credit_grants(event, CATALOG)} & set(ledger)
        outcome = apply_event(replace(state, credit_keys=frozenset(known)), event, NOW, CATALOG)
        for entry in outcome.credit_entries:
            assert entry.source_key not in ledger  # the ledger's UNIQUE source key
            ledger[entry.source_key] = entry.amount
        state = replace(outcome.state, credit_keys=frozenset())
        results.append(outcome.result)
    return state, ledger, results


def test_unpaid_completion_waits_and_the_success_grants_with_the_sessions_key() -> None:
    events = purchase_events(invoice=False)
    state, ledger, results = fold([events["completed_unpaid"], events["succeeded"], events["succeeded"]])
    assert results == [APPLIED, APPLIED, STALE]  # the wait is recorded, the success grants once
    assert ledger == {f"pack:checkout:{SESSION}:{ce.PACK_1000}": 1_000}
    assert state.credit_balance == 1_000


def test_a_session_with_an_invoice_shares_the_invoices_key() -> None:
    events = purchase_events(invoice=True)
    _, ledger, results = fold([events["invoice_paid"], events["succeeded"], events["completed_unpaid"]])
    assert ledger == {f"pack:invoice:{INVOICE}:{ce.PACK_1000}": 1_000}
    assert results[1] == STALE


def test_a_failed_delayed_payment_grants_nothing_and_is_recorded() -> None:
    events = purchase_events(invoice=False)
    state, ledger, results = fold([events["completed_unpaid"], events["failed"]])
    assert ledger == {} and state.credit_balance == 0
    assert results == [APPLIED, APPLIED]
    outcome = apply_event(state, normalize(events["failed"]), NOW, CATALOG)
    assert outcome.changes == {f"checkout.{SESSION}.payment_status": ("unpaid", "failed")}


@settings(max_examples=200, deadline=None)
@given(
    invoice=st.booleans(),
    succeeded=st.booleans(),
    data=st.data(),
)
def test_any_order_with_duplicates_gives_the_same_balance(
    invoice: bool, succeeded: bool, data: st.DataObject
) -> None:
    events = purchase_events(invoice=invoice)
    outcome_event = "succeeded" if succeeded else "failed"
    names = ["completed_unpaid", outcome_event] + (["invoice_paid"] if invoice and succeeded else [])
    history = [events[n] for n in names]
    deliveries = data.draw(
        st.lists(st.sampled_from(history), min_size=len(history), max_size=3 * len(history))
    )
    deliveries += history  # every event arrives at least once
    deliveries = data.draw(st.permutations(deliveries))
    state, ledger, _ = fold(list(deliveries))
    expected = 1_000 if succeeded else 0
    assert state.credit_balance == expected == sum(ledger.values())
    assert len(ledger) == (1 if succeeded else 0)
