"""schemathesis (its CLI, default checks) against the live internal API with the token: every
operation of /openapi.json gets bounded, seeded examples, valid and invalid; no 5xx, no answer
outside its documented schema, no schema-valid request refused, no 405 without ``Allow``.

Plus the 5xx it found, pinned each by its own request: bytes that are not UTF-8 in
``Authorization``, and digits that ``str.isdigit`` accepts but ``int`` does not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import sys
from pathlib import Path

from tests.support.helpers import TOKEN, running_service
from tests.support.stripe_server import StripeServer
from worker.config import Settings

ST = Path(sys.executable).with_name("st")
MAX_EXAMPLES = 20
DEADLINE = 240  # seconds for the whole run (about a minute on a quiet machine)


async def test_schemathesis_default_checks_pass_against_the_live_api(
    settings: Settings, stripe_server: StripeServer, tmp_path: Path
):
    configured = dataclasses.replace(
        settings,
        stripe_api_key=stripe_server.api_key,
        stripe_api_base=stripe_server.url,
        # A queue of its own: the backfills and reconciles it starts must not reach the next
        # test's worker (the session's keys under this prefix are removed at the end).
        redis_prefix=f"{settings.redis_prefix}-schemathesis",
    )
    async with running_service(configured, worker=False) as svc:
        proc = await asyncio.create_subprocess_exec(
            str(ST),
            "run",
            f"{svc.api_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "17",
            "--generation-deterministic",
            "--generation-with-security-parameters",
            "false",
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--no-color",
            cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), DEADLINE)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-12000:]
    generated = re.search(r"(\d+) generated", text)
    assert generated is not None and int(generated.group(1)) >= 20 * MAX_EXAMPLES, text[-4000:]


async def test_a_token_that_is_not_utf8_is_refused_not_a_crash(settings: Settings):
    async with running_service(settings, worker=False) as svc:
        host, port = svc.api_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                b"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
                b"Connection: close\r\n\r\n"
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b'"unauthorized"' in answer


async def test_unicode_digits_and_huge_run_ids_are_a_400(settings: Settings, stripe_server: StripeServer):
    configured = dataclasses.replace(
        settings, stripe_api_key=stripe_server.api_key, stripe_api_base=stripe_server.url
    )
    async with running_service(configured, worker=False) as svc:
        for path, code in (
            ("/v1/backfill/%C2%B2", "invalid_run_id"),
            ("/v1/dead-letters?limit=%C2%B2", "invalid_limit"),
            ("/v1/events?limit=%C2%B2", "invalid_limit"),
            ("/v1/workspaces/ws_1/ai-credits/ledger?limit=%C2%B2", "invalid_query"),
        ):
            status, body = await svc.api("GET", path)
            assert (status, body["error"]["code"]) == (400, code), path
        status, body = await svc.api("POST", "/v1/backfill", json={"run_id": 2**64})
        assert (status, body["error"]["code"]) == (400, "invalid_run_id")


async def test_405_names_the_allowed_methods(settings: Settings):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        running_service(settings, worker=False) as svc,
        svc.http.patch(f"{svc.api_url}/v1/workspaces/ws_1/plan-changes", headers=headers) as resp,
    ):
        assert resp.status == 405
        assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "DELETE"}
        assert (await resp.json())["error"]["code"] == "method_not_allowed"
