"""The support desk's history of a workspace, pure: page cursors, and the rows of the audit log,
inbox, plan-change ledger and AI-credit ledger shaped as timeline items with a one-line summary.

A cursor is the position (time, kind, id) of the last item of a page, opaque to callers and
checked strictly when it comes back: it must match ``CURSOR_PATTERN`` (published in the OpenAPI
document), and whatever matches it is a valid position. The shell (``worker.storage.timeline``) pages with it
as a keyset, newest first: an item added while someone pages never moves what they have not seen.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from handlers.codec import to_jsonable

TRANSITION, EVENT, PLAN_CHANGE, CREDIT = "transition", "event", "plan_change", "credit"
KINDS = (CREDIT, EVENT, PLAN_CHANGE, TRANSITION)  # the order of kinds at one instant (ascending)
NUMERIC_KINDS = frozenset({TRANSITION, CREDIT})
# A cursor: microseconds since 1970 (UTC), the kind's letter and the item's id, dot-separated.
LETTER_OF = {TRANSITION: "t", EVENT: "e", PLAN_CHANGE: "p", CREDIT: "c"}
KIND_OF = {letter: kind for kind, letter in LETTER_OF.items()}
CURSOR_PATTERN = r"^[0-9]{1,16}\.(t\.[1-9][0-9]{0,17}|c\.[1-9][0-9]{0,17}|e\.evt_[A-Za-z0-9_]{1,250}|p\.pc_[A-Za-z0-9]{1,64})$"
CURSOR = re.compile(CURSOR_PATTERN)
EVENT_CURSOR_PATTERN = r"^[0-9]{1,16}\.e\.evt_[A-Za-z0-9_]{1,250}$"  # the event browser's: events only
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Inbox statuses as the desk sees them: ``stale`` is a processed event that changed nothing.
EVENT_STATUSES = ("received", "processed", "stale", "ignored", "unmatched", "failed", "dead")
MAX_SUMMARY_FIELDS = 4


@dataclass(frozen=True)
class Cursor:
    """The position of a page's last item: items strictly after it (older) come next."""

    at: datetime
    kind: str
    key: str


def encode_cursor(cursor: Cursor) -> str:
    micros = (cursor.at - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{LETTER_OF[cursor.kind]}.{cursor.key}"


def decode_cursor(text: str, kinds: frozenset[str] | tuple[str, ...] = KINDS) -> Cursor | None:
    """The cursor ``encode_cursor`` made, or None for anything else (its pattern is ``CURSOR``:
    whatever matches it is a position, however a caller came by it)."""
    match = CURSOR.fullmatch(text)
    if match is None:
        return None
    micros, letter, key = text.split(".", 2)
    kind = KIND_OF[letter]
    if kind not in kinds:
        return None
    return Cursor(EPOCH + timedelta(microseconds=int(micros)), kind, key)


def event_status(status: str, outcome: str | None) -> str:
    """The inbox status shown to the desk: a processed event whose outcome was stale is ``stale``."""
    return "stale" if status == "processed" and outcome == "stale" else status


def _ts(value: Any) -> Any:
    """A time read from a jsonb document (ISO text in the session's zone) as the API writes times."""
    if isinstance(value, str):
        try:
            return to_jsonable(datetime.fromisoformat(value))
        except ValueError:
            return value
    return to_jsonable(value)


def _changed(changes: Mapping[str, Any]) -> str:
    names = sorted(changes)
    shown = ", ".join(names[:MAX_SUMMARY_FIELDS])
    more = len(names) - MAX_SUMMARY_FIELDS
    return shown + (f" and {more} more" if more > 0 else "") if names else "nothing"


def transition_item(at: datetime, d: Mapping[str, Any]) -> dict[str, Any]:
    cause: dict[str, Any] = {"kind": d["cause_kind"], "id": d["cause_id"]}
    if d["cause_kind"] == "event":
        cause.update(event_type=d.get("event_type"), api_version=d.get("api_version"))
        by = f"event {d.get('event_type') or '?'} ({d['cause_id']})"
    else:
        by = f"{d['cause_kind']} {d['cause_id']}"
    changes = {k: list(v) if isinstance(v, list | tuple) else v for k, v in (d["changes"] or {}).items()}
    return {
        "at": to_jsonable(at),
        "kind": TRANSITION,
        "id": str(d["version"]),
        "summary": f"v{d['version']} by {by}: {_changed(changes)}",
        "version": d["version"],
        "cause": cause,
        "changes": changes,
        "recorded_at": _ts(d.get("recorded_at")),
    }


def event_item(at: datetime, d: Mapping[str, Any]) -> dict[str, Any]:
    status = event_status(d["status"], d.get("outcome"))
    error = d.get("last_error")
    return {
        "at": to_jsonable(at),
        "kind": EVENT,
        "id": d["event_id"],
        "summary": f"{d['type']}: {status}" + (f" ({error})" if error else ""),
        "event_id": d["event_id"],
        "type": d["type"],
        "status": status,
        "outcome": d.get("outcome"),
        "last_error": error,
        "api_version": d.get("api_version"),
        "attempts": d.get("attempts"),
        "received_at": _ts(d.get("received_at")),
    }


def _plan(plan: str, interval: str | None, seats: int) -> str:
    return f"{plan}{f' ({interval})' if interval else ''}, {seats} seats"


def plan_change_item(at: datetime, d: Mapping[str, Any]) -> dict[str, Any]:
    frm = _plan(d["from_plan"], d["from_interval"], d["from_seats"])
    to = _plan(d["to_plan"], d["to_interval"], d["to_seats"])
    history = [{"status": h.get("status"), "at": _ts(h.get("at"))} for h in d.get("history") or []]
    return {
        "at": to_jsonable(at),
        "kind": PLAN_CHANGE,
        "id": d["change_id"],
        "summary": f"plan change {frm} → {to}: {d['status']}",
        "change_id": d["change_id"],
        "status": d["status"],
        "change_kind": d["change_kind"],
        "history": history,
        "idempotency_key": d["idempotency_key"],
        "confirmed_event_id": d.get("confirmed_event_id"),
        "confirmed_at": _ts(d.get("confirmed_at")),
        "request_id": d.get("request_id"),
        "last_error": d.get("last_error"),
        "superseded_by": d.get("superseded_by"),
        "effective_at": _ts(d.get("effective_at")),
        **{
            k: d[k]
            for k in ("from_plan", "from_interval", "from_seats", "to_plan", "to_interval", "to_seats")
        },
    }


def credit_item(at: datetime, d: Mapping[str, Any]) -> dict[str, Any]:
    delta = d["amount"]
    return {
        "at": to_jsonable(at),
        "kind": CREDIT,
        "id": str(d["id"]),
        "summary": f"{delta:+d} AI credits ({d['entry_kind']}), balance {d['balance_after']}",
        "entry_id": d["id"],
        "entry_kind": d["entry_kind"],
        "delta": delta,
        "balance_after": d["balance_after"],
        "source_key": d["source_key"],
        "reason": d.get("reason"),
        "reference": d.get("reference"),
        "cause": {"kind": d["cause_kind"], "id": d["cause_id"]},
    }


ITEM_OF = {
    TRANSITION: transition_item,
    EVENT: event_item,
    PLAN_CHANGE: plan_change_item,
    CREDIT: credit_item,
}


def timeline_item(kind: str, at: datetime, data: Mapping[str, Any]) -> dict[str, Any]:
    return ITEM_OF[kind](at, data)
