"""The load generator: its own process, posting signed webhooks with unique event ids.

Closed loop (``--concurrency C --requests N``): C connections, each sends its next request when
the previous answer arrived: the maximum rate. Replay (``--events-file F --concurrency C``): the
same closed loop over a fixed file of Stripe bodies (``bench.throughput``'s committed set), in
the file's order, every post timed (no warm-up); ``--sent-out`` writes each post's event id,
send instant (epoch seconds), answer time and status. Open loop (``--rate R --duration S``): requests are
sent at fixed instants whatever the answers do, and latency counts from the scheduled instant, so
a stalled server is not hidden (no coordinated omission). Bodies are built and signed before the
clock starts. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import sys
import time
from collections import Counter

import aiohttp

from bench.common import SECRET, percentiles
from bench.events import event_body, signature, thin_body


def _requests(
    prefix: str, count: int, secret: str, payload: str = "snapshot"
) -> list[tuple[bytes, dict[str, str]]]:
    now = int(time.time())
    make = thin_body if payload == "thin" else event_body
    out = []
    for i in range(count):
        body = make(f"{prefix}{i}")
        out.append(
            (
                body.encode(),
                {"Stripe-Signature": signature(body, secret, now), "Content-Type": "application/json"},
            )
        )
    return out


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], statuses: Counter[int]
) -> None:
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            statuses[resp.status] += 1
    except aiohttp.ClientError:
        statuses[0] += 1


def _result(latencies: list[float], statuses: Counter[int], **fields: object) -> dict:
    return {
        **fields,
        "requests": len(latencies),
        "latency_ms": percentiles(latencies),
        "statuses": {str(k): v for k, v in statuses.items()},
    }


async def closed_loop(
    url: str, reqs: list[tuple[bytes, dict[str, str]]], concurrency: int, warmup: int
) -> dict:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    it = iter(enumerate(reqs))
    started = [0.0]
    cpu = [0.0]  # this process's CPU time when the clock started
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            for i, (body, headers) in it:
                if i == warmup:
                    started[0] = time.perf_counter()
                    cpu[0] = time.process_time()
                t0 = time.perf_counter()
                await _post(session, url, body, headers, statuses)
                if i >= warmup:
                    latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(one() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started[0]
        cpu_s = time.process_time() - cpu[0]
    return _result(
        latencies,
        statuses,
        mode="closed",
        concurrency=concurrency,
        rps=round(len(latencies) / elapsed, 1),
        # The generator's own CPU while timed: at a whole core, the figure is the generator's.
        generator_cpu_ms_per_request=round(1000 * cpu_s / max(len(latencies), 1), 3),
    )


async def open_loop(url: str, reqs: list[tuple[bytes, dict[str, str]]], rate: float) -> dict:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    # The slowest answer to the requests scheduled in each second: a tail from a few stalled
    # seconds (a checkpoint, an autovacuum) reads differently from one spread over the run.
    by_second: dict[int, float] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(at: float, body: bytes, headers: dict[str, str]) -> None:
            await _post(session, url, body, headers, statuses)
            ms = (time.perf_counter() - at) * 1000
            latencies.append(ms)
            second = int(at - start)
            by_second[second] = max(by_second.get(second, 0.0), ms)

        running: set[asyncio.Task[None]] = set()  # finished ones are let go: nothing for GC to walk
        start = time.perf_counter() + 0.05
        for i, (body, headers) in enumerate(reqs):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(at, body, headers))
            running.add(task)
            task.add_done_callback(running.discard)
        while running:
            await asyncio.gather(*running)
        elapsed = time.perf_counter() - start
    return _result(
        latencies,
        statuses,
        mode="open",
        target_rps=rate,
        achieved_rps=round(len(reqs) / elapsed, 1),
        max_ms_by_second=[round(by_second.get(s, 0.0), 1) for s in range(max(by_second, default=-1) + 1)],
    )


def _replay_requests(path: str, limit: int | None, secret: str) -> list[tuple[str, bytes, dict[str, str]]]:
    """The file's bodies (one JSON event a line, gzip), signed now: Stripe's 300 s tolerance."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        bodies = [line.rstrip("\n") for line in fh if line.strip()]
    now = int(time.time())
    out = []
    for body in bodies[:limit] if limit else bodies:
        headers = {"Stripe-Signature": signature(body, secret, now), "Content-Type": "application/json"}
        out.append((json.loads(body)["id"], body.encode(), headers))
    return out


async def replay(url: str, reqs: list[tuple[str, bytes, dict[str, str]]], concurrency: int) -> dict:
    """Every request of ``reqs`` in order over ``concurrency`` connections, each one timed."""
    statuses: Counter[int] = Counter()
    sends: list[tuple[str, float, float, int]] = []
    it = iter(reqs)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            for event_id, body, headers in it:
                at = time.time()
                t0 = time.perf_counter()
                status = 0
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except aiohttp.ClientError:
                    pass
                statuses[status] += 1
                sends.append((event_id, at, (time.perf_counter() - t0) * 1000, status))

        cpu0, started = time.process_time(), time.time()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        ended, cpu_s = time.time(), time.process_time() - cpu0
    acked = sum(n for status, n in statuses.items() if 200 <= status < 300)
    window = ended - started
    return {
        **_result([ms for _, _, ms, _ in sends], statuses, mode="replay", concurrency=concurrency),
        "first_send": started,
        "last_answer": ended,
        "window_s": round(window, 3),
        "acked": acked,
        "rps": round(len(sends) / window, 1),
        "acked_rps": round(acked / window, 1),
        "generator_cpu_s": round(cpu_s, 3),
        "generator_cpu_ms_per_request": round(1000 * cpu_s / max(len(sends), 1), 3),
        "sends": sends,
    }


def _quiet_gc() -> None:
    """The generator must not pause itself: its prebuilt requests (tens of thousands of objects)
    are frozen out of the collector once built, and the youngest generation is collected less
    often. Its own full collections had grown to 33-125 ms, stalling the open loop's send
    schedule and showing up as server latency on both sides of the comparison."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, *gc.get_threshold()[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--prefix", default="r", help="makes event ids unique across runs")
    parser.add_argument("--secret", default=SECRET)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=None, help="open loop at this many req/s")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the open loop")
    parser.add_argument(
        "--payload",
        choices=("snapshot", "thin"),
        default="snapshot",
        help="snapshot events or thin notifications",
    )
    parser.add_argument("--events-file", default=None, help="replay this file's bodies (gzip, a JSON a line)")
    parser.add_argument("--limit", type=int, default=None, help="replay only the file's first N bodies")
    parser.add_argument("--sent-out", default=None, help="replay: write each post's id, instant, ms, status")
    args = parser.parse_args(argv)
    if args.events_file:
        replayed = _replay_requests(args.events_file, args.limit, args.secret)
        _quiet_gc()
        result = asyncio.run(replay(args.url, replayed, args.concurrency))
        sends = result.pop("sends")
        if args.sent_out:
            with open(args.sent_out, "w", encoding="utf-8") as fh:
                json.dump(sends, fh)
    elif args.rate:
        reqs = _requests(args.prefix, int(args.rate * args.duration), args.secret, args.payload)
        _quiet_gc()
        result = asyncio.run(open_loop(args.url, reqs, args.rate))
    else:
        reqs = _requests(args.prefix, args.requests + args.warmup, args.secret, args.payload)
        _quiet_gc()
        result = asyncio.run(closed_loop(args.url, reqs, args.concurrency, args.warmup))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
