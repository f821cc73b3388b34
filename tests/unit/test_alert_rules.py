"""The alert rules load in Prometheus and fire when they should: ``promtool check rules`` and
``promtool test rules`` (the unit tests in deploy/prometheus/alerts_test.yml).

promtool comes from Debian's ``prometheus`` package; ``./scripts/test`` installs it when it is
missing and runs as root. Elsewhere a missing promtool fails this test with the command that
installs it: it never skips, so CI cannot pass without having checked the alerts.
"""

from __future__ import annotations

import shutil
import subprocess

from tests.support.paths import ROOT

RULES = ROOT / "deploy" / "prometheus"
INSTALL = (
    "promtool is not on PATH: install it with `sudo apt-get install -y --no-install-recommends "
    "prometheus` (Debian/Ubuntu), or from https://prometheus.io/download/ (it is in the tarball)"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, INSTALL
    return subprocess.run(
        [promtool, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_rules():
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_on_their_failures_and_only_then():
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
