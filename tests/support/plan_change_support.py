"""A workspace on Business (Yearly) with a Stripe-playing server and a movable clock, for the
plan-change tests (in-process and multi-process)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support import stripe_factory as sf
from tests.support.clock import MovableClock
from tests.support.helpers import RunningService, make_settings, running_service, wait_for
from tests.support.stripe_server import StripeServer
from worker.config import Settings
from worker.plan_changes.store import get_change
from worker.queue.worker import Job

GB = 1024**3
START = sf.T0
ANNUAL_END = sf.period_end_for("price_business_annual", START)
LEAD = 3600  # policy.fire_lead_seconds of the example catalog


@dataclass
class World:
    svc: RunningService
    server: StripeServer
    clock: MovableClock
    ws: str
    customer: str
    sub_id: str

    @property
    def ctx(self) -> Job:
        return Job(self.svc.services)

    async def request(self, **body: Any) -> tuple[int, Any]:
        base = {
            "seats": 5,
            "requested_by_role": "billing_admin",
            "member_count": 4,
            "storage_used_bytes": 10 * GB,
        }
        return await self.svc.api("POST", f"/v1/workspaces/{self.ws}/plan-changes", json={**base, **body})

    async def row(self, change_id: str) -> Any:
        return await get_change(self.svc.services.pool, change_id)

    async def applied(self, change_id: str) -> Any:
        return await wait_for(lambda: self.row(change_id), lambda r: r["status"] == "applied", what="applied")

    def invoice_fields(self, invoice_id: str, invoice_created: int) -> dict[str, Any]:
        """The fields every event of one invoice of this workspace's subscription shares."""
        return dict(
            api_version=sf.ENDIVE,
            invoice_id=invoice_id,
            customer=self.customer,
            sub_id=self.sub_id,
            workspace_id=self.ws,
            amount_due=9600,
            invoice_created=invoice_created,
        )

    def sub_event(self, kind: str, created: int, items: list[tuple[str, int]], **kw: Any) -> dict[str, Any]:
        return sf.subscription_event(
            kind,
            api_version=sf.ENDIVE,
            created=created,
            sub_id=self.sub_id,
            customer=self.customer,
            workspace_id=self.ws,
            status=kw.pop("status", "active"),
            items=items,
            period_start=kw.pop("period_start", START),
            period_end=kw.pop("period_end", ANNUAL_END),
            start_date=START,
            **kw,
        )


def ts(dt: datetime) -> int:
    return int(dt.timestamp())


@asynccontextmanager
async def world_for(settings: Settings) -> AsyncIterator[World]:
    """The world of one test (tests wrap it in their own ``world`` fixture)."""
    async with StripeServer() as server:
        configured = make_settings(
            settings.database_url,
            settings.redis_url,
            settings.redis_prefix,
            STRIPE_API_KEY=server.api_key,
            STRIPE_API_BASE=server.url,
        )
        clock = MovableClock(datetime.fromtimestamp(START, UTC) + timedelta(days=30))
        async with running_service(configured, clock=clock) as svc:
            u = uuid.uuid4().hex[:10]
            w = World(svc, server, clock, f"ws_pc_{u}", f"cus_pc{u}", f"sub_pc{u}")
            created = w.sub_event("created", START, [("price_business_annual", 5)])
            server.put(created["data"]["object"])
            await w.svc.deliver(created)
            yield w
