"""A real ``EventProcessor`` that one event id makes fail: how tests show a bad event fails alone."""

from __future__ import annotations

from typing import Any

from worker.processing.unit_of_work import EventProcessor


class PoisonedProcessor(EventProcessor):
    """The real processor, except that one event id makes any unit of work holding it fail."""

    poison: str = ""

    async def process_batch(self, event_ids: Any, fetched: Any = None) -> Any:
        if self.poison in event_ids:
            raise RuntimeError("poisoned")
        return await super().process_batch(event_ids, fetched)
