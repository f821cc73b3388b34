"""A localstripe process (a third-party Stripe emulator, pip package) on a free loopback port."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import DEVNULL

import aiohttp

from tests.support.helpers import wait_for
from tests.support.services import free_port


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
