"""The CLI's local parts: one owner per data folder, finding the running instance, --roles, tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import run_cli_without_servers
from worker.cli.output import table
from worker.dev.owner import DataDirBusy, NoRunningInstance, hold_data_dir, published, running_instance


def test_a_data_folder_has_one_owner_at_a_time(tmp_path: Path) -> None:
    with hold_data_dir(tmp_path):
        assert (tmp_path / "owner.lock").read_text().strip() == str(os.getpid())
        with (
            pytest.raises(DataDirBusy, match=f"in use by billing-worker pid {os.getpid()};"),
            hold_data_dir(tmp_path),
        ):
            pass
        assert (tmp_path / "owner.lock").read_text().strip() == str(os.getpid())  # left as it was
    with hold_data_dir(tmp_path):  # released at the end of the block
        pass


def test_the_running_instance_is_found_while_published_and_only_while_alive(tmp_path: Path) -> None:
    with pytest.raises(NoRunningInstance, match=r"start one with \./scripts/run"):
        running_instance(tmp_path)
    with published(tmp_path, "postgresql://postgres@127.0.0.1:1/postgres", "redis://127.0.0.1:2", "billing"):
        found = running_instance(tmp_path)
        assert (found.pid, found.redis_url) == (os.getpid(), "redis://127.0.0.1:2")
        assert (tmp_path / "running.json").stat().st_mode & 0o077 == 0
    assert not (tmp_path / "running.json").exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    doc = {
        "pid": int(dead.stdout),
        "database_url": "x",
        "redis_url": "y",
        "redis_prefix": "b",
        "data_dir": "d",
    }
    (tmp_path / "running.json").write_text(json.dumps(doc))  # left by a killed owner
    with pytest.raises(NoRunningInstance):
        running_instance(tmp_path)


def test_an_unknown_role_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = run_cli_without_servers(tmp_path / "data", "run", "--roles", "receiver,recevier")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "billing-worker: configuration error: --roles: unknown role(s) 'recevier'; "
        "valid roles: receiver, api, worker"
    ]
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_tables_for_people() -> None:
    rows = [{"event_id": "evt_1", "last_error": "boom\nTraceback …"}, {"event_id": "evt_22", "attempts": 3}]
    assert table(rows).splitlines() == [
        "event_id  last_error          attempts",
        "--------  ------------------  --------",
        "evt_1     boom ⏎ Traceback …",
        "evt_22                        3",
    ]
    assert table({"plan": "plus", "block": {"level": 2}, "open_invoices": []}).splitlines()[2:] == [
        "plan           plus",
        "block.level    2",
        "open_invoices  []",
    ]
    assert table([]) == "(none)"
