"""The operator's view of real processes: the worker warns about an evicting Redis (a private server), and a running service never logs secrets."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import aiohttp

from tests.support import stripe_factory as sf
from tests.support.helpers import (
    SECRET_A,
    TOKEN,
    sign,
    wait_for,
)
from tests.support.paths import ROOT
from tests.support.services import free_port
from worker.config import Settings
from worker.ops.health import warn_unless_noeviction
from worker.services import Services


async def test_worker_warns_when_redis_may_evict(settings: Settings, embedded_redis_factory, capsys):
    redis = embedded_redis_factory()
    services = await Services.start(dataclasses.replace(settings, redis_url=redis.url()))
    try:
        await services.redis.config_set("maxmemory-policy", "allkeys-lru")
        assert await warn_unless_noeviction(services) == "allkeys-lru"
        assert "redis_eviction_policy" in capsys.readouterr().out
        await services.redis.config_set("maxmemory-policy", "noeviction")
        assert await warn_unless_noeviction(services) == "noeviction"
        assert "redis_eviction_policy" not in capsys.readouterr().out
    finally:
        await services.close()


def _spawn_service(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli.main", "run", "--roles", "receiver,api,worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def test_a_running_service_never_logs_secrets(settings: Settings):
    receiver_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "BW_REDIS_PREFIX": settings.redis_prefix,
        "STRIPE_WEBHOOK_SECRETS": ",".join(settings.webhook_secrets),
        "BW_INTERNAL_TOKEN": TOKEN,
        "STRIPE_API_KEY": "sk_test_secretkey123456",
        "BW_RECEIVER_HOST": "127.0.0.1",
        "BW_RECEIVER_PORT": str(receiver_port),
        "BW_INTERNAL_PORT": str(api_port),
        "BW_WORKER_METRICS_PORT": "0",
        "BW_LOG_LEVEL": "debug",
        "PYTHONPATH": str(ROOT),
    }
    proc = _spawn_service(env)
    try:
        async with aiohttp.ClientSession() as http:

            async def up() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{api_port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(up, timeout=30, what="service up")
            event = sf.history_lifecycle(
                workspace_id="ws_secrets_1", customer="cus_secrets1", sub_id="sub_secret1"
            )[0]
            body = json.dumps(event)
            for header in (sign(body, SECRET_A), "t=1,v1=" + SECRET_A, SECRET_A):
                async with http.post(
                    f"http://127.0.0.1:{receiver_port}/webhooks/stripe",
                    data=body,
                    headers={"Stripe-Signature": header},
                ):
                    pass
            for token in (TOKEN, "wrong " + TOKEN):
                async with http.get(
                    f"http://127.0.0.1:{api_port}/v1/workspaces/ws_secrets_1",
                    headers={"Authorization": f"Bearer {token}"},
                ):
                    pass
            async with http.post(
                f"http://127.0.0.1:{api_port}/v1/workspaces/ws_secrets_1/reconcile",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ):
                pass
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert "webhook_received" in output  # the run did log
    for secret in (SECRET_A, "whsec_", TOKEN, "sk_test_secretkey123456"):
        assert secret not in output, secret
