"""The one clock of the tests: injected into the service, moved by the test instead of sleeping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class MovableClock:
    """The service's injected clock; a test moves it instead of sleeping."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now
