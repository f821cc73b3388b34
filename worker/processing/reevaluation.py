"""Persist a re-derived workspace view for changes that carry no Stripe event (requests, sweeps).

The caller holds the workspace row lock in ``conn``'s transaction and has put its input (usage, a
credit balance, or just a later ``now``) into the state; the pure ``reevaluate`` decides whether
anything changed. Unchanged: nothing is written and the version stays.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from handlers.catalog import Catalog
from handlers.reducer import APPLIED, Outcome, reevaluate
from handlers.state import WorkspaceState, WorkspaceView
from worker.storage import writer


async def save_reevaluated(
    conn: asyncpg.Connection,
    state: WorkspaceState,
    stored: WorkspaceView,
    *,
    now: datetime,
    catalog: Catalog,
    cause_kind: str,
    cause_id: str,
    effective_at: datetime | None = None,
) -> Outcome:
    outcome = reevaluate(state, stored, now, catalog)
    if outcome.result == APPLIED:
        await writer.save_workspace(conn, outcome.state, outcome.view, now)
        await writer.append_audit(
            conn,
            workspace_id=state.workspace_id,
            version=outcome.state.version,
            cause_kind=cause_kind,
            cause_id=cause_id,
            changes=outcome.changes,
            before=stored,
            after=outcome.view,
            effective_at=effective_at or now,
        )
    return outcome
