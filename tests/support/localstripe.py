"""A localstripe process (a third-party Stripe emulator, pip package) on a free loopback port."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import DEVNULL
from typing import Any

import aiohttp

from tests.support.helpers import wait_for
from tests.support.services import free_port
from worker.infra.stripe_gateway import StripeGateway, to_dict


@asynccontextmanager
async def running_localstripe(api_key: str) -> AsyncIterator[str]:
    """Its base URL once it answers; always terminated (then killed) at the end."""
    port = free_port()
    exe = Path(sys.executable).with_name("localstripe")
    proc = await asyncio.create_subprocess_exec(
        str(exe), "--port", str(port), "--from-scratch", stdout=DEVNULL, stderr=DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:

        async def answers() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(f"{url}/v1/customers", headers={"Authorization": f"Bearer {api_key}"}) as r,
                ):
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(answers, timeout=20, what="localstripe listening")
        yield url
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def plus_subscription(
    gateway: StripeGateway, workspace_id: str, seats: int = 3
) -> tuple[str, dict[str, Any]]:
    """A customer with a card and a Plus (monthly) subscription of ``seats`` in localstripe: the
    customer id and the subscription as a dict. localstripe knows only the legacy ``plan`` field."""
    v1 = gateway.client.v1
    customer = await v1.customers.create_async({"metadata": {"workspace_id": workspace_id}})
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    pm = await v1.payment_methods.create_async({"type": "card", "card": card})
    await v1.payment_methods.attach_async(pm.id, {"customer": customer.id})
    await v1.customers.update_async(customer.id, {"invoice_settings": {"default_payment_method": pm.id}})
    plan = {"id": "price_plus_monthly", "amount": 1000, "currency": "usd", "interval": "month"}
    await v1.plans.create_async({**plan, "product": {"name": "Plus"}})
    items = [{"plan": "price_plus_monthly", "quantity": seats}]
    return customer.id, to_dict(
        await v1.subscriptions.create_async({"customer": customer.id, "items": items})
    )
