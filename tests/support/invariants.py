"""What "nothing lost, nothing applied twice" means, checked on the database after a run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from handlers.codec import to_jsonable
from handlers.normalize import normalize
from handlers.reducer import apply_event
from handlers.state import WorkspaceState
from worker.services import load_catalog


def oracle(workspace_id: str, events: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The workspace view the pure reducer gives for ``events`` folded in their true order."""
    catalog = load_catalog(None)
    state = WorkspaceState.new(workspace_id)
    outcome = None
    for raw in sorted(events, key=lambda e: (e["created"], e["id"])):
        outcome = apply_event(state, normalize(raw), now, catalog)
        state = outcome.state
    assert outcome is not None
    return to_jsonable(outcome.view)


async def assert_applied_exactly_once(pool: asyncpg.Pool, histories: dict[str, list[dict[str, Any]]]) -> None:
    """Each event (duplicates counted once) has one processed mark, no audit transition is
    duplicated, versions have no gaps, and each workspace equals the in-order oracle."""
    unique = {w: list({e["id"]: e for e in events}.values()) for w, events in histories.items()}
    ids = [e["id"] for events in unique.values() for e in events]
    marks = await pool.fetch(
        "SELECT event_id, status, attempts, outcome, left(last_error, 300) AS error FROM webhook_events "
        "WHERE event_id = ANY($1::text[])",
        ids,
    )
    assert len(marks) == len(ids)
    odd = [dict(r) for r in marks if (r["status"], r["attempts"]) != ("processed", 1)]
    assert not odd, f"{len(odd)} events not processed exactly once, e.g. {odd[:3]}"
    duplicated = await pool.fetchval(
        "SELECT count(*) FROM (SELECT cause_id FROM audit_log WHERE cause_id = ANY($1::text[]) "
        "GROUP BY workspace_id, cause_id HAVING count(*) > 1) d",
        ids,
    )
    assert duplicated == 0
    now = datetime.now(UTC)
    for workspace_id, events in unique.items():
        row = await pool.fetchrow(
            "SELECT view, version, (SELECT count(*) FROM audit_log a WHERE a.workspace_id = w.workspace_id) "
            "AS audits FROM workspaces w WHERE workspace_id = $1",
            workspace_id,
        )
        assert row["view"] == oracle(workspace_id, events, now), workspace_id
        assert row["audits"] == row["version"]  # one audit entry per version, none twice
