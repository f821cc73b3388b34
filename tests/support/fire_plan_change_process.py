"""``python -m tests.support.fire_plan_change_process CHANGE_ID NOW_ISO``: one worker process that fires a
plan change once (settings from the environment, clock fixed at NOW) and prints the outcome.
The multi-process tests start two of these to race, or kill one mid-call."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime

from worker.config import Settings
from worker.plan_changes.firing import fire
from worker.services import Services


async def main(change_id: str, now: datetime) -> str:
    services = await Services.start(Settings.from_env(), clock=lambda: now)
    try:
        result = await fire(services, change_id, cause=("job", f"process:{os.getpid()}"))
        return result.outcome
    finally:
        await services.close()


if __name__ == "__main__":
    print(asyncio.run(main(sys.argv[1], datetime.fromisoformat(sys.argv[2]))), flush=True)
