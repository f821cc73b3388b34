"""Benchmark 5 (memory): peak RSS of the receiver and the worker under the ingest and processing loads.

Runs ``bench.ingest`` and ``bench.processing`` (their RSS sampler reads each server process every
100 ms with psutil) and records the peaks in one line of its own.

    python -m bench.memory [--requests 10000] [--events 10000]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import ingest, processing
from bench.common import base_parser, record, storage_of


def _last(path: Path, bench: str) -> dict:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return next(line for line in reversed(lines) if line["bench"] == bench)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--events", type=int, default=10000)
    parser.set_defaults(repeat=1)
    args = parser.parse_args(argv)
    common = ["--repeat", str(args.repeat), "--results", str(args.results)]
    common += ["--unsafe-fast-storage"] if args.unsafe_fast_storage else []
    ingest.main([*common, "--requests", str(args.requests), "--open-duration", "10"])
    processing.main([*common, "--events", str(args.events)])
    ing, proc = _last(args.results, "ingest"), _last(args.results, "processing")
    receiver = ing["figures"]["peak_rss_mb"]["receiver"]
    worker = proc["figures"]["peak_rss_mb"]["worker"]
    figures = {
        "receiver_peak_rss_mb": receiver,
        "worker_peak_rss_mb": worker,
        "bare_aiohttp_peak_rss_mb": ing["figures"]["peak_rss_mb"]["bare"],
        "noop_worker_peak_rss_mb": proc["figures"]["peak_rss_mb"]["noop_worker"],
        "ingest_requests": args.requests,
        "processing_events": args.events,
        "targets": {"receiver_lt_150mb": receiver < 150, "worker_lt_150mb": worker < 150},
    }
    record(
        "memory",
        figures,
        versions=ing["machine"],
        results=args.results,
        argv=argv,
        storage=storage_of(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
