"""How many worker processes ``billing-worker run`` starts, from the flag, the variable or the
CPUs; what each is told in its environment; and log lines that several processes write to one
stdout without tearing each other's. The processes themselves: tests/system/test_worker_processes.py."""

from __future__ import annotations

import io
import json
import os
import select
from pathlib import Path

import pytest
import structlog

from tests.support.cli import run_cli_without_servers
from tests.support.helpers import make_settings
from worker.cli.main import _parser
from worker.config import ConfigError, Settings
from worker.infra import logging as logging_module
from worker.infra.logging import configure
from worker.runner_processes import (
    child_environment,
    default_worker_processes,
    usable_cpus,
    worker_process_count,
)


@pytest.mark.parametrize(("cpus", "workers"), [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (16, 8), (64, 32)])
def test_the_default_is_half_the_cpus_and_at_least_one(cpus: int, workers: int) -> None:
    assert default_worker_processes(cpus) == workers
    assert worker_process_count(None, cpus=cpus) == workers


def test_a_configured_count_wins_over_the_cpus_and_zero_means_none() -> None:
    assert worker_process_count(3, cpus=64) == 3
    assert worker_process_count(0, cpus=64) == 0


def test_usable_cpus_are_those_this_process_may_run_on() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("", None), ("auto", None), ("AUTO", None), ("0", 0), ("4", 4)]
)
def test_bw_worker_processes(value: str | None, expected: int | None) -> None:
    env = {} if value is None else {"BW_WORKER_PROCESSES": value}
    assert Settings.from_env(env).worker_processes == expected


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_bw_worker_processes_refuses_what_is_no_count(value: str) -> None:
    with pytest.raises(ConfigError, match="BW_WORKER_PROCESSES must be auto or a number of processes >= 0"):
        Settings.from_env({"BW_WORKER_PROCESSES": value})


def test_the_flag_reads_a_count_or_auto_and_defaults_to_the_variable() -> None:
    parse = _parser().parse_args
    assert parse(["run", "--worker-processes", "2"]).worker_processes == 2
    assert parse(["run", "--worker-processes", "0"]).worker_processes == 0
    assert parse(["run", "--worker-processes", "auto"]).worker_processes is None
    assert parse(["run"]).worker_processes is None  # then BW_WORKER_PROCESSES, then the CPUs


def test_a_bad_flag_is_one_usage_error(tmp_path: Path) -> None:
    done = run_cli_without_servers(tmp_path / "data", "run", "--worker-processes", "-2")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "billing-worker run: error: argument --worker-processes: "
        "must be auto or a number of processes >= 0, got -2"
    )
    assert not (tmp_path / "data").exists()


def test_a_worker_process_is_told_the_resolved_servers_its_name_and_port_in_its_environment() -> None:
    settings = make_settings("postgresql://h/db", "redis://h:1/0", "pfx", STRIPE_API_KEY="sk_test_k")
    base = {"PATH": "/bin", "DATABASE_URL": "", "BW_PROCESS_NAME": "main"}
    env = child_environment(settings, "worker-2", 9104, base=base)
    assert env["PATH"] == "/bin"  # the rest of the main process's environment is inherited
    assert (env["DATABASE_URL"], env["REDIS_URL"], env["BW_REDIS_PREFIX"]) == (
        "postgresql://h/db",
        "redis://h:1/0",
        "pfx",
    )
    assert (env["BW_PROCESS_NAME"], env["BW_WORKER_METRICS_PORT"]) == ("worker-2", "9104")
    assert env["STRIPE_API_KEY"] == "sk_test_k"


def test_every_line_names_its_process() -> None:
    buffer = io.StringIO()
    configure("info", stream=buffer, process="worker-3")
    try:
        structlog.get_logger().info("hello", n=1)
    finally:
        structlog.reset_defaults()
    assert json.loads(buffer.getvalue())["process"] == "worker-3"


def test_a_batch_of_lines_is_written_in_atomic_pieces() -> None:
    """Writes of at most PIPE_BUF bytes to a pipe are never interleaved with another process's."""
    lines = [json.dumps({"n": n, "text": "é" * (n % 97)}) for n in range(2000)] + ["x" * 10_000, "y"]
    chunks = logging_module._chunks(lines)
    assert "".join(chunks) == "\n".join(lines) + "\n"
    assert all(chunk.endswith("\n") for chunk in chunks)
    for chunk in chunks:
        if chunk.count("\n") > 1:  # a single longer line cannot be split
            assert len(chunk.encode()) <= select.PIPE_BUF
    assert len(chunks) < len(lines) / 10  # still batched
