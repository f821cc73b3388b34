"""Change notifications: after a commit, append what changed to a capped Redis stream.

The product reads ``<prefix>:workspace-changes`` to refresh a workspace instead of showing a stale
plan badge. Written only after the transaction committed; a lost notification is harmless (the
state API is the truth), so failures are logged, never raised.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker.logging import get_logger

log = get_logger("notifications")
STREAM_MAXLEN = 100_000


def stream_name(prefix: str) -> str:
    return f"{prefix}:workspace-changes"


async def publish_change(
    redis: Redis, prefix: str, workspace_id: str, version: int, changes: Mapping[str, Any], cause: str
) -> None:
    fields = {
        "workspace_id": workspace_id,
        "version": str(version),
        "changed": json.dumps(sorted(changes)),
        "cause": cause,
    }
    try:
        await redis.xadd(stream_name(prefix), fields, maxlen=STREAM_MAXLEN, approximate=True)
    except (RedisError, OSError) as exc:
        log.warning(
            "notification_not_sent", workspace_id=workspace_id, version=version, error=type(exc).__name__
        )
