"""AI credits in the pure core: which events grant, once per source key, and consumption.

``Shell`` plays the worker's part exactly as ``worker.processor`` does: it tells the reducer which
of the event's possible grants the ledger already holds, then appends what the reducer granted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.credits import InsufficientCredits, consume, credit_grants
from handlers.events import BillingEvent
from handlers.normalize import normalize
from handlers.reducer import APPLIED, IGNORED, STALE, apply_event
from handlers.state import WorkspaceState
from tests.support import credit_events as ce
from tests.support import stripe_factory as sf
from tests.support.core import CATALOG, CUS, NOW, SUB, WS


@dataclass
class Shell:
    state: WorkspaceState = field(default_factory=lambda: WorkspaceState.new(WS))
    ledger: dict[str, int] = field(default_factory=dict)

    def apply(self, raw: dict[str, Any]) -> str:
        event: BillingEvent = normalize(raw)
        known = {e.source_key for e in credit_grants(event, CATALOG)} & set(self.ledger)
        outcome = apply_event(replace(self.state, credit_keys=frozenset(known)), event, NOW, CATALOG)
        for entry in outcome.credit_entries:
            assert entry.source_key not in self.ledger  # the UNIQUE constraint would refuse it
            self.ledger[entry.source_key] = entry.amount
        self.state = replace(outcome.state, credit_keys=frozenset())
        assert outcome.view.ai_credit_balance == self.state.credit_balance
        return outcome.result

    def spend(self, amount: int, key: str) -> bool:
        result = consume(self.state, amount, key, None)
        if isinstance(result, InsufficientCredits):
            return False
        state, entry = result
        self.ledger[entry.source_key] = entry.amount
        self.state = replace(state, credit_keys=frozenset())
        return True

    @property
    def balance(self) -> int:
        return self.state.credit_balance


def _checkout(session: str, invoice: str | None = None, **kw: Any) -> dict[str, Any]:
    return ce.pack_checkout(workspace_id=WS, customer=CUS, session_id=session, invoice_id=invoice, **kw)


def test_a_pack_bought_through_checkout_and_its_invoice_grants_once() -> None:
    shell = Shell()
    checkout = _checkout("cs_1", "in_pack1")
    invoice = ce.pack_invoice(workspace_id=WS, customer=CUS, invoice_id="in_pack1")
    results = [shell.apply(e) for e in (invoice, checkout, checkout, invoice)]
    assert results == [APPLIED, STALE, STALE, STALE]
    assert shell.ledger == {f"pack:invoice:in_pack1:{ce.PACK_1000}": 1_000}
    assert shell.balance == 1_000 and shell.state.version == 1


def test_checkout_without_an_invoice_grants_per_session_and_quantity() -> None:
    shell = Shell()
    # Webhooks carry one pack as metadata price_id + quantity, several only as expanded line items.
    shell.apply(_checkout("cs_a", packs=((ce.PACK_5000, 2),)))
    shell.apply(_checkout("cs_b", packs=((ce.PACK_5000, 1), (ce.PACK_1000, 3)), expand_line_items=True))
    shell.apply(_checkout("cs_c"))
    assert shell.balance == 2 * 5_000 + (5_000 + 3 * 1_000) + 1_000
    assert len(shell.ledger) == 4


def test_unpaid_or_subscription_checkouts_grant_nothing() -> None:
    shell = Shell()
    assert shell.apply(_checkout("cs_s", mode="subscription")) == IGNORED
    assert shell.state.version == 0
    # A pack bought with a delayed payment method: recorded as waiting for its payment, no credits.
    assert shell.apply(_checkout("cs_u", payment_status="unpaid")) == APPLIED
    assert shell.balance == 0 and shell.ledger == {}


def test_cycle_credits_once_per_paid_cycle_invoice_and_never_from_proration() -> None:
    shell = Shell()
    paid = ce.cycle_invoice(workspace_id=WS, customer=CUS, invoice_id="in_c1", sub_id=SUB)
    succeeded = ce.cycle_invoice(
        workspace_id=WS, customer=CUS, invoice_id="in_c1", sub_id=SUB, kind="payment_succeeded"
    )
    shell.apply(paid)
    shell.apply(succeeded)
    shell.apply(paid)
    # Plus grants 500 per cycle; the proration lines (incl. a prorated pack line) grant nothing.
    assert shell.ledger == {"cycle:in_c1": 500}
    shell.apply(ce.cycle_invoice(workspace_id=WS, customer=CUS, invoice_id="in_c2", sub_id=SUB))
    assert shell.balance == 1_000


def test_open_invoices_zero_trial_invoices_and_updates_grant_nothing() -> None:
    shell = Shell()
    trial = ce.paid_invoice(
        workspace_id=WS,
        customer=CUS,
        invoice_id="in_trial",
        sub_id=SUB,
        lines=[(ce.PLUS_MONTHLY, 3, 0)],
        billing_reason="subscription_create",
    )
    update = ce.paid_invoice(
        workspace_id=WS,
        customer=CUS,
        invoice_id="in_upd",
        sub_id=SUB,
        lines=[(ce.PLUS_MONTHLY, 2, 1_500, True)],
        billing_reason="subscription_update",
    )
    for raw in (trial, update):
        shell.apply(raw)
    assert shell.ledger == {} and shell.balance == 0


def test_consumption_refuses_to_go_below_zero_and_changes_nothing() -> None:
    shell = Shell()
    shell.apply(_checkout("cs_1"))
    before = shell.state
    assert shell.spend(1_001, "k1") is False
    assert shell.state is before and shell.balance == 1_000
    assert shell.spend(1_000, "k1") is True and shell.balance == 0


# --- property: balance == ledger sum, never negative ----------------------------------------

_purchase = st.one_of(
    st.builds(
        lambda s, inv, q: ("checkout", s, inv, q),
        st.integers(0, 3),
        st.one_of(st.none(), st.integers(0, 3)),
        st.integers(1, 3),
    ),
    st.builds(lambda inv: ("pack_invoice", inv), st.integers(0, 3)),
    st.builds(
        lambda inv, kind: ("cycle", inv, kind),
        st.integers(0, 3),
        st.sampled_from(["paid", "payment_succeeded"]),
    ),
    st.builds(lambda amount, key: ("consume", amount, key), st.integers(1, 3_000), st.integers(0, 5)),
)


def _raw(action: tuple[Any, ...]) -> dict[str, Any]:
    if action[0] == "checkout":
        _, s, inv, q = action
        return _checkout(f"cs_{s}", None if inv is None else f"in_p{inv}", packs=((ce.PACK_1000, q),))
    if action[0] == "pack_invoice":
        return ce.pack_invoice(workspace_id=WS, customer=CUS, invoice_id=f"in_p{action[1]}")
    return ce.cycle_invoice(
        workspace_id=WS, customer=CUS, invoice_id=f"in_c{action[1]}", sub_id=SUB, kind=action[2]
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(_purchase, max_size=25))
def test_balance_is_the_ledger_sum_and_never_negative(actions: list[tuple[Any, ...]]) -> None:
    shell = Shell()
    for action in actions:
        if action[0] == "consume":
            key = f"k{action[2]}"
            if f"consume:{WS}:{key}" in shell.ledger:
                continue  # the shell answers a reused key from the ledger (tested in the API tests)
            before = shell.balance
            ok = shell.spend(action[1], key)
            assert ok == (action[1] <= before)
        else:
            shell.apply(_raw(action))
        assert shell.balance == sum(shell.ledger.values())
        assert shell.balance >= 0
    # Each purchase granted at most once, whatever its event types and repetitions.
    assert all(v > 0 for k, v in shell.ledger.items() if not k.startswith("consume:"))


def test_a_pack_checkout_maps_like_other_events() -> None:
    """``client_reference_id`` (or metadata) names the workspace; no name falls back to the customer."""
    raw = sf.checkout_completed_event(
        api_version=sf.ENDIVE,
        created=sf.T0,
        session_id="cs_ref",
        customer=CUS,
        workspace_id=None,
        client_reference_id="ws_from_ref",
    )
    assert normalize(raw).workspace_id == "ws_from_ref"
