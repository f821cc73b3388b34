"""Change notifications: after a commit, append what changed to a capped Redis stream.

The product reads ``<prefix>:workspace-changes`` to refresh a workspace instead of showing a stale
plan badge. Written only after the transaction committed; a lost notification is harmless (the
state API is the truth), so failures are logged, never raised.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    await publish_changes(redis, prefix, [Change(workspace_id, version, changes, cause)])


@dataclass(frozen=True)
class Change:
    workspace_id: str
    version: int
    changes: Mapping[str, Any]
    cause: str


async def publish_changes(redis: Redis, prefix: str, changes: Sequence[Change]) -> None:
    """Append the changes in order, in one round trip."""
    if not changes:
        return
    pipe = redis.pipeline(transaction=False)
    for c in changes:
        fields = {
            "workspace_id": c.workspace_id,
            "version": str(c.version),
            "changed": json.dumps(sorted(c.changes)),
            "cause": c.cause,
        }
        pipe.xadd(stream_name(prefix), fields, maxlen=STREAM_MAXLEN, approximate=True)
    try:
        await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning(
            "notification_not_sent",
            workspace_id=changes[0].workspace_id,
            version=changes[0].version,
            count=len(changes),
            error=type(exc).__name__,
        )
