"""The dunning sweep: escalate (or lift) a workspace's block when time alone moved its level.

Invoice events already re-evaluate the ladder; this cron job covers the days in which no event
arrives. Candidates come from two partial indexes (workspaces with an unpaid invoice, blocked
workspaces) — never a full scan. Each workspace is its own transaction under its row lock; an
unchanged level writes nothing. A change is audited as cause ``sweep`` with the moment the level
became due (``since + after_days``), not the sweep's run time, then goes through ``after_commit``.
"""

from __future__ import annotations

import asyncpg

from handlers.dunning import evaluate_block, level_due_at
from handlers.reducer import APPLIED
from worker.infra.logging import get_logger
from worker.processing.after_commit import after_commit
from worker.processing.reevaluation import save_reevaluated
from worker.queue.worker import Job
from worker.services import Services
from worker.storage import db, workspaces

log = get_logger("dunning")
BATCH = 500


async def sweep_dunning(job: Job) -> int:
    """Returns how many workspaces changed."""
    services: Services = job.services
    now = services.clock()
    cause_id = f"dunning-sweep:{now.isoformat()}"
    changed = 0
    after = ""  # keyset cursor: each branch walks its partial index from here
    while True:
        candidates = await workspaces.dunning_candidates(services.pool, after, BATCH)
        for workspace_id in candidates:
            try:
                changed += await _sweep_one(services, workspace_id, cause_id)
            except asyncpg.LockNotAvailableError:
                # An event holds the workspace; it re-evaluates the ladder itself, the next sweep too.
                log.info("sweep_dunning_skipped", workspace_id=workspace_id, reason="locked")
        if len(candidates) < BATCH:
            break
        after = candidates[-1]
    if changed:
        log.info("sweep_dunning", changed=changed)
    return changed


async def _sweep_one(services: Services, workspace_id: str, cause_id: str) -> int:
    now = services.clock()
    async with services.pool.acquire() as conn, conn.transaction():
        await db.begin_keyed(conn, services.settings.lock_timeout_ms)
        loaded = await workspaces.lock_workspace(conn, workspace_id)
        if loaded is None:
            return 0
        state, stored = loaded
        block = evaluate_block(state.invoices.values(), services.catalog.policy, now)
        stored_level = stored.block.level if stored.block else None
        moved = block is not None and block.level != stored_level
        outcome = await save_reevaluated(
            conn,
            state,
            stored,
            now=now,
            catalog=services.catalog,
            cause_kind="sweep",
            cause_id=cause_id,
            effective_at=level_due_at(block, services.catalog.policy) if moved and block else now,
        )
    if outcome.result != APPLIED:
        return 0
    await after_commit(
        services, workspace_id, outcome.state.version, outcome.changes, outcome.effects, cause_id
    )
    return 1
