"""The webhook receiver's answers: the signature matrix and payload checks, on real services.

Each rejected request must store nothing in the inbox and enqueue nothing in Redis.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import time

import pytest
import stripe
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.support.helpers import SECRET_A, SECRET_B, RunningService, customer_event, sign, signed_headers
from tests.support.inbox import queued_events
from tests.support.service_fixtures import service_fixture
from worker.infra import metrics
from worker.infra.heap import GC_GEN0_THRESHOLD
from worker.receiver.app import verify_signature

service = service_fixture(worker=False, max_body_bytes=64 * 1024)


async def _stored(svc: RunningService, event_id: str) -> bool:
    return bool(
        await svc.services.pool.fetchval("SELECT count(*) FROM webhook_events WHERE event_id = $1", event_id)
    )


async def _queued(svc: RunningService, event_id: str) -> bool:
    return event_id in await queued_events(svc.services, [event_id])


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


def _webhooks_counted(event_type: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "billing_webhooks_total", {"type": event_type, "outcome": outcome}
    )
    return value or 0.0


async def test_the_200_answer_and_the_counters(service: RunningService):
    """Byte for byte the JSON ``web.json_response`` wrote, and one count per delivery."""
    event = customer_event("cus_ack")
    body = json.dumps(event)
    headers = signed_headers(body)
    before = {o: _webhooks_counted("customer.created", o) for o in ("accepted", "duplicate")}
    for duplicate in (False, True):
        async with service.http.post(
            f"{service.receiver_url}/webhooks/stripe", data=body, headers=headers
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
            expected = {"received": True, "duplicate": duplicate, "event_id": event["id"]}
            assert await resp.read() == json.dumps(expected).encode()
    after = {o: _webhooks_counted("customer.created", o) for o in ("accepted", "duplicate")}
    assert after == {"accepted": before["accepted"] + 1, "duplicate": before["duplicate"] + 1}


async def test_healthz(service: RunningService):
    async with service.http.get(f"{service.receiver_url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


async def test_a_started_receiver_has_set_its_start_up_heap_aside(service: RunningService):
    """Start-up objects are frozen out of the collector and gen0 runs less often: the full
    collections that walked them paused every request for ~20 ms (bench/README.md)."""
    assert gc.get_freeze_count() > 10_000
    assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD


# ------------------------------------------------------------------ the verifier against the SDK

_SDK_CODES = (
    ("Unable to extract timestamp", "signature_malformed"),
    ("No signatures found with expected scheme", "signature_malformed"),
    ("No signatures found matching", "signature_mismatch"),
    ("Timestamp outside the tolerance zone", "timestamp_outside_tolerance"),
)


def sdk_verdict(payload: str, header: str, secrets: tuple[str, ...], tolerance: int) -> str | None:
    """The receiver's verdict as it was with Stripe's SDK: ``verify_header`` per secret, the
    SDK's messages mapped to codes, the most telling code of all secrets."""
    codes = []
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
            return None
        except stripe.SignatureVerificationError as exc:
            message = str(exc.user_message or exc)
            codes.append(next((c for p, c in _SDK_CODES if message.startswith(p)), "signature_invalid"))
    for code in ("timestamp_outside_tolerance", "signature_malformed", "signature_mismatch"):
        if code in codes:
            return code
    return codes[0] if codes else "signature_mismatch"


_POOL = (SECRET_A, SECRET_B, "whsec_third_0000", "whsec_foreign_ffff")
_NOW = int(time.time())


def _v1(payload: str, secret: str, timestamp: int | str) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()


@st.composite
def _headers(draw: st.DrawFn, payload: str) -> str:
    """Valid, stale, future, tampered, multi-v1, multi-secret, reordered and malformed headers."""
    # Clear of the tolerance edge, so the two verdicts never straddle a second boundary.
    timestamp = draw(
        st.one_of(
            st.integers(_NOW - 250, _NOW + 600),
            st.integers(_NOW - 10**6, _NOW - 350),
            st.sampled_from([0, -1, 10**12]),
        )
    )
    signed = payload if draw(st.booleans()) else payload + draw(st.sampled_from(["x", " ", "\n"]))
    items = [f"t={timestamp}"]
    for secret in draw(st.lists(st.sampled_from(_POOL), min_size=1, max_size=3)):
        items.append(f"v1={_v1(signed, secret, timestamp)}")
    if draw(st.booleans()):  # junk items next to the real ones, some of them fatal to the parse
        items += draw(
            st.lists(
                st.sampled_from(
                    [
                        "v0=abc",
                        "v1=",
                        "v1=00",
                        "t=1",
                        "x=1",
                        "",
                        "v1=a=b",
                        " t=1",
                        "t= 12",
                        "t",
                        "v1",
                        "t=abc",
                    ]
                ),
                min_size=1,
                max_size=2,
            )
        )
    return ",".join(draw(st.permutations(items)))


@given(data=st.data())
@hypothesis_settings(max_examples=600, deadline=None)
def test_the_verifier_agrees_with_the_stripe_sdk(data: st.DataObject):
    # Any text a UTF-8 body can carry (no lone surrogates: the receiver refuses those bodies).
    payload = data.draw(st.text(st.characters(blacklist_categories=("Cs",)), max_size=200))
    header = data.draw(
        st.one_of(_headers(payload), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80))
    )
    secrets = tuple(data.draw(st.lists(st.sampled_from(_POOL[:3]), min_size=1, max_size=3)))
    expected = sdk_verdict(payload, header, secrets, 300)
    assert verify_signature(payload.encode(), header, secrets, 300) == expected, (header, secrets)
    assert verify_signature(payload, header, secrets, 300) == expected


@pytest.mark.parametrize(
    ("header", "secrets", "code"),
    [
        (lambda p: f"t={_NOW},v1={_v1(p, SECRET_A, _NOW)}", (SECRET_A,), None),
        (lambda p: f"t={_NOW},v1={_v1(p, SECRET_B, _NOW)}", (SECRET_A, SECRET_B), None),
        (lambda p: f"t={_NOW},v1=00,v1={_v1(p, SECRET_A, _NOW)}", (SECRET_A,), None),
        (
            lambda p: f"t={_NOW - 301},v1={_v1(p, SECRET_A, _NOW - 301)}",
            (SECRET_A, SECRET_B),
            "timestamp_outside_tolerance",
        ),
        (lambda p: f"t={_NOW},v1={_v1(p + 'x', SECRET_A, _NOW)}", (SECRET_A,), "signature_mismatch"),
        (lambda p: f"t={_NOW},v0={_v1(p, SECRET_A, _NOW)}", (SECRET_A,), "signature_malformed"),
        (lambda p: f"v1={_v1(p, SECRET_A, _NOW)}", (SECRET_A,), "signature_malformed"),
        (lambda p: "t=1,v1", (SECRET_A,), "signature_malformed"),
        (lambda p: f"t={_NOW},v1={_v1(p, SECRET_A, _NOW)}", (" ",), "signature_invalid"),
        (lambda p: f"t={_NOW},v1={_v1(p, SECRET_A, _NOW)}", (), "signature_mismatch"),
    ],
    ids=[
        "valid",
        "rotated",
        "second-v1",
        "stale",
        "tampered",
        "v0-only",
        "no-t",
        "bare-v1",
        "blank-secret",
        "no-secret",
    ],
)
def test_verifier_cases_match_the_sdk(header, secrets: tuple[str, ...], code: str | None):
    payload = '{"id": "evt_1", "object": "event", "note": "é ✓"}'
    built = header(payload)
    assert verify_signature(payload.encode(), built, secrets, 300) == code
    assert sdk_verdict(payload, built, secrets, 300) == code


def test_a_non_ascii_signature_matches_nothing_instead_of_failing():
    """The SDK's compare_digest raised TypeError on it (a 500); now it is one more mismatch."""
    payload = "{}"
    assert verify_signature(payload, f"t={_NOW},v1=é", (SECRET_A,), 300) == "signature_mismatch"
    good = _v1(payload, SECRET_A, _NOW)
    assert verify_signature(payload, f"t={_NOW},v1=é,v1={good}", (SECRET_A,), 300) is None
