"""Make the committed event set of ``bench.throughput`` (deterministic: fixed seed, run once).

    python -m bench.make_throughput_events [--workspaces 380] [--out bench/data/throughput-events.jsonl.gz]

Each workspace lives one of four Stripe histories rendered by ``tests.support.stripe_factory``
(the payloads the service's tests feed it, ~3 kB each, API versions basil and endive):

* ``lifecycle``: created (trialing) → trial_will_end → active → plan change → cancel requested
  → deleted; final state Free, ``canceled``;
* ``lifecycle_cut``: the same life stopped after 1 to 5 events (trialing, active, upgraded, or
  cancelling at period end);
* ``dunning_paid``: created (active) → invoice created → finalized → 1 or 2 payment failures
  (subscription ``past_due``) → invoice.paid + invoice.payment_succeeded → ``active`` again;
* ``dunning_open``: the same, stopped after the first failure: ``past_due`` with one open invoice.

The post order interleaves the workspaces at random (each workspace's events spread over the
run); about 10 % of the events are posted before the earlier event of their workspace they follow
(out of order), and about 5 % are posted a second time later (the same event id: Stripe's
retries). One line per post: the exact body Stripe would send. ``bench.throughput`` derives the
expected final state of each workspace from these bodies (its last subscription event in
``created`` order, its invoices' last status) and signs them at run time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support import stripe_factory as sf

SEED = 20261203
OUT = Path(__file__).resolve().parent / "data" / "throughput-events.jsonl.gz"
KINDS = (("lifecycle", 0.2), ("lifecycle_cut", 0.3), ("dunning_paid", 0.3), ("dunning_open", 0.2))
OUT_OF_ORDER = 0.10
DUPLICATES = 0.05


def _history(rng: random.Random, n: int) -> tuple[str, list[dict[str, Any]]]:
    kind = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
    version = sf.ENDIVE if rng.random() < 0.3 else sf.BASIL
    ws, cus, sub = f"ws_tp{n:04d}", f"cus_TP{n:06d}x", f"sub_TP{n:06d}x"
    start = sf.T0 + rng.randrange(0, 200) * sf.DAY + rng.randrange(0, sf.DAY)
    plan = rng.choice(("price_plus_monthly", "price_business_monthly"))
    seats = rng.randint(1, 40)
    common = dict(api_version=version, workspace_id=ws, customer=cus, sub_id=sub, start=start)
    if kind.startswith("lifecycle"):
        events = sf.history_lifecycle(
            **common,  # type: ignore[arg-type]
            price="price_plus_monthly",
            upgrade_price="price_business_monthly",
            seats=seats,
            upgraded_seats=seats + rng.randint(1, 10),
        )
        if kind == "lifecycle_cut":
            events = events[: rng.randint(1, 5)]
        return kind, events
    events = sf.history_payment_failure(
        **common,  # type: ignore[arg-type]
        invoice_id=f"in_TP{n:06d}x",
        price=plan,
        seats=seats,
        failures=rng.randint(1, 2),
        outcome="paid" if kind == "dunning_paid" else None,
    )
    return kind, events


def _swap_some(rng: random.Random, events: list[str]) -> tuple[list[str], int]:
    """Swap neighbours so that ~OUT_OF_ORDER of the events are posted before their predecessor."""
    out, swapped, i = list(events), 0, 1
    while i < len(out):
        if rng.random() < OUT_OF_ORDER * 2.2:  # pairs skip a neighbour and tied instants do not count
            out[i - 1], out[i] = out[i], out[i - 1]
            swapped += json.loads(out[i])["created"] != json.loads(out[i - 1])["created"]
            i += 2
        else:
            i += 1
    return out, swapped


def make(workspaces: int, seed: int = SEED) -> tuple[list[str], dict[str, Any]]:
    rng = random.Random(seed)
    per_ws: dict[str, list[str]] = {}
    kinds: Counter[str] = Counter()
    swapped = 0
    for n in range(workspaces):
        kind, events = _history(rng, n)
        kinds[kind] += 1
        bodies, s = _swap_some(rng, [json.dumps(e, separators=(",", ":")) for e in events])
        swapped += s
        per_ws[f"ws_tp{n:04d}"] = bodies
    slots = [ws for ws, bodies in per_ws.items() for _ in bodies]
    rng.shuffle(slots)
    cursor = dict.fromkeys(per_ws, 0)
    posts: list[str] = []
    for ws in slots:
        posts.append(per_ws[ws][cursor[ws]])
        cursor[ws] += 1
    distinct = len(posts)
    for i in sorted(rng.sample(range(distinct), round(distinct * DUPLICATES)), reverse=True):
        posts.insert(rng.randint(i + 1, len(posts)), posts[i])  # a retry, posted later
    types = Counter(json.loads(p)["type"] for p in posts)
    summary = {
        "seed": seed,
        "workspaces": workspaces,
        "histories": dict(kinds),
        "distinct_events": distinct,
        "posts": len(posts),
        "duplicates": len(posts) - distinct,
        "out_of_order": swapped,
        "mean_body_bytes": round(sum(map(len, posts)) / len(posts)),
        "types": dict(sorted(types.items())),
    }
    return posts, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=380)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    posts, summary = make(args.workspaces, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same events give the same bytes, so re-running it changes nothing in git.
    with args.out.open("wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as fh:
        fh.write("".join(p + "\n" for p in posts).encode())
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
