"""The Stripe gateway against the local Stripe-playing server: SDK wiring, version pin, idempotency."""

from __future__ import annotations

import stripe
from stripe._api_version import _ApiVersion

from tests.support.stripe_server import StripeServer, unflatten
from worker.infra.stripe_gateway import API_VERSION, StripeGateway, is_transient, to_dict


def test_pinned_version_is_the_sdks_own():
    assert API_VERSION == _ApiVersion.CURRENT


def test_unflatten_reads_stripe_form_encoding():
    pairs = [
        ("items[0][id]", "si_1"),
        ("items[0][quantity]", "3"),
        ("billing_cycle_anchor[type]", "unchanged"),
    ]
    assert unflatten(pairs) == {
        "items": [{"id": "si_1", "quantity": "3"}],
        "billing_cycle_anchor": {"type": "unchanged"},
    }


async def test_sdk_calls_reach_the_local_server_with_key_version_and_idempotency():
    async with StripeServer() as server:
        server.put(
            {"id": "sub_1", "object": "subscription", "items": {"data": [{"id": "si_1", "quantity": 1}]}}
        )
        gateway = StripeGateway(server.api_key, api_base=server.url, max_network_retries=0)
        try:
            sub = await gateway.client.v1.subscriptions.retrieve_async("sub_1")
            assert to_dict(sub)["id"] == "sub_1"
            params = {"items": [{"id": "si_1", "quantity": 4}]}
            first = await gateway.client.v1.subscriptions.update_async(
                "sub_1", params, {"idempotency_key": "k1"}
            )
            again = await gateway.client.v1.subscriptions.update_async(
                "sub_1", params, {"idempotency_key": "k1"}
            )
            assert to_dict(first) == to_dict(again)
            posts = server.calls("POST")
            assert [c.idempotency_key for c in posts] == ["k1", "k1"]
            assert {c.stripe_version for c in server.requests} == {API_VERSION}
            try:
                await gateway.client.v1.subscriptions.update_async(
                    "sub_1", {"items": [{"id": "si_1", "quantity": 9}]}, {"idempotency_key": "k1"}
                )
            except stripe.IdempotencyError as exc:
                assert not is_transient(exc)
            else:
                raise AssertionError("reusing a key with other parameters must fail")
            server.fail_next(status=503)
            try:
                await gateway.client.v1.subscriptions.retrieve_async("sub_1")
            except stripe.StripeError as exc:
                assert is_transient(exc)
            else:
                raise AssertionError("the injected 503 must surface")
        finally:
            await gateway.close()
