"""The audit log: every workspace version records what changed it and when.

Its row record (written by ``worker.storage.writer`` with the rest of a batch) and its read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from handlers.evolve import quick_init


@quick_init
@dataclass(frozen=True)
class AuditEntry:
    """One audit-log row; ``before`` and ``after`` are the views' JSON documents."""

    workspace_id: str
    version: int
    cause_kind: str
    cause_id: str
    changes: Mapping[str, Any]
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    effective_at: datetime


async def audit_entries(
    conn: asyncpg.Connection | asyncpg.Pool, workspace_id: str, limit: int = 100
) -> Sequence[asyncpg.Record]:
    return await conn.fetch(
        "SELECT version, cause_kind, cause_id, changes, effective_at, recorded_at FROM audit_log "
        "WHERE workspace_id = $1 ORDER BY version DESC LIMIT $2",
        workspace_id,
        limit,
    )
