"""The public webhook receiver: verify, store in the inbox, enqueue, and only then answer 2xx.

Only ``POST /webhooks/stripe`` (also at ``/webhooks/stripe/thin``: the payload's ``object`` tells
a thin notification from a snapshot event, whatever the URL) and the probes exist on this port
(``GET /livez``, its older name ``/healthz``, and ``GET /readyz`` with the verdict alone). A thin
notification is verified and stored exactly like an event; its related object is fetched later by
the worker, never here. Answers:
200 accepted/duplicate · 400 signature or payload errors (specific codes) · 413 too large ·
503 when Postgres or Redis cannot take the event, so Stripe retries and nothing acked is lost.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from handlers.normalize import PayloadError, validate_event_envelope
from handlers.thin import THIN_NEEDS_KEY, THIN_OBJECT, ThinNotification, needs_fetch, parse_thin
from worker.http.errors import error
from worker.http.hardening import guarded
from worker.http.probes import attach_health, livez_handler, public_readyz_handler
from worker.infra import json_codec, metrics, tracing
from worker.infra.heap import settle_heap
from worker.infra.logging import get_logger
from worker.ops.health import Health
from worker.receiver.inbox_batcher import InboxBatcher, InboxUnavailable
from worker.services import SERVICES, Services
from worker.storage import inbox
from worker.storage.db import is_transient

log = get_logger("receiver")
BATCHER = web.AppKey("inbox_batcher", InboxBatcher)

_SCHEME = "v1"


@functools.cache
def _signing_keys(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    """The HMAC keys of the usable secrets, encoded once (the SDK refuses a blank secret)."""
    return tuple(s.encode("utf-8") for s in secrets if s.strip(" \t\r\n\f\v"))


def _parse_signature_header(header: str) -> tuple[int, list[str]] | None:
    """``t=<ts>,v1=<hex>[,v1=…]`` → (timestamp, v1 signatures), parsed exactly as Stripe's SDK
    does (same splitting, ``int()`` rules and failures); None when it cannot be parsed."""
    items = [item.split("=", 2) for item in header.split(",")]
    try:
        timestamps = [item[1] for item in items if item[0] == "t"]  # a bare "t" fails, as in the SDK
        timestamp = int(timestamps[0])
        signatures = [item[1] for item in items if item[0] == _SCHEME]
    except (IndexError, ValueError):
        return None
    return timestamp, signatures


def verify_signature(
    payload: bytes | str, header: str, secrets: tuple[str, ...], tolerance: int, now: float | None = None
) -> str | None:
    """None when any active secret verifies the payload; else the most telling error code.

    Stripe's scheme (HMAC-SHA256 of ``f"{t}.{body}"``, hex, any ``v1`` may match, timestamps older
    than ``tolerance`` refused once the signature matched) with the answers the SDK's
    ``verify_header`` gives per secret, tried for every secret. Done here with one-shot
    ``hmac.digest`` over the raw bytes and the header parsed once: the SDK (Python-level HMAC,
    the body re-encoded, the header parsed per secret) was 5-7 % of the receiver's CPU.
    ``tests/integration/test_receiver_signatures.py`` checks it against the SDK.
    """
    if not secrets:
        return "signature_mismatch"
    keys = _signing_keys(secrets)
    if not header or not keys:
        return "signature_invalid"  # the SDK refuses an empty header and blank secrets
    parsed = _parse_signature_header(header)
    if parsed is None or not parsed[1]:
        return "signature_malformed"
    timestamp, signatures = parsed
    message = b"%d.%b" % (timestamp, payload.encode("utf-8") if isinstance(payload, str) else payload)
    for key in keys:
        expected = hmac.digest(key, message, "sha256").hex()
        for candidate in signatures:
            # compare_digest refuses non-ASCII str (the SDK raised TypeError: a 500); no match here.
            if candidate.isascii() and hmac.compare_digest(expected, candidate):
                if tolerance and timestamp < (time.time() if now is None else now) - tolerance:
                    return "timestamp_outside_tolerance"
                return None
    return "signature_mismatch"


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The raw bytes, or None past ``limit`` (checked on Content-Length and while reading)."""
    length = request.content_length
    if length is not None:
        if length > limit:
            return None
        try:  # the HTTP parser ends the payload at Content-Length: one read, no chunk loop
            return await request.content.readexactly(length)
        except asyncio.IncompleteReadError as exc:  # the client went away mid-body
            return exc.partial
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# The benchmarked hot path: only rejections and 503s call helpers, a 200 costs what it did.
async def stripe_webhook(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    started = time.perf_counter()
    fields: dict[str, object] = {}

    def reject(status: int, code: str, message: str) -> web.Response:
        metrics.WEBHOOKS.labels(type=str(fields.get("event_type", "unknown")), outcome="rejected").inc()
        log.info("webhook_rejected", status=status, code=code, duration_ms=_ms(started), **fields)
        return error(status, code, message)

    body = await _read_body(request, settings.max_body_bytes)
    if body is None:
        return reject(413, "body_too_large", f"body exceeds {settings.max_body_bytes} bytes")
    header = request.headers.get("Stripe-Signature")
    if not header:
        metrics.SIGNATURE_FAILURES.labels(code="signature_missing").inc()
        return reject(400, "signature_missing", "the Stripe-Signature header is missing")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return reject(400, "invalid_encoding", "the body is not UTF-8")
    code = verify_signature(body, header, settings.webhook_secrets, settings.webhook_tolerance_seconds)
    if code is not None:
        metrics.SIGNATURE_FAILURES.labels(code=code).inc()
        return reject(400, code, _signature_message(code, settings.webhook_tolerance_seconds))
    try:
        # orjson: ~5x faster than json on a 3.5 kB event; strict RFC 8259 (no NaN, no lone
        # surrogates) and depth-limited, so hostile nesting is a plain decode error.
        raw = json_codec.loads(body)
    except json_codec.JSONDecodeError:
        return reject(400, "invalid_json", "the body is not valid JSON")
    try:
        if type(raw) is dict and raw.get("object") == THIN_OBJECT:  # a thin notification
            notification = parse_thin(raw)
            row = thin_inbox_row(notification, text)
            request.app[THIN_WARNING].check(services, notification)
        else:
            validate_event_envelope(raw)
            row = inbox_row(raw, text)
    except PayloadError as exc:
        return reject(400, exc.code, str(exc))
    event_id, event_type = row.event_id, row.event_type
    fields.update(event_id=event_id, event_type=event_type)
    traceparent = None
    if tracing.enabled():  # the worker's span continues this request's: stored with the event
        tracing.set_attributes({"event_id": event_id, "event_type": event_type})
        traceparent = tracing.inject()

    try:
        if traceparent is not None:
            row = replace(row, traceparent=traceparent)
        stored = await request.app[BATCHER].submit(row)
    except InboxUnavailable as exc:
        return _unavailable(exc, event_type, fields, started)
    is_new, status = stored.is_new, stored.status
    outcome = "accepted" if is_new else "duplicate"
    _accepted_counter(event_type, outcome).inc()
    log.info("webhook_received", outcome=outcome, status=status, duration_ms=_ms(started), **fields)
    return acknowledgement(event_id, duplicate=not is_new)


_SIGNATURE_MESSAGES = {
    "signature_malformed": "the Stripe-Signature header cannot be parsed",
    "signature_mismatch": "no active webhook secret produces this signature",
}


def _signature_message(code: str, tolerance: int) -> str:
    """The message of a 400 for a signature that does not verify (``verify_signature``'s code)."""
    if code == "timestamp_outside_tolerance":
        return f"the signature is older than {tolerance} s"
    return _SIGNATURE_MESSAGES.get(code, "the signature is invalid")


def _unavailable(
    exc: InboxUnavailable, event_type: str, fields: dict[str, object], started: float
) -> web.Response:
    """A verified event the inbox or the queue could not take: logged, counted, 503 so Stripe retries."""
    if exc.reason == "database" and not is_transient(exc.error):
        log.error("webhook_store_failed", exc_info=exc.error, **fields)
    metrics.WEBHOOKS.labels(type=event_type, outcome="unavailable").inc()
    log.warning(
        "webhook_unavailable",
        reason=exc.reason,
        error=type(exc.error).__name__,
        duration_ms=_ms(started),
        **fields,
    )
    if exc.reason == "database":
        return error(503, "database_unavailable", "the event could not be stored; retry later")
    return error(503, "queue_unavailable", "the event is stored but could not be queued; retry later")


# The 200 answer, byte for byte what web.json_response gave, at half its cost (~2 us a webhook).
_ACK_HEAD = {
    False: b'{"received": true, "duplicate": false, "event_id": ',
    True: b'{"received": true, "duplicate": true, "event_id": ',
}


def acknowledgement(event_id: str, *, duplicate: bool) -> web.Response:
    """``{"received": true, "duplicate": …, "event_id": …}``, as ``json.dumps`` writes it."""
    body = _ACK_HEAD[duplicate] + json.dumps(event_id).encode() + b"}"
    return web.Response(body=body, content_type="application/json", charset="utf-8")


@functools.cache
def _accepted_counter(event_type: str, outcome: str) -> Any:
    """The webhook counter's child for a verified event's type (prometheus keeps each child
    forever anyway; ``labels()`` costs ~1.7 us a call)."""
    return metrics.WEBHOOKS.labels(type=event_type, outcome=outcome)


async def traced_webhook(request: web.Request) -> web.Response:
    """``stripe_webhook`` in a server span (the route's handler while tracing is on)."""
    attributes = {"http.request.method": "POST", "http.route": "/webhooks/stripe"}
    with tracing.start_span("POST /webhooks/stripe", kind="server", attributes=attributes):
        response = await stripe_webhook(request)
        tracing.set_attributes({"http.response.status_code": response.status})
        return response


def inbox_row(raw: dict, text: str, traceparent: str | None = None) -> inbox.InboxRow:
    """The inbox row of a verified, envelope-checked event."""
    api_version = raw.get("api_version")
    return inbox.InboxRow(
        event_id=raw["id"],
        event_type=raw["type"],
        api_version=api_version if isinstance(api_version, str) else None,
        created=datetime.fromtimestamp(raw["created"], UTC),
        livemode=bool(raw.get("livemode", False)),
        payload=text,
        traceparent=traceparent,
    )


def thin_inbox_row(notification: ThinNotification, text: str) -> inbox.InboxRow:
    """The inbox row of a verified thin notification: its own type (``v1.invoice.paid``), no API
    version (thin payloads are unversioned), the bytes Stripe signed. Nothing is fetched here."""
    return inbox.InboxRow(
        event_id=notification.event_id,
        event_type=notification.event_type,
        api_version=None,
        created=notification.created,
        livemode=notification.livemode,
        payload=text,
    )


class ThinWarning:
    """Logs ``thin_event_without_api_key`` once per receiver, at the first thin notification the
    worker will act on while STRIPE_API_KEY is unset (it is stored, then dead-lettered)."""

    def __init__(self) -> None:
        self.warned = False

    def check(self, services: Services, notification: ThinNotification) -> None:
        if self.warned or services.settings.stripe_api_key or not needs_fetch(notification):
            return
        self.warned = True
        log.warning(
            "thin_event_without_api_key",
            event_id=notification.event_id,
            event_type=notification.event_type,
            reason=THIN_NEEDS_KEY,
        )


THIN_WARNING = web.AppKey("thin_warning", ThinWarning)


async def store_in_inbox(services: Services, raw: dict, text: str) -> tuple[bool, str]:
    """Insert one verified, envelope-checked event into the inbox (backfill; the receiver batches)."""
    row = inbox_row(raw, text)
    return await inbox.insert_event(
        services.pool,
        event_id=row.event_id,
        event_type=row.event_type,
        api_version=row.api_version,
        created=row.created,
        livemode=row.livemode,
        payload=row.payload,
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


async def _settle_heap(app: web.Application) -> None:
    settle_heap()


async def _inbox_batcher(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    app[BATCHER] = batcher = InboxBatcher(services.pool, services.queue)
    batcher.start()
    yield
    await batcher.stop()  # already done by on_shutdown unless start-up failed half-way


async def _stop_batcher(app: web.Application) -> None:
    # on_shutdown: the sockets no longer accept, and aiohttp has not yet started waiting for the
    # running requests: what is pending is flushed (or answered 503), so none is left waiting.
    await app[BATCHER].stop()


def create_receiver_app(services: Services, health: Health | None = None) -> web.Application:
    """``health``: the process's (its roles decide /readyz); the receiver's own when None."""
    # aiohttp's own cap sits just above ours so oversized bodies reach our 413 JSON answer.
    app = web.Application(client_max_size=services.settings.max_body_bytes + 1, middlewares=[guarded])
    app[SERVICES] = services
    attach_health(app, services, health, "receiver")
    app[THIN_WARNING] = ThinWarning()
    app.on_startup.append(_settle_heap)
    app.cleanup_ctx.append(_inbox_batcher)
    app.on_shutdown.append(_stop_batcher)
    # Tracing off, the route is the plain handler: no span, no check per request.
    webhook = traced_webhook if tracing.enabled() else stripe_webhook
    app.router.add_post("/webhooks/stripe", webhook)
    # The same handler: the payload tells thin from snapshot; a second URL only reads better
    # when Stripe's thin-event destination is set up apart (docs/thin-events.md).
    app.router.add_post("/webhooks/stripe/thin", webhook)
    app.router.add_get("/livez", livez_handler)
    app.router.add_get("/healthz", livez_handler)  # the name before /livez; kept for old probes
    app.router.add_get("/readyz", public_readyz_handler)
    return app
