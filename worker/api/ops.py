"""Internal API routes for operations: retry, dead letters, reconcile, backfill, metrics, readiness.

Each trigger exists in the CLI too (``billing-worker retry|dead-letters|reconcile|backfill``).
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import stripe
from aiohttp import web

from handlers.codec import json_int
from worker.api.openapi import (
    EVENT_ID_SCHEMA,
    EVENT_PARAM,
    INT,
    OBJ,
    STRING_OR_NULL,
    TIME,
    WORKSPACE_PARAM,
    array,
    json_response,
    obj,
    operation,
    path_param,
    query_param,
)
from worker.errors import InvalidInput, NotFound, UpstreamFailed
from worker.http.errors import read_json_object
from worker.http.params import DIGITS, event_id_of, query_int, workspace_id_of
from worker.http.probes import livez_handler, metrics_handler, readyz_handler
from worker.infra import metrics
from worker.infra.stripe_gateway import is_transient
from worker.ops import backfill, recovery
from worker.ops.reconcile import reconcile_workspace
from worker.services import SERVICES, Services

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){1,5}$")
MAX_RUN_PATH = 10**18 - 1  # 18 digits in a path


def _event_type(value: Any) -> str:
    if not isinstance(value, str) or not EVENT_TYPE.fullmatch(value):
        raise InvalidInput("invalid_event_type", "`type` must be a Stripe event type such as invoice.paid")
    return value


def _limit(request: web.Request, default: int = 100, maximum: int = 1000) -> int:
    return query_int(request, "limit", default=default, minimum=1, maximum=maximum, code="invalid_limit")


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
    if "run_id" in body and "since" in body:
        raise InvalidInput("invalid_body", "give `since` (a new run) or `run_id` (a resume), not both")
    if "run_id" in body:
        run_id = backfill.check_run_id(json_int(body["run_id"]))
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
    raw = request.match_info["run_id"]
    if not DIGITS.fullmatch(raw) or int(raw) > MAX_RUN_PATH:
        raise InvalidInput("invalid_run_id", "run ids are positive integers")
    run_id = int(raw)
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


DEAD_LETTER = obj(
    {"event_id": EVENT_ID_SCHEMA, "type": {"type": "string"}, "attempts": INT},
    {"last_error": STRING_OR_NULL, "received_at": TIME, "workspace_id": STRING_OR_NULL},
)
RUN = obj({"run_id": INT, "status": {"type": "string", "enum": ["running", "done", "failed"]}, "since": TIME})
EVENT_TYPE_SCHEMA = {"type": "string", "pattern": EVENT_TYPE.pattern, "maxLength": 200}
# A backfill's ``since`` the schema offers: inside Stripe's 30 days with an hour to spare either side
# (the document is read once and used for a while).
MARGIN = timedelta(hours=1)


def PATHS(services: Services) -> dict[str, dict[str, Any]]:
    """The path items; the backfill's window is the service clock's."""
    # One table of this module's routes: it reads better whole than cut into helpers.
    now = services.clock()
    since = {
        "type": "integer",
        "minimum": int((now - backfill.HORIZON + MARGIN).timestamp()),
        "maximum": int((now - MARGIN).timestamp()),
        "description": "unix seconds (an ISO-8601 time with a zone is accepted too)",
    }
    return {
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus metrics (no token)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/livez": {
            "get": {
                "operationId": "getLiveness",
                "summary": "The process answers; no I/O (liveness, no token)",
                "security": [],
                "responses": {"200": json_response(OBJ, "alive")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "getReadiness",
                "summary": "Postgres, Redis and migrations ready (no token)",
                "security": [],
                "responses": {
                    "200": json_response(obj({"ready": {"type": "boolean"}, "checks": OBJ}), "ready"),
                    "503": json_response(obj({"ready": {"type": "boolean"}, "checks": OBJ}), "not ready"),
                },
            }
        },
        "/v1/events/{event_id}/retry": {
            "post": operation(
                "retryEvent",
                "Reset an inbox event to received and enqueue it (any status; a no-op replay when state already reflects it)",
                obj({"event_id": EVENT_ID_SCHEMA}),
                status="202",
                params=[EVENT_PARAM],
            )
        },
        "/v1/dead-letters": {
            "get": operation(
                "listDeadLetters",
                "Dead letters with the reason each was parked",
                obj({"dead_letters": array(DEAD_LETTER), "count": INT}),
                params=[
                    query_param("type", EVENT_TYPE_SCHEMA),
                    query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ],
                errors=(400,),
            )
        },
        "/v1/dead-letters/retry": {
            "post": operation(
                "retryDeadLetters",
                "Retry every dead letter of one event type",
                obj({"retried": INT, "event_ids": array({"type": "string"})}),
                status="202",
                body=obj({"type": EVENT_TYPE_SCHEMA}),
                errors=(400,),
            )
        },
        "/v1/workspaces/{workspace_id}/reconcile": {
            "post": operation(
                "reconcileWorkspace",
                "Re-fetch the customer's subscriptions and open invoices from Stripe and apply them",
                OBJ,
                params=[WORKSPACE_PARAM],
                errors=(400, 404, 409, 502, 503),
            )
        },
        "/v1/backfill": {
            "get": operation(
                "listBackfillRuns",
                "The latest backfill runs, newest first, with their progress",
                obj({"runs": array(RUN), "count": INT}),
                params=[
                    query_param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20})
                ],
                errors=(400,),
            ),
            "post": operation(
                "startBackfill",
                "Start (since, within Stripe's 30 days) or resume (run_id) a backfill from Stripe's events API",
                RUN,
                status="202",
                body={
                    **obj(
                        optional={
                            "since": since,
                            "run_id": {"type": "integer", "minimum": 1, "maximum": backfill.MAX_RUN_ID},
                        }
                    ),
                    "oneOf": [{"required": ["since"]}, {"required": ["run_id"]}],
                },
                errors=(400, 404, 409, 503),
            ),
        },
        "/v1/backfill/{run_id}": {
            "get": operation(
                "getBackfill",
                "A backfill run's progress",
                RUN,
                params=[path_param("run_id", {"type": "integer", "minimum": 0, "maximum": MAX_RUN_PATH})],
            )
        },
    }
