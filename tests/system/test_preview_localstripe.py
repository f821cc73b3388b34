"""An invoice preview against localstripe (a third-party Stripe emulator that implements
``POST /v1/invoices/create_preview``): the parameters ``handlers.invoice_preview.preview_params``
builds, sent by ``StripeGateway.preview_invoice`` (official SDK, async client), and the answer
read by ``summarize``.

localstripe knows only the legacy ``plan`` field of an item (shared/notes/stripe.md §6), so the
test adds it beside our ``id``/``quantity`` — the one adaptation; everything else is as sent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from handlers.invoice_preview import preview_params, summarize
from handlers.plan_policy import decide
from tests.support.localstripe import plus_subscription, running_localstripe
from tests.support.policy_views import CATALOG, req, view
from worker.infra.stripe_gateway import StripeGateway

API_KEY = "sk_test_localstripe_preview"


@pytest.fixture
async def localstripe() -> AsyncIterator[str]:
    async with running_localstripe(API_KEY) as url:
        yield url


async def test_a_seat_increase_is_previewed_by_localstripe(localstripe: str):
    gateway = StripeGateway(API_KEY, api_base=localstripe, max_network_retries=0)
    try:
        customer_id, sub = await plus_subscription(gateway, f"ws_{uuid.uuid4().hex[:8]}")
        start, end = sub["current_period_start"], sub["current_period_end"]
        now = datetime.fromtimestamp(start, UTC) + timedelta(days=1)
        current = replace(view("plus", "monthly", 3), subscription_id=sub["id"])
        change = req("plus", "monthly", 5)
        decision = decide(current, change, now, CATALOG)
        params = preview_params(
            decision, current, change, CATALOG, customer_id, (sub["items"]["data"][0]["id"], None), now
        )
        assert params is not None
        assert params["subscription_details"]["proration_date"] == int(now.timestamp())
        for item in params["subscription_details"]["items"]:
            item["plan"] = "price_plus_monthly"  # localstripe's legacy field (see the module docstring)
        invoice = await gateway.preview_invoice(params)
    finally:
        await gateway.close()

    preview = summarize(invoice, decision, params["subscription_details"]["proration_date"])
    assert preview["currency"] == "usd"
    assert preview["next_invoice"]["amount_due"] == invoice["amount_due"] > 0
    assert preview["amount_due_now"] == 0  # the cycle is kept: nothing is invoiced at the update
    assert sum(line["amount"] for line in preview["lines"]) == invoice["total"]
    assert any(line["quantity"] == 5 and not line["proration"] for line in preview["lines"])
    assert start < params["subscription_details"]["proration_date"] < end
