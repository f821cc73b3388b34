"""``tests.support.stripe_server.StripeServer`` in its own process, for benchmarks that call Stripe.

    python -m bench.stripe_proc --seed objects.json --summary summary.json [--delay 0.3]

Seeds ``objects`` from a JSON list, prints ``{"url", "api_key"}`` as one line once it listens, and on
SIGTERM writes a summary of every request it answered (counts by method, updates applied and
replayed, idempotency keys seen more than once) to ``--summary``, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.stripe_server import StripeServer


def summary(server: StripeServer, cpu_s: float) -> dict[str, Any]:
    updates = server.calls("POST", r"/v1/subscriptions/[^/]+")
    keys = collections.Counter(r.idempotency_key for r in updates)
    return {
        "requests": len(server.requests),
        "by_method": dict(collections.Counter(r.method for r in server.requests)),
        "subscription_updates": len(updates),
        "updates_applied": sum(1 for r in updates if r.applied and not r.replayed),
        "updates_replayed": sum(1 for r in updates if r.replayed),
        "updates_rejected": sum(1 for r in updates if not r.applied and not r.replayed),
        "distinct_idempotency_keys": len(keys),
        "keys_sent_more_than_once": sum(1 for n in keys.values() if n > 1),
        "updates_without_key": keys.get(None, 0),
        "cpu_s": round(cpu_s, 2),
    }


async def serve(objects: list[dict[str, Any]], delay: float = 0.0) -> dict[str, Any]:
    server = StripeServer()
    server.delay_seconds = delay  # added to every answer: Stripe's own latency
    for obj in objects:
        server.objects[obj["id"]] = obj
    await server.start()
    print(json.dumps({"url": server.url, "api_key": server.api_key}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return summary(server, time.process_time())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=Path, required=True)
    parser.add_argument("--summary", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to every answer")
    args = parser.parse_args(argv)
    result = asyncio.run(serve(json.loads(args.seed.read_text()), args.delay))
    args.summary.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
