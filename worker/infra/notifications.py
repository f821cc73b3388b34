"""Change notifications: after a commit, append what changed to a capped Redis stream.

The product reads ``<prefix>:workspace-changes`` to refresh a workspace instead of showing a stale
plan badge. Written only after the transaction committed; a lost notification is harmless (the
state API is the truth), so failures are logged, never raised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker.infra import json_codec
from worker.infra.logging import get_logger

log = get_logger("notifications")
STREAM_MAXLEN = 100_000


def stream_name(prefix: str) -> str:
    return f"{prefix}:workspace-changes"


@dataclass(frozen=True)
class Change:
    workspace_id: str
    version: int
    changes: Mapping[str, Any]
    cause: str


# Every change of a batch in one command: XADD per entry in order, the stream capped as it grows.
# KEYS: the stream; ARGV: the cap, then workspace id, version, changed fields and cause per change.
_XADD_MANY = """
for i = 2, #ARGV, 4 do
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'workspace_id', ARGV[i],
               'version', ARGV[i + 1], 'changed', ARGV[i + 2], 'cause', ARGV[i + 3])
end
return (#ARGV - 1) / 4
"""


async def publish_changes(redis: Redis, prefix: str, changes: Sequence[Change]) -> None:
    """Append the changes in order, in one round trip (one script call: a pipeline of one XADD
    per change cost more to build than the rest of the batch's Redis work)."""
    if not changes:
        return
    args: list[str | int] = [STREAM_MAXLEN]
    for c in changes:
        args += (c.workspace_id, c.version, json_codec.dumps(sorted(c.changes)), c.cause)
    try:
        await redis.register_script(_XADD_MANY)(keys=[stream_name(prefix)], args=args)
    except (RedisError, OSError) as exc:
        log.warning(
            "notification_not_sent",
            workspace_id=changes[0].workspace_id,
            version=changes[0].version,
            count=len(changes),
            error=type(exc).__name__,
        )
