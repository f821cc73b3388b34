"""Internal API for what lives beside the plan: usage reports and the AI-credit ledger.

``PUT /v1/workspaces/{id}/usage`` records members and storage used (the view derives the
over-seat and over-quota warnings); ``POST …/ai-credits/consume`` spends credits once per
idempotency key; ``GET …/ai-credits/ledger`` pages through the ledger. Each change is one
transaction under the workspace row lock, audited as cause ``request``, then ``after_commit``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from typing import Any

from aiohttp import web

from handlers.codec import json_int, to_jsonable
from handlers.credits import CreditEntry, InsufficientCredits, consume, consume_key
from handlers.reducer import APPLIED
from handlers.state import Usage, WorkspaceState
from worker.api.openapi import (
    INT,
    STRING_OR_NULL,
    TIME,
    WORKSPACE_ID_SCHEMA,
    WORKSPACE_PARAM,
    array,
    json_response,
    obj,
    operation,
    query_param,
)
from worker.errors import Conflict, InvalidInput, NotFound
from worker.http.errors import read_json_object
from worker.http.params import query_int, workspace_id_of
from worker.processing.after_commit import after_commit
from worker.processing.reevaluation import save_reevaluated
from worker.services import SERVICES
from worker.storage import credit_ledger as credits_store
from worker.storage import workspaces

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
MAX_AMOUNT = 10**12  # well above any pack; keeps amounts inside bigint with room to sum
MAX_BYTES = 2**62
MAX_MEMBERS = 10**7
MAX_REASON = 500
MAX_BEFORE = 2**62


def _int(body: dict[str, Any], name: str, *, minimum: int, maximum: int) -> int:
    value = body.get(name)
    if value is None:
        raise InvalidInput("missing_field", f"`{name}` is required", field=name)
    number = json_int(value)
    if number is None or not minimum <= number <= maximum:
        raise InvalidInput(
            "invalid_field", f"`{name}` must be a whole number from {minimum} to {maximum}", field=name
        )
    return number


def _cause_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    return given if IDEMPOTENCY_KEY.fullmatch(given) else f"req_{uuid.uuid4().hex}"


async def put_usage(request: web.Request) -> web.Response:
    """Usage is a report, not a delta: the latest report replaces the previous one."""
    services = request.app[SERVICES]
    workspace_id = workspace_id_of(request)
    body = await read_json_object(request, {"members", "storage_used_bytes"})
    usage = Usage(
        members=_int(body, "members", minimum=0, maximum=MAX_MEMBERS),
        storage_used_bytes=_int(body, "storage_used_bytes", minimum=0, maximum=MAX_BYTES),
    )
    cause_id = _cause_id(request)
    now = services.clock()
    async with services.transaction() as conn:
        # The product may report usage before any billing event: a Free workspace then.
        await workspaces.ensure_workspace(conn, workspace_id, services.catalog, now)
        loaded = await workspaces.lock_workspace(conn, workspace_id)
        assert loaded is not None
        state, stored = loaded
        if usage != state.usage:
            await conn.execute(
                "UPDATE workspaces SET members = $2, storage_used_bytes = $3 WHERE workspace_id = $1",
                workspace_id,
                usage.members,
                usage.storage_used_bytes,
            )
        outcome = await save_reevaluated(
            conn,
            replace(state, usage=usage),
            stored,
            now=now,
            catalog=services.catalog,
            cause_kind="request",
            cause_id=cause_id,
        )
    if outcome.result == APPLIED:
        await after_commit(
            services, workspace_id, outcome.state.version, outcome.changes, outcome.effects, cause_id
        )
    view = outcome.view
    return web.json_response(
        {
            "workspace_id": workspace_id,
            "version": outcome.state.version,
            "changed": outcome.result == APPLIED,
            "members": view.members,
            "seats": view.seats,
            "over_seat_limit": view.over_seat_limit,
            "storage_used_bytes": view.storage_used_bytes,
            "storage_quota_bytes": view.storage_quota_bytes,
            "over_storage_quota": view.over_storage_quota,
        }
    )


def _entry_json(row: Any) -> dict[str, Any]:
    return to_jsonable(dict(row))


async def consume_credits(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    workspace_id = workspace_id_of(request)
    body = await read_json_object(request, {"amount", "idempotency_key", "reason"})
    amount, key, reason = _consume_fields(body)
    source_key = consume_key(workspace_id, key)
    now = services.clock()
    async with services.transaction() as conn:
        loaded = await workspaces.lock_workspace(conn, workspace_id)
        if loaded is None:
            raise NotFound("workspace_not_found", f"no billing state for workspace {workspace_id!r}")
        state, stored = loaded
        # Under the row lock: a concurrent request with the same key waits, then sees this one's row.
        previous = await credits_store.entry_by_key(conn, source_key)
        if previous is not None:
            return _replay(previous, key, amount)
        new_state, entry = _spend(state, amount, key, reason)
        await credits_store.append_entries(
            conn, workspace_id, [entry], cause_kind="request", cause_id=source_key, now=now
        )
        outcome = await save_reevaluated(
            conn,
            new_state,
            stored,
            now=now,
            catalog=services.catalog,
            cause_kind="request",
            cause_id=source_key,
        )
        row = await credits_store.entry_by_key(conn, source_key)
    await after_commit(
        services, workspace_id, outcome.state.version, outcome.changes, outcome.effects, source_key
    )
    assert row is not None
    return web.json_response(
        {"replayed": False, "entry": _entry_json(row), "balance": row["balance_after"]}, status=201
    )


def _consume_fields(body: dict[str, Any]) -> tuple[int, str, str | None]:
    """The body's amount, idempotency key and reason, each refused with a code naming it."""
    amount = _int(body, "amount", minimum=1, maximum=MAX_AMOUNT)
    key = body.get("idempotency_key")
    if not isinstance(key, str) or not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidInput(
            "invalid_idempotency_key", "`idempotency_key` must be 1-200 of A-Z a-z 0-9 _ . : -"
        )
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
        raise InvalidInput(
            "invalid_field", f"`reason` must be a string of at most {MAX_REASON}", field="reason"
        )
    return amount, key, reason


def _replay(previous: Any, key: str, amount: int) -> web.Response:
    """A retried request gets the first answer again; the same key for another amount is a conflict."""
    if -previous["amount"] != amount:
        raise Conflict(
            "idempotency_key_reused",
            f"idempotency key {key!r} was used for {-previous['amount']} credits, not {amount}",
        )
    return web.json_response(
        {"replayed": True, "entry": _entry_json(previous), "balance": previous["balance_after"]}
    )


def _spend(
    state: WorkspaceState, amount: int, key: str, reason: str | None
) -> tuple[WorkspaceState, CreditEntry]:
    """The pure ledger step; a balance too small is a conflict carrying balance and requested."""
    result = consume(state, amount, key, reason)
    if isinstance(result, InsufficientCredits):
        raise Conflict(
            "insufficient_credits",
            f"{amount} credits requested but the balance is {result.balance}",
            balance=result.balance,
            requested=amount,
        )
    return result


async def get_ledger(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    workspace_id = workspace_id_of(request)
    limit = query_int(request, "limit", default=50, minimum=1, maximum=200, code="invalid_query")
    before = (
        query_int(request, "before", default=0, minimum=1, maximum=MAX_BEFORE, code="invalid_query") or None
    )
    balance = await credits_store.balance(services.pool, workspace_id)
    if balance is None:
        raise NotFound("workspace_not_found", f"no billing state for workspace {workspace_id!r}")
    rows = await credits_store.entries(services.pool, workspace_id, limit=limit + 1, before_id=before)
    page = rows[:limit]
    return web.json_response(
        {
            "workspace_id": workspace_id,
            "balance": balance,
            "entries": [_entry_json(r) for r in page],
            "next_before": page[-1]["id"] if len(rows) > limit else None,
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_put("/v1/workspaces/{workspace_id}/usage", put_usage)
    app.router.add_post("/v1/workspaces/{workspace_id}/ai-credits/consume", consume_credits)
    app.router.add_get("/v1/workspaces/{workspace_id}/ai-credits/ledger", get_ledger)


ENTRY = obj(
    {
        "id": INT,
        "source_key": {"type": "string"},
        "kind": {"type": "string", "enum": ["pack", "cycle", "consume"]},
        "amount": INT,
        "balance_after": INT,
        "recorded_at": TIME,
    },
    {"reason": STRING_OR_NULL, "reference": {"type": "string"}},
)
CONSUMED = obj({"replayed": {"type": "boolean"}, "entry": ENTRY, "balance": INT})
COUNT = {"type": "integer", "minimum": 0}

PATHS: dict[str, dict[str, Any]] = {
    "/v1/workspaces/{workspace_id}/usage": {
        "put": operation(
            "reportUsage",
            "Report the members and storage a workspace uses now (the latest report wins)",
            obj(
                {
                    "workspace_id": WORKSPACE_ID_SCHEMA,
                    "version": INT,
                    "changed": {"type": "boolean"},
                    "members": INT,
                    "seats": INT,
                    "over_seat_limit": {"type": "boolean"},
                    "storage_used_bytes": INT,
                    "over_storage_quota": {"type": "boolean"},
                }
            ),
            params=[WORKSPACE_PARAM],
            body={
                **obj(
                    {
                        "members": {**COUNT, "maximum": MAX_MEMBERS},
                        "storage_used_bytes": {**COUNT, "maximum": MAX_BYTES},
                    }
                ),
                "additionalProperties": False,
            },
            errors=(400,),
        )
    },
    "/v1/workspaces/{workspace_id}/ai-credits/consume": {
        "post": operation(
            "consumeAiCredits",
            "Spend AI credits once per idempotency key",
            CONSUMED,
            status="201",
            params=[WORKSPACE_PARAM],
            body={
                **obj(
                    {
                        "amount": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT},
                        "idempotency_key": {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern},
                    },
                    {"reason": {"type": ["string", "null"], "maxLength": MAX_REASON}},
                ),
                "additionalProperties": False,
            },
            errors=(400, 404, 409),
            **{"200": json_response(CONSUMED, "a replay of the first answer")},
        )
    },
    "/v1/workspaces/{workspace_id}/ai-credits/ledger": {
        "get": operation(
            "getAiCreditLedger",
            "The AI-credit ledger, newest first",
            obj(
                {
                    "workspace_id": WORKSPACE_ID_SCHEMA,
                    "balance": INT,
                    "entries": array(ENTRY),
                    "next_before": {"type": ["integer", "null"]},
                }
            ),
            params=[
                WORKSPACE_PARAM,
                query_param("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                query_param("before", {"type": "integer", "minimum": 1, "maximum": MAX_BEFORE}),
            ],
        )
    },
}
