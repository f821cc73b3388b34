"""Shared pieces of the usage, credits and dunning service tests: ids, the change stream, and a
recorder of what reaches ``worker.processing.after_commit`` (the ``after_commit_calls`` fixture)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.support.helpers import RunningService
from worker.infra.notifications import stream_name


def ids(tag: str) -> dict[str, str]:
    u = uuid.uuid4().hex[:10]
    return {"workspace_id": f"ws_{tag}_{u}", "customer": f"cus_{tag}{u}", "sub_id": f"sub_{tag}{u}"}


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def changes_of(svc: RunningService, workspace_id: str) -> list[dict[str, Any]]:
    """The change notifications of one workspace, oldest first."""
    entries = await svc.services.redis.xrange(stream_name(svc.services.settings.redis_prefix))
    out = []
    for _, fields in entries:
        decoded = {text(k): text(v) for k, v in fields.items()}
        if decoded["workspace_id"] == workspace_id:
            decoded["version"] = int(decoded["version"])
            decoded["changed"] = json.loads(decoded["changed"])
            out.append(decoded)
    return out


@dataclass
class AfterCommitRecorder:
    """Wraps the real ``after_commits`` (it still publishes) and remembers each committed change."""

    calls: list[tuple[str | None, int | None, tuple[Any, ...], str]] = field(default_factory=list)

    def effects_for(self, workspace_id: str) -> list[Any]:
        return [e for ws, _, effects, _ in self.calls if ws == workspace_id for e in effects]


async def audit_count(svc: RunningService, workspace_id: str) -> int:
    """How many audit entries one workspace has."""
    return await svc.services.pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE workspace_id = $1", workspace_id
    )
