"""Ids and numbers taken from a request's path or query, validated before any query so hostile input
touches nothing."""

from __future__ import annotations

import re

from aiohttp import web

from worker.errors import InvalidInput

WORKSPACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
EVENT_ID = re.compile(r"^evt_[A-Za-z0-9_]{1,250}$")
DIGITS = re.compile(r"[0-9]{1,30}")  # ASCII only: str.isdigit() accepts "²", which int() refuses


def whole_number(raw: str | None) -> int | None:
    """``raw`` as a non-negative integer if it is 1-30 ASCII digits, else None."""
    return int(raw) if raw is not None and DIGITS.fullmatch(raw) else None


def workspace_id_of(request: web.Request) -> str:
    workspace_id = request.match_info["workspace_id"]
    if not WORKSPACE_ID.fullmatch(workspace_id):
        raise InvalidInput("invalid_workspace_id", "workspace ids are 1-128 of A-Z a-z 0-9 _ . : -")
    return workspace_id


def event_id_of(request: web.Request) -> str:
    event_id = request.match_info["event_id"]
    if not EVENT_ID.fullmatch(event_id):
        raise InvalidInput("invalid_event_id", "event ids look like evt_ followed by letters, digits or _")
    return event_id


DIGITS = re.compile(r"^[0-9]{1,19}$")


def query_int(request: web.Request, name: str, *, default: int, minimum: int, maximum: int, code: str) -> int:
    """A whole-number query parameter within bounds (ASCII digits only: ``str.isdigit`` also
    accepts ``²``, which ``int`` refuses), else a 400 with ``code``."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not DIGITS.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise InvalidInput(code, f"`{name}` must be a whole number from {minimum} to {maximum}")
    return int(raw)
