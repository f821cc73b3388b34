"""Seats and storage over HTTP (ALLO's examples): usage reports, over-seat and over-quota
warnings derived from the plan, seats and storage add-ons; change notifications on the stream."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from handlers.catalog import GB
from tests.support import credit_events as ce
from tests.support import stripe_factory as sf
from tests.support.helpers import RunningService, running_service
from tests.support.money_helpers import changes_of, ids, text
from tests.support.service_fixtures import service_fixture
from worker.config import Settings
from worker.infra.notifications import stream_name

service = service_fixture(at=sf.at(sf.T0 + 2 * sf.DAY))


def _sub(i: dict[str, str], kind: str, created: int, items: list[tuple[str, int]]) -> dict[str, Any]:
    return sf.subscription_event(
        kind,
        api_version=sf.ENDIVE,
        created=created,
        sub_id=i["sub_id"],
        customer=i["customer"],
        workspace_id=i["workspace_id"],
        status="active",
        items=items,
        period_start=sf.T0,
        period_end=sf.add_months(sf.T0, 1),
        start_date=sf.T0,
    )


async def _usage(svc: RunningService, ws: str, members: int, used: int) -> dict[str, Any]:
    status, body = await svc.api(
        "PUT", f"/v1/workspaces/{ws}/usage", json={"members": members, "storage_used_bytes": used}
    )
    assert status == 200, body
    return body


async def test_seat_limit_hit_after_inviting_teammates_then_seats_added(service: RunningService):
    i = ids("seats")
    ws = i["workspace_id"]
    await service.deliver(_sub(i, "created", sf.T0, [(ce.PLUS_MONTHLY, 3)]))
    assert (await _usage(service, ws, 3, GB))["over_seat_limit"] is False

    # Two teammates invited: 5 members on 3 paid seats.
    await _usage(service, ws, 5, GB)
    state = await service.workspace(ws)
    assert (state["members"], state["seats"], state["over_seat_limit"]) == (5, 3, True)

    # More seats on the same plan (not a bigger plan) clears the warning.
    await service.deliver(_sub(i, "updated", sf.T0 + 60, [(ce.PLUS_MONTHLY, 5)]))
    state = await service.workspace(ws)
    assert (state["plan"], state["seats"], state["over_seat_limit"]) == ("plus", 5, False)
    # So does removing members who no longer need access, after a later invite.
    await _usage(service, ws, 6, GB)
    assert (await service.workspace(ws))["over_seat_limit"] is True
    await _usage(service, ws, 4, GB)
    assert (await service.workspace(ws))["over_seat_limit"] is False


async def test_free_workspace_uses_the_plan_seat_limit(service: RunningService):
    ws = ids("free")["workspace_id"]
    body = await _usage(service, ws, 4, 6 * GB)  # the product may report before any billing event
    assert body["version"] == 1 and body["changed"] is True
    state = await service.workspace(ws)
    assert (state["plan"], state["seats"], state["over_seat_limit"]) == ("free", 3, True)
    assert (state["storage_quota_bytes"], state["over_storage_quota"]) == (5 * GB, True)


async def test_storage_limit_with_a_fitting_plan_is_fixed_by_an_add_on(service: RunningService):
    i = ids("storage")
    ws = i["workspace_id"]
    await service.deliver(_sub(i, "created", sf.T0, [(ce.PLUS_MONTHLY, 3)]))
    await _usage(service, ws, 3, 150 * GB)
    state = await service.workspace(ws)
    assert (state["storage_quota_bytes"], state["over_storage_quota"]) == (100 * GB, True)

    # An AI credit pack does not repair a storage limit.
    await service.deliver(ce.pack_checkout(workspace_id=ws, customer=i["customer"], session_id=f"cs_{ws}"))
    state = await service.workspace(ws)
    assert (state["ai_credit_balance"], state["over_storage_quota"]) == (1_000, True)

    # Buying one storage add-on: quota = plan + 1 x 100 GB, no plan change.
    await service.deliver(_sub(i, "updated", sf.T0 + 60, [(ce.PLUS_MONTHLY, 3), (ce.STORAGE_100GB, 1)]))
    state = await service.workspace(ws)
    assert (state["plan"], state["seats"], state["storage_addon_units"]) == ("plus", 3, 1)
    assert (state["storage_quota_bytes"], state["over_storage_quota"]) == (200 * GB, False)

    # Changing it to 2 units, then removing it, moves the quota each time.
    await service.deliver(_sub(i, "updated", sf.T0 + 120, [(ce.PLUS_MONTHLY, 3), (ce.STORAGE_100GB, 2)]))
    assert (await service.workspace(ws))["storage_quota_bytes"] == 300 * GB
    await service.deliver(_sub(i, "updated", sf.T0 + 180, [(ce.PLUS_MONTHLY, 3)]))
    state = await service.workspace(ws)
    assert (state["storage_quota_bytes"], state["over_storage_quota"]) == (100 * GB, True)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("not json", 400, "invalid_json"),
        ([1, 2], 400, "invalid_body"),
        ({"members": 3}, 400, "missing_field"),
        ({"members": -1, "storage_used_bytes": 0}, 400, "invalid_field"),
        ({"members": 2.5, "storage_used_bytes": 0}, 400, "invalid_field"),
        ({"members": True, "storage_used_bytes": 0}, 400, "invalid_field"),
        ({"members": 1, "storage_used_bytes": "5"}, 400, "invalid_field"),
        ({"members": 1, "storage_used_bytes": 1, "seats": 9}, 400, "unknown_field"),
    ],
)
async def test_bad_usage_reports_are_refused_and_change_nothing(
    service: RunningService, body: Any, status: int, code: str
):
    ws = ids("bad")["workspace_id"]
    await _usage(service, ws, 2, GB)
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    got, answer = await service.api("PUT", f"/v1/workspaces/{ws}/usage", **kwargs)
    assert (got, answer["error"]["code"]) == (status, code)
    state = await service.workspace(ws)
    assert (state["version"], state["members"], state["storage_used_bytes"]) == (1, 2, GB)
    bad_id, answer = await service.api("PUT", "/v1/workspaces/bad%20id/usage", json={})
    assert (bad_id, answer["error"]["code"]) == (400, "invalid_workspace_id")


async def test_usage_change_is_notified_after_commit_and_only_when_something_changed(
    service: RunningService,
):
    ws = ids("notify")["workspace_id"]
    redis = service.services.redis
    stream = stream_name(service.services.settings.redis_prefix)
    last = (await redis.xinfo_stream(stream))["last-generated-id"] if await redis.exists(stream) else "0-0"

    async def entry_then_db_version() -> int:
        # Block until the notification lands, then read Postgres at once: the commit must already
        # be visible, because the notification is only written after it.
        cursor = last
        while True:
            got = await redis.xread({stream: cursor}, block=10_000)
            assert got, "no change notification within 10 s"
            for entry_id, fields in got[0][1]:
                cursor = entry_id
                if {text(k): text(v) for k, v in fields.items()}["workspace_id"] == ws:
                    return await service.services.pool.fetchval(
                        "SELECT version FROM workspaces WHERE workspace_id = $1", ws
                    )

    reader = asyncio.create_task(entry_then_db_version())
    await _usage(service, ws, 4, 7 * GB)
    db_version = await asyncio.wait_for(reader, 15)
    assert db_version == 1

    (entry,) = await changes_of(service, ws)
    assert entry["version"] == 1 and entry["cause"]
    assert {"members", "over_seat_limit", "storage_used_bytes", "over_storage_quota"} <= set(entry["changed"])

    # The same report again changes nothing: no version bump, no audit entry, no notification.
    again = await _usage(service, ws, 4, 7 * GB)
    assert (again["changed"], again["version"]) == (False, 1)
    assert len(await changes_of(service, ws)) == 1
    audits = await service.services.pool.fetch("SELECT cause_kind FROM audit_log WHERE workspace_id = $1", ws)
    assert [a["cause_kind"] for a in audits] == ["request"]


async def test_a_request_that_would_wait_on_a_locked_workspace_gets_503_and_changes_nothing(
    settings: Settings,
):
    async with running_service(dataclasses.replace(settings, lock_timeout_ms=200), worker=False) as svc:
        ws = ids("locked")["workspace_id"]
        await _usage(svc, ws, 2, GB)
        async with svc.services.pool.acquire() as holder, holder.transaction():
            await holder.execute("SELECT 1 FROM workspaces WHERE workspace_id = $1 FOR UPDATE", ws)
            status, answer = await svc.api(
                "PUT", f"/v1/workspaces/{ws}/usage", json={"members": 9, "storage_used_bytes": GB}
            )
        assert (status, answer["error"]["code"]) == (503, "database_unavailable")
        state = await svc.workspace(ws)
        assert (state["members"], state["version"]) == (2, 1)
