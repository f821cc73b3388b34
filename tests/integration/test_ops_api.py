"""The ports as operators and attackers see them: route surface, OpenAPI coverage, /metrics,
/readyz, hostile input answered with specific 4xx and nothing stored (real processes:
tests/system/test_ops_processes.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import aiohttp

from tests.support import stripe_factory as sf
from tests.support.helpers import (
    SECRET_A,
    TOKEN,
    RunningService,
    customer_event,
    running_service,
    sign,
    signed_headers,
)
from worker.api.app import create_internal_app
from worker.api.openapi import build_openapi, registered
from worker.config import Settings
from worker.infra import metrics
from worker.receiver.app import create_receiver_app
from worker.services import Services


async def raw_http(url: str, request: bytes, timeout: float = 10) -> tuple[int, Any]:
    """Send bytes as they are (no client-side path normalisation) and parse the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await asyncio.wait_for(reader.readexactly(length), timeout)
    finally:
        writer.close()
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


# ------------------------------------------------------------------ route surface and OpenAPI


def _app_routes(app: Any) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, methods in registered(app).items() for m in methods}


async def test_public_port_has_only_the_webhook_and_the_probes(settings: Settings):
    services = Services(settings, None, None, None)  # type: ignore[arg-type]  # routes only
    assert _app_routes(create_receiver_app(services)) == {
        ("POST", "/webhooks/stripe"),
        ("POST", "/webhooks/stripe/thin"),  # the same handler, for a thin-event destination
        ("GET", "/livez"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    }
    async with running_service(settings, worker=False) as svc:
        for path in ("/metrics", "/openapi.json", "/v1/workspaces/ws_1", "/v1/dead-letters"):
            async with svc.http.get(f"{svc.receiver_url}{path}") as resp:
                assert (resp.status, (await resp.json())["error"]["code"]) == (404, "not_found"), path
        for path in ("/livez", "/healthz"):
            async with svc.http.get(f"{svc.receiver_url}{path}") as resp:
                assert (resp.status, await resp.json()) == (200, {"status": "ok"}), path
        async with svc.http.get(f"{svc.receiver_url}/readyz") as resp:  # the verdict, no details
            assert (resp.status, await resp.json()) == (200, {"ready": True})


async def test_every_internal_route_is_documented_in_openapi(settings: Settings):
    """Iterates the router, so routes other issues add must be documented too."""
    app = create_internal_app(Services(settings, None, None, None))  # type: ignore[arg-type]
    doc = build_openapi(app)
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert _app_routes(app) == documented
    for item in doc["paths"].values():
        for op in item.values():
            assert op["summary"] and op["responses"]
    async with running_service(settings, worker=False) as svc:
        status, served = await svc.api("GET", "/openapi.json")
        assert status == 200 and served["paths"].keys() == doc["paths"].keys()
        status, body = await svc.api("GET", "/openapi.json", token=None)
        assert (status, body["error"]["code"]) == (401, "unauthorized")


# ------------------------------------------------------------------ metrics and readiness


def _sample(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.split()[-1])
    raise AssertionError(f"{name}{labels} not in /metrics")


async def test_metrics_are_scraped_without_a_token_and_reflect_the_database(settings: Settings):
    async with running_service(settings) as svc:
        event = sf.history_lifecycle(
            workspace_id="ws_metrics_1", customer="cus_metrics1", sub_id="sub_metrics1"
        )[0]
        bad = dict(event, id="evt_metrics_bad_sig")
        assert (await svc.post_event(event))[0] == 200
        await svc.post_raw(json.dumps(bad), {"Stripe-Signature": sign("other", SECRET_A)})
        await svc.wait_processed([event["id"]])
        status, text = await svc.api("GET", "/metrics", token=None)
        assert status == 200
        for metric in metrics.REGISTRY.collect():
            assert f"# HELP {metric.name}" in text, metric.name
        dead = await svc.services.pool.fetchval("SELECT count(*) FROM webhook_events WHERE status = 'dead'")
        assert _sample(text, "billing_dead_letters") == dead
        assert _sample(text, "billing_pending_plan_changes", '{status="pending"}') >= 0
        assert _sample(text, "billing_webhook_signature_failures_total", '{code="signature_mismatch"}') >= 1
        assert _sample(text, "billing_inbox_to_job_latency_seconds_count") >= 1
        assert _sample(text, "billing_oldest_unprocessed_event_age_seconds") >= 0


async def test_readyz_reports_postgres_redis_and_migrations(settings: Settings):
    async with running_service(settings, worker=False) as svc:
        status, body = await svc.api("GET", "/readyz", token=None)
        assert (status, body["ready"], body["roles"]) == (200, True, ["api", "receiver"])
        assert body["checks"] == {"postgres": {"ok": True}, "redis": {"ok": True}, "migrations": {"ok": True}}
        status, body = await svc.api("GET", "/livez", token=None)
        assert (status, body) == (200, {"status": "ok"})
        row = await svc.services.pool.fetchrow("DELETE FROM schema_migrations WHERE version = 5 RETURNING *")
        try:
            status, body = await svc.api("GET", "/readyz", token=None)
            assert (status, body["checks"]["migrations"]) == (
                503,
                {"ok": False, "pending": ["0005_recovery"]},
            )
        finally:
            await svc.services.pool.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)", *row.values()
            )


# ------------------------------------------------------------------ hostile input


def _signed(body: str | bytes) -> dict[str, str]:
    text = body if isinstance(body, str) else body.decode("latin-1")
    return signed_headers(text, SECRET_A)


def _envelope(**overrides: Any) -> str:
    base = {
        "id": "evt_hostile_1",
        "object": "event",
        "type": "invoice.paid",
        "created": 1,
        "data": {"object": {}},
    }
    return json.dumps({**base, **overrides})


def _hook(
    body: str | bytes, status: int, code: str
) -> tuple[str, str, str, dict[str, str], str | bytes, int, str]:
    """A correctly signed webhook delivery whose body is hostile."""
    return ("public", "POST", "/webhooks/stripe", _signed(body), body, status, code)


def _deep(depth: int) -> str:
    """Valid JSON nested past Python's recursion limit."""
    return "[" * depth + "]" * depth


HUGE_HEADER = "X-Junk: " + "a" * 20_000
SQL = "ws_1'%20OR%20'1'='1"
STALE_BODY = _envelope()

# (port, method, path, headers, body, status, code)
HOSTILE: list[tuple[str, str, str, dict[str, str] | None, str | bytes | None, int, str]] = [
    _hook("x" * 5000, 413, "body_too_large"),
    ("public", "POST", "/webhooks/stripe", {}, _envelope(), 400, "signature_missing"),
    (
        "public",
        "POST",
        "/webhooks/stripe",
        {"Stripe-Signature": "t=1,v1=00"},
        _envelope(),
        400,
        "signature_mismatch",
    ),
    (
        "public",
        "POST",
        "/webhooks/stripe",
        {"Stripe-Signature": "garbage"},
        _envelope(),
        400,
        "signature_malformed",
    ),
    (
        "public",
        "POST",
        "/webhooks/stripe",
        {"Stripe-Signature": sign(STALE_BODY, SECRET_A, timestamp=1)},
        STALE_BODY,
        400,
        "timestamp_outside_tolerance",
    ),
    _hook(b"\xff\xfe\xfd", 400, "invalid_encoding"),
    _hook(_deep(2000), 400, "invalid_json"),
    _hook("[1, 2]", 400, "not_a_stripe_event"),
    _hook(_envelope(id=123), 400, "not_a_stripe_event"),
    _hook(_envelope(created="yesterday"), 400, "not_a_stripe_event"),
    _hook('{"id": "\\ud800\u0000', 400, "invalid_json"),
    _hook(_envelope(id="../../etc/passwd"), 400, "not_a_stripe_event"),
    ("public", "GET", "/webhooks/stripe", None, None, 405, "method_not_allowed"),
    ("public", "GET", "/metrics", None, None, 404, "not_found"),
    ("internal", "GET", "/v1/workspaces/ws_1", {"Authorization": ""}, None, 401, "unauthorized"),
    (
        "internal",
        "GET",
        "/v1/workspaces/ws_1",
        {"Authorization": "Bearer wrong-token"},
        None,
        401,
        "unauthorized",
    ),
    (
        "internal",
        "GET",
        "/v1/workspaces/ws_1",
        {"Authorization": f"Basic {TOKEN}"},
        None,
        401,
        "unauthorized",
    ),
    ("internal", "GET", f"/v1/workspaces/{SQL}", {}, None, 400, "invalid_workspace_id"),
    ("internal", "GET", "/v1/workspaces/ws_%E2%98%83%00", {}, None, 400, "invalid_workspace_id"),
    ("internal", "GET", "/v1/workspaces/..%2F..%2Fetc%2Fpasswd", {}, None, 400, "invalid_workspace_id"),
    ("internal", "GET", "/v1/events/evt_1;DROP%20TABLE%20webhook_events", {}, None, 400, "invalid_event_id"),
    ("internal", "POST", "/v1/events/..%2Fevt_1/retry", {}, None, 400, "invalid_event_id"),
    ("internal", "POST", f"/v1/workspaces/{SQL}/reconcile", {}, None, 400, "invalid_workspace_id"),
    ("internal", "POST", "/v1/dead-letters/retry", {}, "not json", 400, "invalid_json"),
    ("internal", "POST", "/v1/dead-letters/retry", {}, _deep(30_000), 400, "invalid_json"),
    ("internal", "POST", "/v1/dead-letters/retry", {}, "[]", 400, "invalid_body"),
    ("internal", "POST", "/v1/dead-letters/retry", {}, '{"type": 5}', 400, "invalid_event_type"),
    (
        "internal",
        "POST",
        "/v1/dead-letters/retry",
        {},
        '{"type": "x\'; DELETE FROM audit_log; --"}',
        400,
        "invalid_event_type",
    ),
    ("internal", "GET", "/v1/dead-letters?limit=-1", {}, None, 400, "invalid_limit"),
    ("internal", "GET", "/v1/dead-letters?limit=99999999999999999999", {}, None, 400, "invalid_limit"),
    # Digits of other scripts pass str.isdigit() but not int(): each was a 500.
    ("internal", "GET", "/v1/dead-letters?limit=%C2%B2", {}, None, 400, "invalid_limit"),
    ("internal", "GET", "/v1/workspaces/ws_1/ai-credits/ledger?limit=%D9%A3", {}, None, 400, "invalid_query"),
    ("internal", "GET", "/v1/backfill/%C2%B2", {}, None, 400, "invalid_run_id"),
    ("internal", "POST", "/v1/backfill", {}, '{"since": true}', 400, "invalid_since"),
    ("internal", "POST", "/v1/backfill", {}, '{"since": "2026-11-01T00:00:00"}', 400, "invalid_since"),
    (
        "internal",
        "POST",
        "/v1/backfill",
        {},
        '{"run_id": "1; DROP TABLE backfill_runs"}',
        400,
        "invalid_run_id",
    ),
    ("internal", "GET", "/v1/backfill/1%20OR%201=1", {}, None, 400, "invalid_run_id"),
    ("internal", "POST", "/v1/backfill", {}, '{"run_id": 9223372036854775808}', 400, "invalid_run_id"),
    ("internal", "POST", "/v1/backfill", {}, '{"run_id": 1e400}', 400, "invalid_run_id"),
    ("internal", "POST", "/v1/dead-letters/retry", {}, "x" * 70_000, 413, "body_too_large"),
    ("internal", "DELETE", "/v1/dead-letters", {}, None, 405, "method_not_allowed"),
]
RAW: list[tuple[str, bytes, int, str]] = [
    ("public", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"),
    (
        "public",
        f"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\n{HUGE_HEADER}\r\nContent-Length: 0\r\n\r\n".encode(),
        431,
        "headers_too_large",
    ),
    (
        "internal",
        f"GET /v1/workspaces/ws_1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{HUGE_HEADER}\r\n\r\n".encode(),
        431,
        "headers_too_large",
    ),
    ("internal", b"GET /v1/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 401, "unauthorized"),
    ("public", b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    ("public", b"NOT-HTTP\r\n\r\n", 400, "bad_request"),
    # Non-ASCII bytes in the token: not UTF-8, and UTF-8 but not ASCII; refused, never a crash.
    (
        "internal",
        b"GET /v1/workspaces/ws_1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
        401,
        "unauthorized",
    ),
    (
        "internal",
        b"GET /v1/workspaces/ws_1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\xc3\xa9\r\n\r\n",
        401,
        "unauthorized",
    ),
]


async def _stored(svc: RunningService) -> tuple[int, ...]:
    pool = svc.services.pool
    counts = [
        await pool.fetchval(f"SELECT count(*) FROM {table}")
        for table in ("webhook_events", "workspaces", "audit_log", "backfill_runs")
    ]
    return (*counts, await svc.services.queue.depth())


async def test_hostile_requests_get_specific_4xx_and_store_nothing(settings: Settings):
    assert len(HOSTILE) + len(RAW) >= 25
    hostile = dataclasses.replace(settings, max_body_bytes=4096, stripe_api_key="sk_test_unused")
    async with running_service(hostile, worker=False) as svc:
        before = await _stored(svc)
        for port, method, path, headers, body, status, code in HOSTILE:
            base = svc.receiver_url if port == "public" else svc.api_url
            sent = dict(headers if headers is not None else {})
            if port == "internal" and "Authorization" not in sent:
                sent["Authorization"] = f"Bearer {TOKEN}"
            url = aiohttp.client.URL(f"{base}{path}", encoded=True)
            async with svc.http.request(method, url, headers=sent, data=body) as resp:
                answer = await resp.json(content_type=None)
            assert (resp.status, answer["error"]["code"]) == (status, code), (method, path)
            assert "Traceback" not in json.dumps(answer)
        for port, request, status, code in RAW:
            base = svc.receiver_url if port == "public" else svc.api_url
            got, answer = await raw_http(base, request)
            assert (got, answer["error"]["code"]) == (status, code), request[:60]
        assert await _stored(svc) == before


async def test_a_stalled_request_times_out_with_408(settings: Settings):
    async with running_service(dataclasses.replace(settings, request_timeout_seconds=1), worker=False) as svc:
        started = time.monotonic()
        request = b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        status, body = await raw_http(svc.receiver_url, request)
        assert (status, body["error"]["code"]) == (408, "request_timeout")
        assert time.monotonic() - started < 5


async def test_only_stalled_requests_time_out_and_the_next_ones_are_served(settings: Settings):
    """The deadline sweeper cancels the overdue request alone, on both ports, and leaves nothing
    behind: requests served during and after a timeout are answered normally."""
    stalled = b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    stalled_api = (
        b"POST /v1/backfill HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Length: 100\r\n\r\n{"
    )
    async with running_service(dataclasses.replace(settings, request_timeout_seconds=1), worker=False) as svc:
        slow = asyncio.gather(raw_http(svc.receiver_url, stalled), raw_http(svc.api_url, stalled_api))
        during = await asyncio.gather(*(svc.post_event(customer_event(f"cus_dl{i}")) for i in range(20)))
        assert [status for status, _ in during] == [200] * 20
        for status, body in await slow:
            assert (status, body["error"]["code"]) == (408, "request_timeout")
        after = await asyncio.gather(*(svc.post_event(customer_event(f"cus_dl{i}")) for i in range(5)))
        assert [status for status, _ in after] == [200] * 5
        status, _ = await svc.api("GET", "/v1/dead-letters")
        assert status == 200


# ------------------------------------------------------------------ plan-change gauges


async def test_plan_change_gauges_read_the_table_once_it_exists(settings: Settings):
    """A temporary table shadows any real one, so this holds before and after issue 3's migration."""
    from datetime import UTC, datetime, timedelta

    import asyncpg

    from worker.ops.gauges import _plan_changes

    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "CREATE TEMP TABLE plan_changes (status text NOT NULL, fire_at timestamptz NOT NULL)"
        )
        assert await _plan_changes(conn, now) == {"overdue": 0}
        await conn.executemany(
            "INSERT INTO plan_changes VALUES ($1, $2)",
            [
                ("pending", now + timedelta(days=3)),
                ("pending", now - timedelta(hours=2)),  # overdue
                ("firing", now - timedelta(minutes=5)),  # due, not yet overdue
                ("applied", now - timedelta(days=9)),  # finished: not counted
            ],
        )
        assert await _plan_changes(conn, now) == {"pending": 2, "firing": 1, "overdue": 1}
    finally:
        await conn.close()
