"""``python -m worker.cli``: the same command line as ``billing-worker``."""

import sys

from worker.cli.main import main

sys.exit(main())
