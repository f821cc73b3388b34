"""The webhook receiver's answers: the signature matrix and payload checks, on real services.

Each rejected request must store nothing in the inbox and enqueue nothing in Redis.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import SECRET_A, SECRET_B, RunningService, customer_event, running_service, sign
from worker.config import Settings


@pytest.fixture
async def service(settings: Settings):
    import dataclasses

    async with running_service(dataclasses.replace(settings, max_body_bytes=64 * 1024), worker=False) as svc:
        yield svc


async def _stored(svc: RunningService, event_id: str) -> bool:
    return bool(
        await svc.services.pool.fetchval("SELECT count(*) FROM webhook_events WHERE event_id = $1", event_id)
    )


async def _queued(svc: RunningService, event_id: str) -> bool:
    job_id = svc.services.queue.event_job_id(event_id)
    return await svc.services.redis.zscore(svc.services.settings.queue_name, job_id) is not None


@pytest.mark.parametrize("secret", [SECRET_A, SECRET_B], ids=["primary-secret", "rotated-secret"])
async def test_valid_signature_with_any_active_secret_is_stored_and_queued(
    service: RunningService, secret: str
):
    event = customer_event("cus_sig")
    status, body = await service.post_event(event, secret=secret)
    assert (status, body["duplicate"]) == (200, False)
    assert await _stored(service, event["id"])
    assert await _queued(service, event["id"])


async def test_duplicate_delivery_answers_200_and_says_duplicate(service: RunningService):
    event = customer_event("cus_sig")
    assert (await service.post_event(event))[0] == 200
    status, body = await service.post_event(event, secret=SECRET_B)
    assert status == 200
    assert body == {"received": True, "duplicate": True, "event_id": event["id"]}
    count = await service.services.pool.fetchval(
        "SELECT count(*) FROM webhook_events WHERE event_id = $1", event["id"]
    )
    assert count == 1


def _case(name: str, status: int, code: str, build):
    return pytest.param(build, status, code, id=name)


def _wrong_secret(event):
    body = json.dumps(event)
    return body, {"Stripe-Signature": sign(body, "whsec_not_ours_at_all")}


def _tampered(event):
    body = json.dumps(event)
    header = sign(body)
    return body.replace('"livemode": false', '"livemode": true'), {"Stripe-Signature": header}


def _missing_header(event):
    return json.dumps(event), {}


def _garbage_header(event):
    return json.dumps(event), {"Stripe-Signature": "this is not a signature"}


def _no_v1_scheme(event):
    body = json.dumps(event)
    return body, {"Stripe-Signature": sign(body).replace("v1=", "v0=")}


def _stale(event):
    body = json.dumps(event)
    return body, {"Stripe-Signature": sign(body, timestamp=int(time.time()) - 301)}


def _too_large(event):
    event["data"]["object"]["metadata"] = {"padding": "x" * (65 * 1024)}
    body = json.dumps(event)
    return body, {"Stripe-Signature": sign(body)}


def _invalid_json(event):
    body = json.dumps(event)[:-5]
    return body, {"Stripe-Signature": sign(body)}


def _not_an_event(event):
    body = json.dumps({"id": event["id"], "object": "customer", "hello": "world"})
    return body, {"Stripe-Signature": sign(body)}


def _not_utf8(event):
    return json.dumps(event).encode() + b"\xff\xfe", {"Stripe-Signature": "t=1,v1=00"}


@pytest.mark.parametrize(
    ("build", "status", "code"),
    [
        _case("wrong-secret", 400, "signature_mismatch", _wrong_secret),
        _case("tampered-body", 400, "signature_mismatch", _tampered),
        _case("missing-header", 400, "signature_missing", _missing_header),
        _case("garbage-header", 400, "signature_malformed", _garbage_header),
        _case("no-v1-signature", 400, "signature_malformed", _no_v1_scheme),
        _case("stale-timestamp", 400, "timestamp_outside_tolerance", _stale),
        _case("body-over-limit", 413, "body_too_large", _too_large),
        _case("invalid-json", 400, "invalid_json", _invalid_json),
        _case("json-not-a-stripe-event", 400, "not_a_stripe_event", _not_an_event),
        _case("body-not-utf8", 400, "invalid_encoding", _not_utf8),
    ],
)
async def test_rejected_requests_store_and_enqueue_nothing(
    service: RunningService, build, status: int, code: str
):
    event = customer_event("cus_sig")
    body, headers = build(event)
    got_status, got = await service.post_raw(body, headers)
    assert (got_status, got["error"]["code"]) == (status, code), got
    assert got["error"]["message"]
    assert not await _stored(service, event["id"])
    assert not await _queued(service, event["id"])


async def test_healthz(service: RunningService):
    async with service.http.get(f"{service.receiver_url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
