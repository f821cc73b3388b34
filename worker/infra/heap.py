"""Garbage-collector settings of a service process, applied once it has started.

Start-up leaves tens of thousands of long-lived objects (modules, the Stripe SDK, pools, the
catalog). CPython's full collections walked them all again and again (20-25 ms pauses of every
request in the receiver), and gen0 ran every 700 allocations, walking everything in flight
(17.5 µs of GC per webhook). Frozen and with gen0 at 10,000, GC per webhook is ~1 µs
(bench/README.md). Objects made after start-up are collected as usual.
"""

from __future__ import annotations

import gc

# gen0 collects after this many net allocations (CPython's default: 700).
GC_GEN0_THRESHOLD = 10_000
_settled = False


def settle_heap() -> None:
    """Once per process, after start-up: collect, freeze what is left, collect gen0 less often."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
