"""Reads a Stripe Checkout Session (completed, or its delayed payment settled) into a
``CheckoutCompleted`` event."""

from __future__ import annotations

from collections.abc import Mapping

from handlers.events import CHECKOUT_MODES, CHECKOUT_PAYMENT_STATUSES, CheckoutCompleted, EventMeta
from handlers.stripe_fields import FieldReader, malformed, workspace_of


def read_checkout(meta: EventMeta, session: FieldReader) -> CheckoutCompleted:
    """The event of a completed ``session``: prices from its expanded line items, else from its
    ``price_id`` / ``quantity`` metadata."""
    metadata = session.metadata("metadata")
    line_items = session.reader_or_none("line_items")  # only when expanded (never in webhooks)
    pairs: list[tuple[str, int]] = []
    if line_items is not None:
        for item in line_items.list_items("data", required=True, list_object=False):
            price_id = item.opt_id("price")
            if price_id is None:  # nullable in Stripe's reference: nothing to grant for it
                item.note(item.path("price"), "expected a price, got none")
                continue
            quantity = item.opt_int("quantity", minimum=0)
            pairs.append((price_id, 1 if quantity is None else quantity))
    elif metadata.get("price_id"):
        pairs.append((metadata["price_id"], _metadata_quantity(metadata, session.path("metadata"))))
    reference = session.opt_str("client_reference_id")
    return CheckoutCompleted(
        meta=meta,
        session_id=session.req_str("id"),
        customer_id=session.opt_id("customer"),
        mode=session.enum("mode", CHECKOUT_MODES),
        payment_status=session.enum("payment_status", CHECKOUT_PAYMENT_STATUSES),
        price_quantities=tuple(pairs),
        workspace_id=workspace_of(metadata) or reference or None,
        invoice_id=session.opt_id("invoice"),
    )


def _metadata_quantity(metadata: Mapping[str, str], path: str) -> int:
    value = metadata.get("quantity", "1")
    try:
        quantity = int(value.strip())
    except ValueError:
        raise malformed(f"{path}.quantity", f"must be a whole number, got {value!r}") from None
    if quantity < 1:
        raise malformed(f"{path}.quantity", f"must be at least 1, got {quantity}")
    return quantity
