"""``python -m worker.cli``: the same command line as ``billing-worker``."""

from worker.cli.main import main

main()
