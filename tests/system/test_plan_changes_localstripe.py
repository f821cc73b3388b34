"""Plan-change calls against localstripe (a third-party Stripe emulator), for what it supports.

localstripe rejects ``proration_behavior`` and ``billing_cycle_anchor`` on update and knows plans,
not prices (shared/notes/stripe.md §6), so this checks the calls that need neither: an immediate
seat increase with provider proration (Stripe's default, so not sent) and paid → Free at the end
of the contract (``cancel_at_period_end``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import stripe_factory as sf
from tests.support.clock import MovableClock
from tests.support.helpers import make_settings, running_service, wait_for
from tests.support.localstripe import plus_subscription, running_localstripe
from worker.config import Settings
from worker.infra.stripe_gateway import StripeGateway, to_dict
from worker.jobs.plan_changes import sweep_plan_changes
from worker.queue.worker import Job

API_KEY = "sk_test_localstripe_plan_changes"


@pytest.fixture
async def localstripe() -> AsyncIterator[str]:
    """A localstripe process on a free loopback port, always terminated (then killed) at the end."""
    async with running_localstripe(API_KEY) as url:
        yield url


async def test_plan_change_calls_against_localstripe(settings: Settings, localstripe: str):
    setup = StripeGateway(API_KEY, api_base=localstripe, max_network_retries=0)
    try:
        ws = f"ws_ls_{uuid.uuid4().hex[:8]}"
        customer_id, created = await plus_subscription(setup, ws)
    finally:
        await setup.close()
    assert created["status"] == "active"
    sub_id, item_id = created["id"], created["items"]["data"][0]["id"]
    start, end = created["current_period_start"], created["current_period_end"]

    configured = make_settings(
        settings.database_url,
        settings.redis_url,
        settings.redis_prefix,
        STRIPE_API_KEY=API_KEY,
        STRIPE_API_BASE=localstripe,
    )
    clock = MovableClock(datetime.fromtimestamp(start, UTC) + timedelta(days=1))
    async with running_service(configured, clock=clock) as svc:
        event = sf.subscription_event(
            "created",
            api_version=sf.ENDIVE,
            created=start,
            sub_id=sub_id,
            customer=customer_id,
            workspace_id=ws,
            status="active",
            items=[("price_plus_monthly", 3)],
            period_start=start,
            period_end=end,
        )
        event["data"]["object"]["items"]["data"][0]["id"] = item_id  # localstripe's item id
        await svc.deliver(event)

        body = {"requested_by_role": "workspace_admin", "member_count": 3, "storage_used_bytes": 0}
        status, answer = await svc.api(
            "POST",
            f"/v1/workspaces/{ws}/plan-changes",
            json={**body, "plan": "plus", "interval": "monthly", "seats": 5},
        )
        assert status == 200, answer
        assert answer["plan_change"]["status"] == "applied"
        assert answer["decision"]["proration_behavior"] == "create_prorations"

        status, answer = await svc.api(
            "POST",
            f"/v1/workspaces/{ws}/plan-changes",
            json={**body, "plan": "free", "interval": None, "seats": 1},
        )
        assert status == 201 and answer["plan_change"]["status"] == "pending", answer
        clock.now = datetime.fromtimestamp(end, UTC) - timedelta(hours=1)
        await sweep_plan_changes(Job(svc.services))
        change = answer["plan_change"]["change_id"]
        await wait_for(
            lambda: svc.services.pool.fetchval(
                "SELECT status FROM plan_changes WHERE change_id = $1", change
            ),
            lambda s: s == "applied",
            what="paid → free applied",
        )

    check = StripeGateway(API_KEY, api_base=localstripe, max_network_retries=0)
    try:
        sub = to_dict(await check.client.v1.subscriptions.retrieve_async(sub_id))
    finally:
        await check.close()
    assert sub["items"]["data"][0]["quantity"] == 5
    assert sub["cancel_at_period_end"] is True and sub["status"] == "active"
