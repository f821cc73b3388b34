"""Run every benchmark in turn, with the settings bench/README.md reports.

    python -m bench.run_all [--quick] [--unsafe-fast-storage]

``--quick`` shrinks every run (a minute or two in all) to check the scripts, not to measure.
"""

from __future__ import annotations

import argparse
import sys

from bench import e2e, ingest, memory, plan_change_sweep, processing, scale, throughput

FULL = {
    "throughput": ["--repeat", "5"],
    "ingest": ["--repeat", "3", "--requests", "10000", "--open-duration", "20"],
    "processing": ["--repeat", "3", "--events", "10000"],
    "e2e": ["--rate", "200", "--duration", "60"],
    "scale": ["--small", "1000", "--large", "1000000", "--events", "2000"],
    "memory": ["--requests", "10000", "--events", "10000"],
    "plan_change_sweep": ["--changes", "10000"],
}
QUICK = {
    "throughput": ["--repeat", "1", "--limit", "500"],
    "ingest": ["--repeat", "1", "--requests", "1000", "--open-duration", "3"],
    "processing": ["--repeat", "1", "--events", "1000"],
    "e2e": ["--rate", "100", "--duration", "5"],
    "scale": ["--small", "100", "--large", "2000", "--events", "200"],
    "memory": ["--requests", "1000", "--events", "1000"],
    "plan_change_sweep": ["--changes", "200"],
}
MODULES = {
    "throughput": throughput,
    "ingest": ingest,
    "processing": processing,
    "e2e": e2e,
    "scale": scale,
    "memory": memory,
    "plan_change_sweep": plan_change_sweep,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", choices=list(MODULES), default=list(MODULES))
    parser.add_argument("--results", default=None, help="JSON lines file (default bench/results.jsonl)")
    parser.add_argument("--unsafe-fast-storage", action="store_true", help="passed to every script")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    extra = ["--results", args.results] if args.results else []
    extra += ["--unsafe-fast-storage"] if args.unsafe_fast_storage else []
    for name in args.only:
        print(f"== bench.{name} {' '.join(plan[name])}", file=sys.stderr)
        MODULES[name].main([*plan[name], *extra])
    return 0


if __name__ == "__main__":
    sys.exit(main())
