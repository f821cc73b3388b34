"""One JSON log line per webhook and per job from a running service, with nothing secret in them."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
import structlog

from tests.support import stripe_factory as sf
from tests.support.helpers import SECRET_A, TOKEN, running_service, wait_for
from worker.config import Settings
from worker.infra.logging import configure


@pytest.fixture
def log_lines():
    buffer = io.StringIO()
    configure("info", stream=buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    structlog.reset_defaults()
    logging.basicConfig(force=True, level=logging.WARNING)


async def test_one_json_line_per_webhook_and_per_job(settings: Settings, log_lines):
    u = uuid.uuid4().hex[:10]
    event = sf.history_lifecycle(workspace_id=f"ws_log_{u}", customer=f"cus_log{u}", sub_id=f"sub_log{u}")[0]
    async with running_service(settings) as svc:
        await svc.deliver(event)

        # The job logs after its commit (and after the notification): wait for the line itself.
        async def job_lines() -> int:
            return sum(
                1
                for line in log_lines()
                if line.get("event_id") == event["id"] and line["msg"] == "job_finished"
            )

        await wait_for(job_lines, what="the job_finished line")
        await svc.post_raw("{}", {"Stripe-Signature": "t=1,v1=deadbeef"})
    lines = [line for line in log_lines() if line.get("event_id") == event["id"]]
    received = [line for line in lines if line["msg"] == "webhook_received"]
    finished = [line for line in lines if line["msg"] == "job_finished"]
    assert len(received) == 1 and len(finished) == 1, lines
    for line in (*received, *finished):
        assert {
            "ts",
            "level",
            "component",
            "msg",
            "event_id",
            "event_type",
            "outcome",
            "duration_ms",
        } <= line.keys()
    assert finished[0]["workspace_id"] == f"ws_log_{u}"
    assert (finished[0]["outcome"], finished[0]["attempt"]) == ("applied", 1)
    rejected = [line for line in log_lines() if line["msg"] == "webhook_rejected"]
    assert rejected and rejected[-1]["code"] == "signature_mismatch", rejected
    everything = json.dumps(log_lines())
    assert SECRET_A not in everything and TOKEN not in everything and "whsec_" not in everything
