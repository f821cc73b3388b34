"""The shell's side of tolerant reading: each shape read around is logged with the event id and
path, and counted; a refused payload's error names the path first."""

from __future__ import annotations

import copy
import json

import pytest
from structlog.testing import capture_logs

from handlers.normalize import PayloadError
from tests.support.paths import STRIPE_FIXTURES
from worker.infra import metrics
from worker.processing.reading import malformed_error, read_payload


def paid_invoice() -> dict:
    return json.loads((STRIPE_FIXTURES / "2024-06-20" / "invoice.paid.json").read_text())


def test_each_unexpected_path_is_logged_and_counted() -> None:
    raw = copy.deepcopy(paid_invoice())
    raw["data"]["object"]["lines"] = {}
    raw["data"]["object"]["status"] = "settled"
    labels = {"type": "invoice.paid", "path": "data.object.status"}
    before = metrics.REGISTRY.get_sample_value("billing_stripe_shape_unexpected_total", labels) or 0.0
    with capture_logs() as logs:
        read_payload(raw, raw["id"], raw["type"])
    lines = [line for line in logs if line["event"] == "stripe_shape_unexpected"]
    assert sorted((line["event_id"], line["path"]) for line in lines) == [
        (raw["id"], "data.object.lines.data"),
        (raw["id"], "data.object.status"),
    ]
    assert metrics.REGISTRY.get_sample_value("billing_stripe_shape_unexpected_total", labels) == before + 1


def test_a_clean_payload_logs_nothing() -> None:
    raw = paid_invoice()
    with capture_logs() as logs:
        read_payload(raw, raw["id"], raw["type"])
    assert [line for line in logs if line["event"] == "stripe_shape_unexpected"] == []


def test_a_refused_payload_names_its_path_first() -> None:
    raw = copy.deepcopy(paid_invoice())
    raw["data"]["object"]["amount_paid"] = "12.00"
    with pytest.raises(PayloadError) as info:
        read_payload(raw, raw["id"], raw["type"])
    assert malformed_error(info.value).startswith("malformed payload at data.object.amount_paid: ")
