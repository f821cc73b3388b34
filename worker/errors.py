"""The service's errors: what went wrong in domain terms, with a stable machine-readable code.

Raised by the core's shell (plan changes, operations, services, route helpers that validate
input); only the HTTP edge (``worker.http.errors``) knows which status each class answers with,
and the CLI prints ``code: message``. Hierarchy::

    BillingError (code, message, details)
     ├── InvalidInput       the caller sent something we refuse
     ├── NotFound           what the caller names does not exist
     ├── Conflict           the current state does not allow it now
     │    └── BackfillBusy  (worker.ops.backfill) another process reads that run
     ├── UpstreamFailed     Stripe refused or failed a call we needed
     └── Unavailable        a dependency is down or not configured

``details`` are extra fields of the JSON error body beside ``code`` and ``message`` (e.g.
``field``, ``fields``, ``decision``, ``plan_change``, ``balance``).
"""

from __future__ import annotations

from typing import Any


class BillingError(Exception):
    """Base of every error the service reports to its callers; never raised itself."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class InvalidInput(BillingError):
    """The caller sent something we refuse (a malformed body, id, field or query value)."""


class NotFound(BillingError):
    """What the caller names (workspace, event, run, pending change) does not exist."""


class Conflict(BillingError):
    """The request is well-formed but the current state does not allow it now."""


class UpstreamFailed(BillingError):
    """Stripe refused or failed a call the request needed."""


class Unavailable(BillingError):
    """A dependency is down or not configured (e.g. no STRIPE_API_KEY)."""
