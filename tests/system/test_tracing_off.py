"""With tracing off (the default), a service process does not even load OpenTelemetry."""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import ROOT


def test_the_service_modules_do_not_import_opentelemetry_while_tracing_is_off():
    program = (
        "import sys\n"
        "import worker.cli.main, worker.runner, worker.jobs.worker, worker.receiver.app\n"
        "from worker.infra import tracing\n"
        "assert not tracing.enabled()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "[]"
