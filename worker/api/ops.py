"""Internal API routes for operations: retry, dead letters, reconcile, backfill, metrics, readiness.

Each trigger exists in the CLI too (``billing-worker retry|dead-letters|reconcile|backfill``).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import stripe
from aiohttp import web

from worker.errors import InvalidInput, NotFound, UpstreamFailed
from worker.http.errors import read_json_object
from worker.http.params import event_id_of, whole_number, workspace_id_of
from worker.http.probes import livez_handler, metrics_handler, readyz_handler
from worker.infra import metrics
from worker.infra.stripe_gateway import is_transient
from worker.ops import backfill, recovery
from worker.ops.reconcile import reconcile_workspace
from worker.services import SERVICES

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){1,5}$")


def _event_type(value: Any) -> str:
    if not isinstance(value, str) or not EVENT_TYPE.fullmatch(value):
        raise InvalidInput("invalid_event_type", "`type` must be a Stripe event type such as invoice.paid")
    return value


def _limit(request: web.Request, default: int = 100, maximum: int = 1000) -> int:
    limit = whole_number(request.query.get("limit", str(default)))
    if limit is None or not 1 <= limit <= maximum:
        raise InvalidInput("invalid_limit", f"`limit` must be an integer from 1 to {maximum}")
    return limit


def _stripe_failure(operation: str, exc: stripe.StripeError) -> NotFound | UpstreamFailed:
    kind = "transient" if is_transient(exc) else type(exc).__name__
    metrics.STRIPE_API_ERRORS.labels(operation=operation, kind=kind).inc()
    if getattr(exc, "http_status", None) == 404:
        return NotFound("stripe_object_missing", "Stripe does not know this customer")
    return UpstreamFailed("stripe_unavailable", f"Stripe answered {type(exc).__name__}; retry later")


async def retry_event(request: web.Request) -> web.Response:
    event_id = event_id_of(request)
    result = await recovery.retry_event(request.app[SERVICES], event_id)
    if result is None:
        raise NotFound("event_not_found", f"no inbox event {event_id!r}")
    return web.json_response(result.as_json(), status=202)


async def list_dead_letters(request: web.Request) -> web.Response:
    event_type = request.query.get("type")
    if event_type is not None:
        _event_type(event_type)
    rows = await recovery.list_dead_letters(request.app[SERVICES], event_type, _limit(request))
    return web.json_response({"dead_letters": rows, "count": len(rows)})


async def retry_dead_letters(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    ids = await recovery.retry_dead_letters(request.app[SERVICES], _event_type(body.get("type")))
    return web.json_response({"retried": len(ids), "event_ids": ids}, status=202)


async def reconcile(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    workspace_id = workspace_id_of(request)
    try:
        result = await reconcile_workspace(services, services.require_stripe(), workspace_id)
    except stripe.StripeError as exc:
        raise _stripe_failure("reconcile", exc) from None
    return web.json_response(result)


async def start_backfill(request: web.Request) -> web.Response:
    """Start a run (``{"since": …}``) or resume one (``{"run_id": …}``); a job does the reading."""
    services = request.app[SERVICES]
    body = await read_json_object(request)
    # The body is checked in full first: 400 for a bad one whether or not Stripe is configured.
    if "run_id" in body:
        run_id = backfill.check_run_id(body["run_id"])
        services.require_stripe()
        if await backfill.get_run(services.pool, run_id) is None:
            raise NotFound("backfill_not_found", f"no backfill run {run_id}")
    else:
        since = backfill.check_since(backfill.parse_since(body.get("since")), services.clock())
        services.require_stripe()
        run_id = await backfill.start_run(services.pool, since, services.clock())
    await services.queue.enqueue_backfill(run_id, f"request:{uuid.uuid4().hex}")
    return web.json_response(await backfill.get_run(services.pool, run_id), status=202)


async def list_backfills(request: web.Request) -> web.Response:
    runs = await backfill.list_runs(request.app[SERVICES].pool, _limit(request, default=20, maximum=100))
    return web.json_response({"runs": runs, "count": len(runs)})


async def get_backfill(request: web.Request) -> web.Response:
    run_id = whole_number(request.match_info["run_id"])
    if run_id is None or not 1 <= run_id <= backfill.MAX_RUN_ID:
        raise InvalidInput("invalid_run_id", "run ids are positive integers")
    run = await backfill.get_run(request.app[SERVICES].pool, run_id)
    if run is None:
        raise NotFound("backfill_not_found", f"no backfill run {run_id}")
    return web.json_response(run)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/livez", livez_handler)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/readyz", readyz_handler)
    app.router.add_post("/v1/events/{event_id}/retry", retry_event)
    app.router.add_get("/v1/dead-letters", list_dead_letters)
    app.router.add_post("/v1/dead-letters/retry", retry_dead_letters)
    app.router.add_post("/v1/workspaces/{workspace_id}/reconcile", reconcile)
    app.router.add_post("/v1/backfill", start_backfill)
    app.router.add_get("/v1/backfill", list_backfills)
    app.router.add_get("/v1/backfill/{run_id}", get_backfill)


_ERR = {"$ref": "#/components/responses/Error"}
_WS = {"name": "workspace_id", "in": "path", "required": True, "schema": {"type": "string"}}
_EVT = {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}
_OBJ = {"content": {"application/json": {"schema": {"type": "object"}}}}


def _op(
    summary: str, ok: str = "200", params: list | None = None, body: dict | None = None, **extra: Any
) -> dict:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {ok: {"description": "OK", **_OBJ}, "400": _ERR, "401": _ERR, **extra},
    }
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


PATHS: dict[str, dict[str, Any]] = {
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (no token)",
            "security": [],
            "responses": {"200": {"description": "text exposition format"}},
        }
    },
    "/livez": {
        "get": {
            "summary": "The process answers; no I/O (liveness, no token)",
            "security": [],
            "responses": {"200": {"description": "alive", **_OBJ}},
        }
    },
    "/readyz": {
        "get": {
            "summary": "What the process's roles need answers within 1 s: PostgreSQL and its migrations "
            "(every role), Redis (receiver, worker) (readiness, no token)",
            "security": [],
            "responses": {
                "200": {"description": "ready", **_OBJ},
                "503": {"description": "not ready", **_OBJ},
            },
        }
    },
    "/openapi.json": {"get": _op("This document")},
    "/v1/events/{event_id}/retry": {
        "post": _op(
            "Reset an inbox event to received and enqueue it (any status; a no-op replay when state already reflects it)",
            "202",
            [_EVT],
            **{"404": _ERR},
        )
    },
    "/v1/dead-letters": {
        "get": _op(
            "Dead letters with the reason each was parked",
            params=[
                {"name": "type", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
        )
    },
    "/v1/dead-letters/retry": {
        "post": _op(
            "Retry every dead letter of one event type",
            "202",
            body={"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}},
        )
    },
    "/v1/workspaces/{workspace_id}/reconcile": {
        "post": _op(
            "Re-fetch the customer's subscriptions and open invoices from Stripe and apply them",
            params=[_WS],
            **{"404": _ERR, "409": _ERR, "502": _ERR, "503": _ERR},
        )
    },
    "/v1/backfill": {
        "get": _op(
            "The latest backfill runs, newest first, with their progress",
            params=[
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                }
            ],
        ),
        "post": _op(
            "Start (since, within 30 days) or resume (run_id) a backfill from Stripe's events API",
            "202",
            body={
                "type": "object",
                "properties": {
                    "since": {"oneOf": [{"type": "integer"}, {"type": "string", "format": "date-time"}]},
                    "run_id": {"type": "integer"},
                },
            },
            **{"404": _ERR, "503": _ERR},
        ),
    },
    "/v1/backfill/{run_id}": {
        "get": _op(
            "A backfill run's progress",
            params=[{"name": "run_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            **{"404": _ERR},
        )
    },
}
