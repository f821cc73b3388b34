"""Shared pieces of the usage, credits and dunning service tests: a movable clock, ids, the
change stream, and a recorder of what reaches ``worker.processing.after_commit``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from tests.support.helpers import RunningService
from worker.infra.notifications import stream_name
from worker.processing import after_commit as bus


@dataclass
class MovableClock:
    """The service's injected clock; a test moves it instead of sleeping."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


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


@pytest.fixture
def after_commit_calls(monkeypatch: pytest.MonkeyPatch) -> AfterCommitRecorder:
    recorder = AfterCommitRecorder()
    real = bus.after_commits

    async def recording(services: Any, committed: Sequence[tuple[Any, tuple[Any, ...]]]) -> None:
        for change, effects in committed:
            recorder.calls.append((change.workspace_id, change.version, tuple(effects), change.cause))
        await real(services, committed)

    monkeypatch.setattr(bus, "after_commits", recording)
    return recorder
