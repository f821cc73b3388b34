"""The benchmarks' bookkeeping (not the benchmarks: they are too slow for CI): one JSON line per
run with machine, command, commit, figures, baseline and ratio, and honest percentiles."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import urllib.request

from bench.common import percentiles, record
from tests.support.paths import ROOT
from tests.support.services import free_port


def test_record_appends_one_self_describing_line(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    record(
        "ingest", {"rps": 10.0}, baseline={"rps": 20.0}, ratio=0.5, results=results, argv=["--repeat", "1"]
    )
    record("ingest", {"rps": 12.0}, results=results, argv=[])
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first["command"] == "python -m bench.ingest --repeat 1"
    assert (first["figures"], first["baseline"], first["ratio"]) == ({"rps": 10.0}, {"rps": 20.0}, 0.5)
    assert first["machine"]["nproc"] >= 1 and first["machine"]["python"]
    assert first["git_commit"]
    assert '"bench": "ingest"' in capsys.readouterr().out


def test_percentiles_are_nearest_rank():
    values = list(range(1, 1001))  # 1 … 1000 ms
    assert percentiles(values) == {"p50": 500, "p99": 990, "p99.9": 999}
    assert percentiles([7.0]) == {"p50": 7.0, "p99": 7.0, "p99.9": 7.0}


def test_the_bare_aiohttp_baseline_starts_and_answers():
    """The ingest baseline shares the receiver's start_site; a change there must not break it."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.bare_server", str(port)], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, "the bare server exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the bare server never answered /healthz"
                time.sleep(0.05)  # polling a child process that is starting up
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cpu_split_charges_a_runs_cpu_to_the_process_that_used_it():
    """The ingest result says which process ran out of CPU; a busy server must show as busy."""
    from bench.common import CpuSplit, Servers

    burn = (
        "import sys, time\ninput()\nend = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\nprint('done', flush=True)\ninput()"
    )
    server = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    idle = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    try:
        with CpuSplit(server.pid, Servers("", "", postgres_pid=idle.pid)) as split:
            server.stdin.write(b"go\n")
            server.stdin.flush()
            assert server.stdout.readline() == b"done\n"  # the CPU is used within the block
        per_request = split.per_request_ms(100)
        assert per_request["server"] >= 3.0  # 0.3 s over 100 requests
        assert per_request["postgres"] < 1.0 and per_request["redis"] == 0.0
    finally:
        for proc in (server, idle):
            proc.kill()
            proc.wait(timeout=10)


def test_benchmarks_run_durable_servers_unless_told_otherwise(tmp_path):
    """Issue 19: the figures are the service's only if PostgreSQL and Redis keep what they ack."""
    from bench.common import base_parser, private_servers, storage_of

    args = base_parser("x").parse_args([])
    assert storage_of(args) == "durable"
    assert storage_of(base_parser("x").parse_args(["--unsafe-fast-storage"])) == "unsafe-fast"
    with private_servers(tmp_path, storage=storage_of(args)) as servers:
        assert servers.versions["postgres_storage"] == "fsync=on synchronous_commit=on full_page_writes=on"
        assert servers.versions["redis_storage"] == "appendonly=yes appendfsync=everysec"
    results = tmp_path / "results.jsonl"
    record("ingest", {"rps": 1.0}, results=results, argv=[], storage=storage_of(args))
    assert json.loads(results.read_text())["storage"] == "durable"


def test_the_committed_throughput_event_set_is_what_its_generator_makes(tmp_path):
    """bench.throughput posts a fixed set; regenerating it gives the same bytes and its shape."""
    from bench.make_throughput_events import OUT, main

    out = tmp_path / "events.jsonl.gz"
    assert main(["--out", str(out)]) == 0
    assert out.read_bytes() == OUT.read_bytes(), "re-run python -m bench.make_throughput_events"
    bodies = gzip.decompress(out.read_bytes()).decode().splitlines()
    ids = [json.loads(b)["id"] for b in bodies]
    workspaces = {json.loads(b)["data"]["object"].get("metadata", {}).get("workspace_id") for b in bodies}
    assert len(set(ids)) >= 2000 and len(workspaces - {None}) >= 200
    assert 0.03 <= (len(ids) - len(set(ids))) / len(set(ids)) <= 0.07  # ~5 % posted twice


def test_throughput_expects_the_state_of_each_workspaces_last_event_in_stripe_order():
    """Posted out of order, the expected state is still that of the latest ``created``; a service
    that shows an older one is caught."""
    from bench.throughput_expect import expected_states, mismatches
    from tests.support import stripe_factory as sf

    events = sf.history_lifecycle(workspace_id="ws_x", customer="cus_x", sub_id="sub_x")[:4]
    dunning = sf.history_payment_failure(workspace_id="ws_y", customer="cus_y", sub_id="sub_y", outcome=None)
    bodies = [json.dumps(e) for e in reversed(events + dunning)]
    expected = expected_states(bodies)
    assert expected["ws_x"] == {
        "status": "active",
        "plan": "business",
        "seats": 5,
        "cancel_at_period_end": False,
        "open_invoices": [],
    }
    assert expected["ws_y"]["status"] == "past_due" and expected["ws_y"]["open_invoices"] == [
        "in_Dunning00001"
    ]
    shown = {**expected["ws_x"], "plan": "plus", "open_invoices": []}
    assert mismatches(expected["ws_x"], shown) == {"plan": {"want": "business", "got": "plus"}}
