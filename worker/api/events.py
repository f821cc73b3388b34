"""Internal API for the inbox as the support desk browses it: one event with the transitions it
caused, and the event browser (filters, newest first, a cursor that stays put under new events)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from handlers.codec import to_jsonable
from handlers.timeline import (
    CURSOR_PATTERN,
    EVENT,
    EVENT_CURSOR_PATTERN,
    EVENT_STATUSES,
    Cursor,
    decode_cursor,
    encode_cursor,
    event_status,
)
from worker.api.openapi import (
    EVENT_ID_SCHEMA,
    EVENT_PARAM,
    INT,
    OBJ,
    STRING_OR_NULL,
    TIME,
    TIME_OR_NULL,
    WORKSPACE_ID_SCHEMA,
    array,
    obj,
    operation,
    query_param,
)
from worker.errors import InvalidInput, NotFound
from worker.http.params import WORKSPACE_ID, event_id_of, query_int
from worker.services import SERVICES
from worker.storage import inbox
from worker.storage.timeline import EventFilter, event_transitions, events_page

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){1,5}$")
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
# ISO-8601 with a zone, and only calendar dates that exist (29 February aside), so that whatever
# matches the documented pattern parses.
TIME_PATTERN = (
    r"^(19[7-9][0-9]|20[0-9]{2})-"
    r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])$"
)
_TIME = re.compile(TIME_PATTERN)


def page_limit(request: web.Request) -> int:
    return query_int(
        request, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT, code="invalid_limit"
    )


def page_cursor(request: web.Request, kinds: tuple[str, ...] | None = None) -> Cursor | None:
    raw = request.query.get("cursor")
    if raw is None:
        return None
    cursor = decode_cursor(raw) if kinds is None else decode_cursor(raw, kinds)
    if cursor is None:
        raise InvalidInput("invalid_cursor", "`cursor` must be a next_cursor this API returned")
    return cursor


def _time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not _TIME.fullmatch(raw):
        raise InvalidInput(f"invalid_{name}", f"`{name}` must be an ISO-8601 time with a zone")
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)


def event_filter(request: web.Request) -> EventFilter:
    q = request.query
    workspace_id, event_type, status = q.get("workspace_id"), q.get("type"), q.get("status")
    if workspace_id is not None and not WORKSPACE_ID.fullmatch(workspace_id):
        raise InvalidInput("invalid_workspace_id", "workspace ids are 1-128 of A-Z a-z 0-9 _ . : -")
    if event_type is not None and not EVENT_TYPE.fullmatch(event_type):
        raise InvalidInput("invalid_event_type", "`type` must be a Stripe event type such as invoice.paid")
    if status is not None and status not in EVENT_STATUSES:
        raise InvalidInput("invalid_status", f"`status` must be one of {', '.join(EVENT_STATUSES)}")
    return EventFilter(workspace_id, event_type, status, _time(request, "since"), _time(request, "until"))


def event_json(row: Any) -> dict[str, Any]:
    out = to_jsonable(dict(row))
    out["inbox_status"] = out["status"]
    out["status"] = event_status(row["status"], row["outcome"])
    return out


async def list_events(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    f, limit, cursor = event_filter(request), page_limit(request), page_cursor(request, (EVENT,))
    rows = await events_page(services.pool, f, limit + 1, cursor)
    page = rows[:limit]
    more = len(rows) > limit
    next_cursor = encode_cursor(Cursor(page[-1]["created"], EVENT, page[-1]["event_id"])) if more else None
    return web.json_response({"items": [event_json(r) for r in page], "next_cursor": next_cursor})


async def get_event(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    event_id = event_id_of(request)
    row = await inbox.get_event(services.pool, event_id)
    if row is None:
        raise NotFound("event_not_found", f"no inbox event {event_id!r}")
    transitions = await event_transitions(services.pool, event_id, row["workspace_id"])
    # ``status`` stays the inbox's own here, as before the browser existed; ``desk_status`` is the
    # browser's and the timeline's (``stale``: a processed event that changed nothing).
    return web.json_response(
        {
            **to_jsonable(dict(row)),
            "desk_status": event_status(row["status"], row["outcome"]),
            "transitions": [to_jsonable(dict(t)) for t in transitions],
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/events", list_events)
    app.router.add_get("/v1/events/{event_id}", get_event)


STATUS_SCHEMA = {"type": "string", "enum": list(EVENT_STATUSES)}
EVENT_SCHEMA = obj(
    {
        "event_id": EVENT_ID_SCHEMA,
        "type": {"type": "string"},
        "status": STATUS_SCHEMA,
        "workspace_id": STRING_OR_NULL,
        "customer_id": STRING_OR_NULL,
        "received_at": TIME,
        "attempts": INT,
        "last_error": STRING_OR_NULL,
        "api_version": STRING_OR_NULL,
    },
    {
        "created": TIME,
        "outcome": STRING_OR_NULL,
        "processed_at": TIME_OR_NULL,
        "inbox_status": {"type": "string"},
    },
)
TRANSITION_SCHEMA = obj(
    {"workspace_id": {"type": "string"}, "version": INT, "changes": OBJ, "effective_at": TIME},
    {"recorded_at": TIME},
)
CURSOR_PARAM = query_param(
    "cursor", {"type": "string", "pattern": CURSOR_PATTERN}, "the next_cursor of the previous page"
)
LIMIT_PARAM = query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50})
PAGE = {"next_cursor": {"type": ["string", "null"], "pattern": CURSOR_PATTERN}}

PATHS: dict[str, dict[str, Any]] = {
    "/v1/events": {
        "get": operation(
            "listEvents",
            "The event browser: inbox events newest first (by Stripe's `created`), filtered",
            obj({"items": array(EVENT_SCHEMA), **PAGE}),
            params=[
                query_param("workspace_id", WORKSPACE_ID_SCHEMA),
                query_param("type", {"type": "string", "pattern": EVENT_TYPE.pattern, "maxLength": 200}),
                query_param("status", STATUS_SCHEMA),
                query_param("since", {"type": "string", "pattern": TIME_PATTERN}, "created at or after"),
                query_param("until", {"type": "string", "pattern": TIME_PATTERN}, "created before"),
                LIMIT_PARAM,
                query_param("cursor", {"type": "string", "pattern": EVENT_CURSOR_PATTERN}, "a next_cursor"),
            ],
            errors=(400,),
        )
    },
    "/v1/events/{event_id}": {
        "get": operation(
            "getEvent",
            "An inbox event: status, attempts, last error, its workspace and the transitions it caused",
            obj(
                {
                    **{k: v for k, v in EVENT_SCHEMA["properties"].items() if k != "inbox_status"},
                    "status": {"type": "string", "enum": [s for s in EVENT_STATUSES if s != "stale"]},
                    "desk_status": STATUS_SCHEMA,
                    "transitions": array(TRANSITION_SCHEMA),
                }
            ),
            params=[EVENT_PARAM],
        )
    },
}
