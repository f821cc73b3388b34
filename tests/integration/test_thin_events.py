"""Thin events end to end: signed ``v2.core.event`` notifications posted over HTTP, stored by the
receiver without a Stripe call, their related objects fetched by the worker from the local server
that plays Stripe (which checks the SDK's ``Stripe-Context`` and ``Stripe-Request-Trigger``), and
reduced as observations at fetch time, mixed with snapshot events."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from handlers.thin import THIN_NEEDS_KEY
from tests.support import stripe_factory as sf
from tests.support.clock import MovableClock
from tests.support.helpers import history_ids, running_service, signed_headers, wait_for
from tests.support.stripe_server import StripeServer
from tests.support.thin_events import deliver_thin, related_fetches, thin_of
from worker.config import Settings
from worker.infra import metrics
from worker.infra.logging import configure

ACCOUNT = "acct_1ThinTestAccount"


def _labelled(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["id"].split("_", 3)[-1]: e for e in events}


async def _row(svc: Any, event_id: str) -> Any:
    return await svc.services.pool.fetchrow(
        "SELECT type, api_version, status, outcome, attempts, last_error, workspace_id FROM webhook_events "
        "WHERE event_id = $1",
        event_id,
    )


async def test_invoice_lifecycle_over_thin_events(stripe_settings: Settings, stripe_server: StripeServer):
    ids = history_ids("thinv")
    invoice_id = f"in_{ids['sub_id']}"
    by_label = _labelled(sf.history_payment_failure(**ids, invoice_id=invoice_id, failures=1))
    ws = ids["workspace_id"]
    clock = MovableClock(sf.at(sf.T0))
    async with running_service(stripe_settings, clock=clock) as svc:
        await svc.deliver(by_label["sub_created"], clock=clock)  # a snapshot event among thin ones
        sent = []
        for label in ("invoice_created", "invoice_finalized"):
            sent.append(await deliver_thin(svc, stripe_server, by_label[label], clock=clock, context=ACCOUNT))
        state = await svc.workspace(ws)
        assert [i["status"] for i in state["open_invoices"]] == ["open"] and state["blocked"] is False

        sent.append(
            await deliver_thin(svc, stripe_server, by_label["payment_failed_1"], clock=clock, context=ACCOUNT)
        )
        state = await svc.workspace(ws)
        assert state["blocked"] is True and state["block_reasons"] == ["open_invoice"]
        assert state["block"]["invoice_ids"] == [invoice_id]
        failed_at = await svc.services.pool.fetchval(
            "SELECT first_failed_at FROM invoices WHERE invoice_id = $1", invoice_id
        )
        assert failed_at == sf.at(by_label["payment_failed_1"]["created"])  # when it failed, not when fetched

        for label in ("invoice_paid", "invoice_payment_succeeded"):
            sent.append(await deliver_thin(svc, stripe_server, by_label[label], clock=clock, context=ACCOUNT))
        state = await svc.workspace(ws)
        assert state["blocked"] is False and state["open_invoices"] == []

        for thin in sent:
            row = await _row(svc, thin["id"])
            assert (row["type"], row["api_version"], row["status"], row["workspace_id"]) == (
                thin["type"],
                None,
                "processed",
                ws,
            )
            (fetch,) = related_fetches(stripe_server, thin)
            assert (fetch.method, fetch.path, fetch.stripe_context) == (
                "GET",
                f"/v1/invoices/{invoice_id}",
                ACCOUNT,
            )
        assert stripe_server.trigger_errors == []
        assert [t["type"] for t in sent] == [
            "v1.invoice.created",
            "v1.invoice.finalized",
            "v1.invoice.payment_failed",
            "v1.invoice.paid",
            "v1.invoice.payment_succeeded",
        ]


async def test_subscription_lifecycle_over_thin_events_mixed_with_late_snapshots(
    stripe_settings: Settings, stripe_server: StripeServer
):
    ids = history_ids("thsub")
    history = sf.history_lifecycle(**ids)
    ws = ids["workspace_id"]
    clock = MovableClock(sf.at(sf.T0))
    async with running_service(stripe_settings, clock=clock) as svc:
        sent = []
        for event in history:
            sent.append(await deliver_thin(svc, stripe_server, event, clock=clock))  # no context
            sub = event["data"]["object"]
            state = await svc.workspace(ws)
            if sub["status"] != "canceled":
                assert (state["status"], state["subscription_id"]) == (sub["status"], ids["sub_id"])
                assert state["seats"] == sum(
                    i["quantity"] for i in sub["items"]["data"] if "storage" not in i["price"]["id"]
                )
        final = await svc.workspace(ws)
        assert final["plan"] == "free"
        assert {t["type"] for t in sent} == {f"v1.{e['type']}" for e in history}
        for thin in sent:
            (fetch,) = related_fetches(stripe_server, thin)
            assert fetch.stripe_context is None and fetch.path == f"/v1/subscriptions/{ids['sub_id']}"
        assert stripe_server.trigger_errors == []

        # The snapshot events of that history arrive late: every one is older than a fetch.
        await svc.deliver(*history)
        for event in history:
            assert (await _row(svc, event["id"]))["outcome"] == "stale"
        assert await svc.workspace(ws) == final

        # A thin notification delivered late fetches today's object: nothing goes back.
        late = thin_of(history[2], suffix="late")
        stripe_server.expect_thin(late)
        status, _ = await svc.post_event(late)
        assert status == 200
        await svc.wait_processed([late["id"]])
        assert (await _row(svc, late["id"]))["outcome"] == "stale"
        assert await svc.workspace(ws) == final


async def test_the_receiver_stores_thin_events_without_calling_stripe(
    stripe_settings: Settings, stripe_server: StripeServer
):
    ids = history_ids("threc")
    event = sf.history_lifecycle(**ids)[0]
    thin = thin_of(event, context=ACCOUNT)
    other = thin_of(sf.history_lifecycle(**history_ids("threc2"))[0])
    # A queue of its own: the jobs this receiver queues are left for no later test's worker.
    own_queue = dataclasses.replace(
        stripe_settings, redis_prefix=f"{stripe_settings.redis_prefix}-{ids['sub_id']}"
    )
    async with running_service(own_queue, worker=False) as svc:
        assert await svc.post_event(thin) == (
            200,
            {"received": True, "duplicate": False, "event_id": thin["id"]},
        )
        assert await svc.post_event(thin) == (
            200,
            {"received": True, "duplicate": True, "event_id": thin["id"]},
        )
        # The second URL, for a destination of its own: the payload decides, not the path.
        body = json.dumps(other)
        async with svc.http.post(
            f"{svc.receiver_url}/webhooks/stripe/thin", data=body, headers=signed_headers(body)
        ) as resp:
            assert resp.status == 200 and (await resp.json())["event_id"] == other["id"]
        snapshot = json.dumps(event)
        async with svc.http.post(
            f"{svc.receiver_url}/webhooks/stripe/thin", data=snapshot, headers=signed_headers(snapshot)
        ) as resp:
            assert resp.status == 200
        # A thin notification that is not one, or not signed: refused, nothing stored.
        bad = {**thin, "id": "evt_bad_thin_1", "created": 1_791_277_200}
        status, answer = await svc.post_event(bad)
        assert (status, answer["error"]["code"]) == (400, "not_a_stripe_event")
        assert "`created`" in answer["error"]["message"]
        unsigned = json.dumps({**thin, "id": "evt_unsigned_thin"})
        status, answer = await svc.post_raw(unsigned, {"Stripe-Signature": "t=1,v1=00"})
        assert status == 400
        rows = await svc.services.pool.fetch(
            "SELECT event_id, type, status, created FROM webhook_events WHERE event_id = ANY($1::text[])",
            [thin["id"], other["id"], event["id"], "evt_bad_thin_1", "evt_unsigned_thin"],
        )
        stored = {r["event_id"]: (r["type"], r["status"]) for r in rows}
        assert stored == {
            thin["id"]: ("v1.customer.subscription.created", "received"),
            other["id"]: ("v1.customer.subscription.created", "received"),
            event["id"]: ("customer.subscription.created", "received"),
        }
        created = {r["event_id"]: r["created"] for r in rows}[thin["id"]]
        assert created == datetime.fromisoformat(thin["created"]).astimezone(UTC)
        assert stripe_server.requests == []  # no Stripe call in the request path


def _failing_case(ids: dict[str, str]) -> dict[str, Any]:
    return sf.history_payment_failure(**ids, invoice_id=f"in_{ids['sub_id']}", failures=1)[2]  # finalized


async def _post_thin(
    svc: Any, server: StripeServer, event: dict[str, Any], *, put: bool = True
) -> dict[str, Any]:
    if put:
        server.put(event["data"]["object"])
    thin = thin_of(event, context=ACCOUNT)
    server.expect_thin(thin)
    status, body = await svc.post_event(thin)
    assert status == 200, body
    return thin


@pytest.mark.parametrize(
    ("case", "status"),
    [("deleted", 404), ("wrong_key", 401), ("other_account", 403)],
)
async def test_a_fetch_stripe_refuses_ends_dead_with_the_reason(
    stripe_settings: Settings, stripe_server: StripeServer, case: str, status: int
):
    ids = history_ids(f"thf{status}")
    event = _failing_case(ids)
    settings = stripe_settings
    if case == "wrong_key":
        settings = dataclasses.replace(stripe_settings, stripe_api_key="sk_test_not_the_right_key")
    async with running_service(settings) as svc:
        thin = await _post_thin(svc, stripe_server, event, put=case != "deleted")
        if case == "other_account":
            stripe_server.accounts.discard(ACCOUNT)  # the key cannot reach that account
        await svc.wait_processed([thin["id"]])
        row = await _row(svc, thin["id"])
        assert (row["status"], row["outcome"]) == ("dead", "fetch_refused")
        assert f"Stripe answered {status}" in row["last_error"]
        assert row["workspace_id"] is None and await svc.workspace(ids["workspace_id"]) is None
        assert len(related_fetches(stripe_server, thin)) == 1  # not retried: it cannot succeed
        assert stripe_server.trigger_errors == []
        _, answer = await svc.api("GET", f"/v1/events/{thin['id']}")
        assert answer["status"] == "dead"  # kept where operators look, with why


async def test_a_5xx_is_retried_with_backoff_until_stripe_answers(
    stripe_settings: Settings, stripe_server: StripeServer
):
    ids = history_ids("th500")
    event = _failing_case(ids)
    path = f"/v1/invoices/in_{ids['sub_id']}"
    stripe_server.fail_next(3, status=500, path=path)  # the SDK's own three tries, then the job's retry
    transient = _transient_fetch_errors()
    async with running_service(stripe_settings) as svc:
        thin = await _post_thin(svc, stripe_server, event)
        await svc.wait_processed([thin["id"]])
        row = await _row(svc, thin["id"])
        assert (row["status"], row["outcome"]) == ("processed", "applied")
        assert row["attempts"] == 2 and _transient_fetch_errors() == transient + 1  # one failed try
        assert [r.path for r in related_fetches(stripe_server, thin)] == [path] * 4
        assert [i["invoice_id"] for i in (await svc.workspace(ids["workspace_id"]))["open_invoices"]] == [
            f"in_{ids['sub_id']}"
        ]


async def test_a_fetch_that_times_out_is_retried(stripe_settings: Settings, stripe_server: StripeServer):
    ids = history_ids("thto")
    event = _failing_case(ids)
    path = f"/v1/invoices/in_{ids['sub_id']}"
    stripe_server.hold_next(1, seconds=5, path=path)  # longer than the fetch's budget (half of 2 s)
    transient = _transient_fetch_errors()
    async with running_service(dataclasses.replace(stripe_settings, job_timeout_seconds=2)) as svc:
        thin = await _post_thin(svc, stripe_server, event)
        await svc.wait_processed([thin["id"]])
        row = await _row(svc, thin["id"])
        assert (row["status"], row["outcome"], row["attempts"]) == ("processed", "applied", 2)
        assert _transient_fetch_errors() == transient + 1
        assert len(related_fetches(stripe_server, thin)) == 2


def _transient_fetch_errors() -> float:
    """Related-object fetches that failed and were left to the job's retry, so far."""
    labels = {"operation": "fetch_related_object", "kind": "transient"}
    return metrics.REGISTRY.get_sample_value("billing_stripe_api_errors_total", labels) or 0.0


@pytest.fixture
def log_lines() -> Iterator[Any]:
    buffer = io.StringIO()
    configure("info", stream=buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    structlog.reset_defaults()
    logging.basicConfig(force=True, level=logging.WARNING)


async def test_without_an_api_key_thin_events_are_kept_and_dead_lettered(settings: Settings, log_lines: Any):
    assert settings.stripe_api_key is None
    ids = history_ids("thkey")
    history = sf.history_payment_failure(**ids, invoice_id=f"in_{ids['sub_id']}", failures=1)
    acted_on = [thin_of(e) for e in history[1:4]]
    not_acted_on = thin_of(history[0], suffix="v2")
    not_acted_on.update(type="v2.core.account.updated", related_object=None)
    async with running_service(settings) as svc:
        for thin in [not_acted_on, *acted_on]:
            assert (await svc.post_event(thin))[0] == 200
        await svc.wait_processed([t["id"] for t in [not_acted_on, *acted_on]])
        for thin in acted_on:
            row = await _row(svc, thin["id"])
            assert (row["status"], row["outcome"], row["last_error"]) == (
                "dead",
                "no_api_key",
                THIN_NEEDS_KEY,
            )
        assert (await _row(svc, not_acted_on["id"]))["status"] == "ignored"
        stored = await svc.services.pool.fetchval(
            "SELECT count(*) FROM webhook_events WHERE event_id = ANY($1::text[]) AND payload <> ''",
            [t["id"] for t in acted_on],
        )
        assert stored == len(acted_on)  # kept, for a retry once a key is configured

        async def warnings() -> list[dict[str, Any]]:
            return [line for line in log_lines() if line["msg"] == "thin_event_without_api_key"]

        (warning,) = await wait_for(warnings, what="the receiver's warning")
        assert (warning["event_id"], warning["level"], warning["reason"]) == (
            acted_on[0]["id"],
            "warning",
            THIN_NEEDS_KEY,
        )
