"""worker.errors: every domain error has one status at the edge, and no status leaks into the core."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from worker import errors
from worker.errors import BillingError, Conflict, InvalidInput, NotFound, Unavailable, UpstreamFailed
from worker.http.errors import STATUS_OF, error_for, status_of
from worker.ops.backfill import BackfillBusy

ROOT = Path(__file__).resolve().parent.parent
# The HTTP edge: the only places that may speak in status numbers.
EDGE = ("worker/http/", "worker/api/", "worker/receiver/")


def _hierarchy() -> set[type[BillingError]]:
    found, todo = set(), [BillingError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


def test_the_table_lists_every_class_of_the_hierarchy_module() -> None:
    declared = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, BillingError) and obj is not BillingError
    }
    assert set(STATUS_OF) == declared


@pytest.mark.parametrize("cls", sorted(_hierarchy(), key=lambda c: c.__qualname__), ids=lambda c: c.__name__)
def test_every_subclass_answers_with_an_error_status(cls: type[BillingError]) -> None:
    exc = cls.__new__(cls)
    status = status_of(exc)
    assert status is not None and 400 <= status <= 599


def test_the_mapping_table() -> None:
    assert {cls.__name__: status for cls, status in STATUS_OF.items()} == {
        "InvalidInput": 400,
        "NotFound": 404,
        "Conflict": 409,
        "UpstreamFailed": 502,
        "Unavailable": 503,
    }
    assert status_of(BackfillBusy(7)) == 409


def test_a_bare_base_error_is_not_answered_but_propagates() -> None:
    assert error_for(BillingError("oops", "a bug")) is None


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (InvalidInput("unknown_field", "unknown field(s): x", fields=["x"]), 400),
        (NotFound("workspace_not_found", "no billing state"), 404),
        (Conflict("plan_change_blocked", "cannot", decision={"kind": "blocked"}), 409),
        (UpstreamFailed("stripe_rejected", "refused", plan_change={"change_id": "pc_1"}), 502),
        (Unavailable("stripe_not_configured", "no key"), 503),
    ],
)
def test_the_body_carries_code_message_and_details(exc: BillingError, status: int) -> None:
    response = error_for(exc)
    assert response is not None and response.status == status
    assert response.text is not None
    assert json.loads(response.text) == {"error": {"code": exc.code, "message": exc.message, **exc.details}}


def _status_raises(source: str, label: str) -> list[str]:
    """``raise X(4xx, …)`` / ``raise X(status=…)`` in ``source``: an HTTP status inside the core."""
    found = []
    for node in ast.walk(ast.parse(source)):
        call = node.exc if isinstance(node, ast.Raise) else None
        if not isinstance(call, ast.Call):
            continue
        first = call.args[0] if call.args else None
        numeric = isinstance(first, ast.Constant) and type(first.value) is int and 400 <= first.value <= 599
        if numeric or any(k.arg == "status" for k in call.keywords):
            found.append(f"{label}:{node.lineno}")
    return found


def test_no_http_status_is_raised_outside_the_edge() -> None:
    offenders = []
    for package in ("worker", "handlers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            label = str(path.relative_to(ROOT))
            if not label.startswith(EDGE):
                offenders += _status_raises(path.read_text(encoding="utf-8"), label)
    assert offenders == []


def test_the_scan_finds_a_status_in_a_raise() -> None:
    source = 'def f():\n    raise Oops(409, "busy", "x")\n    raise Oops("a", "b", status=503)\n'
    assert _status_raises(source, "probe.py") == ["probe.py:2", "probe.py:3"]
    assert _status_raises('raise Oops("busy", "x", retries=400)\n', "ok.py") == []
