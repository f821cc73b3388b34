"""Progress of a CLI backfill on stderr: a bar on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

from worker.infra.logging import get_logger
from worker.ops.backfill import PageRead

__all__ = ["BackfillProgress"]

log = get_logger("cli")

LOG_EVERY_SECONDS = 5.0


class BackfillProgress:
    """Called after every page of a backfill (``worker.ops.backfill.run_pages(on_page=…)``)."""

    def __init__(self, run_id: int, stream: TextIO | None = None) -> None:
        self.run_id = run_id
        self.stream = stream or sys.stderr
        self._bar: Any = None
        if self.stream.isatty():
            self._bar = tqdm(
                desc=f"backfill run {run_id}", unit=" page", file=self.stream, dynamic_ncols=True
            )
        self._logged_at = 0.0

    def __call__(self, page: PageRead) -> None:
        if self._bar is not None:
            self._bar.set_postfix(
                fetched=page.fetched,
                inserted=page.inserted,
                skipped=page.skipped,
                cursor=page.cursor,
                refresh=False,
            )
            self._bar.update(1)
            return
        now = time.monotonic()
        if page.done or now - self._logged_at >= LOG_EVERY_SECONDS:
            self._logged_at = now
            log.info(
                "backfill_pages_read",
                run_id=page.run_id,
                pages=page.pages,
                fetched=page.fetched,
                inserted=page.inserted,
                skipped=page.skipped,
                cursor=page.cursor,
                done=page.done,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
