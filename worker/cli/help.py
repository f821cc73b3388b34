"""What ``billing-worker COMMAND --help`` says: a description, the environment read, examples.

Kept apart from the parsing (worker/cli/main.py) so every command documents itself the same way.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

__all__ = ["DOCS", "add_command"]

_URLS_FROM_DATA_DIR = "unset: those of the `billing-worker run` serving BW_DATA_DIR"


@dataclass(frozen=True)
class CommandDoc:
    summary: str  # one line, in `billing-worker --help`
    description: str
    env: tuple[str, ...]
    examples: tuple[str, ...]


_SERVICE_ENV = (
    "STRIPE_WEBHOOK_SECRETS, BW_INTERNAL_TOKEN (made once in BW_DATA_DIR/dev-secrets.json in dev mode)",
    "STRIPE_API_KEY, STRIPE_API_BASE, BW_CATALOG_PATH, BW_RECEIVER_HOST/PORT, BW_INTERNAL_HOST/PORT,",
    "  BW_WORKER_METRICS_PORT and every other variable of the README's table",
)

DOCS: dict[str, CommandDoc] = {
    "run": CommandDoc(
        "receiver + internal API, and the worker in processes beside them (embedded servers when URLs are unset)",
        "Serve the roles given by --roles: the receiver and the internal API in this process, the worker\n"
        "in --worker-processes N processes beside it (default BW_WORKER_PROCESSES, else auto: half the\n"
        "usable CPUs, at least 1; 0: in this process), restarted if they die, stopped with it.\n"
        "With DATABASE_URL and/or REDIS_URL unset, start an embedded PostgreSQL and Redis with their\n"
        "data in BW_DATA_DIR, apply migrations, and publish where they listen in\n"
        "BW_DATA_DIR/running.json (removed on stop), so the other commands find them.\n"
        "One instance per data folder: a second one refuses to start.",
        (
            "DATABASE_URL, REDIS_URL (unset: embedded servers), BW_DATA_DIR (default .billing-worker)",
            "BW_WORKER_PROCESSES (auto), BW_JOB_TIMEOUT_SECONDS (their grace period on stop)",
            *_SERVICE_ENV,
        ),
        (
            "billing-worker run",
            "billing-worker run --worker-processes 0   # one process",
            "billing-worker run --roles receiver,api",
        ),
    ),
    "receiver": CommandDoc(
        "only the public webhook receiver, against DATABASE_URL / REDIS_URL",
        "Serve POST /webhooks/stripe (and /healthz) on BW_RECEIVER_HOST:BW_RECEIVER_PORT.",
        ("DATABASE_URL, REDIS_URL (required)", *_SERVICE_ENV),
        ("DATABASE_URL=postgresql://… REDIS_URL=redis://… billing-worker receiver",),
    ),
    "api": CommandDoc(
        "only the internal API, against DATABASE_URL / REDIS_URL",
        "Serve the internal API (bearer token) on BW_INTERNAL_HOST:BW_INTERNAL_PORT.",
        ("DATABASE_URL, REDIS_URL (required)", *_SERVICE_ENV),
        ("DATABASE_URL=postgresql://… REDIS_URL=redis://… billing-worker api",),
    ),
    "worker": CommandDoc(
        "only the arq worker, against DATABASE_URL / REDIS_URL",
        "Process queued events and plan changes; /metrics and /readyz on BW_WORKER_METRICS_PORT.",
        ("DATABASE_URL, REDIS_URL (required)", "BW_MAX_JOBS, BW_JOB_TIMEOUT_SECONDS, BW_MAX_TRIES, …"),
        ("DATABASE_URL=postgresql://… REDIS_URL=redis://… billing-worker worker",),
    ),
    "migrate": CommandDoc(
        "apply pending SQL migrations",
        "Apply the pending migrations in order (advisory-locked: safe to run from several pods).\n"
        "Says on stderr which one it applies; prints the applied ones as JSON on stdout.",
        (f"DATABASE_URL ({_URLS_FROM_DATA_DIR})", "BW_DATA_DIR"),
        ("billing-worker migrate",),
    ),
    "show": CommandDoc(
        "a workspace's billing state",
        "Print a workspace's billing state (plan, seats, status, period, open invoices, blocks).\n"
        "Exit 1 if the workspace has none.",
        (f"DATABASE_URL ({_URLS_FROM_DATA_DIR})", "BW_DATA_DIR"),
        ("billing-worker show ws_123", "billing-worker show ws_123 --format table"),
    ),
    "event": CommandDoc(
        "an inbox event's status, attempts and last error",
        "Print one inbox row: status, outcome, attempts, last_error, payload. Exit 1 if unknown.",
        (f"DATABASE_URL ({_URLS_FROM_DATA_DIR})", "BW_DATA_DIR"),
        ("billing-worker event evt_1Nx…", "billing-worker event evt_1Nx… --format table"),
    ),
    "retry": CommandDoc(
        "re-run one inbox event, or every dead letter of a type",
        "Reset the event(s) to `received` and enqueue them. Always safe: an event the state already\n"
        "reflects is a no-op replay. Prints the result as JSON.",
        (
            f"DATABASE_URL, REDIS_URL ({_URLS_FROM_DATA_DIR})",
            "BW_REDIS_PREFIX (unset: the running instance's), BW_DATA_DIR",
        ),
        ("billing-worker retry evt_1Nx…", "billing-worker retry --type invoice.payment_failed"),
    ),
    "dead-letters": CommandDoc(
        "dead letters and why each was parked",
        "List inbox events in status `dead` with `last_error`, oldest first.",
        (f"DATABASE_URL, REDIS_URL ({_URLS_FROM_DATA_DIR})", "BW_DATA_DIR"),
        (
            "billing-worker dead-letters --type invoice.payment_failed",
            "billing-worker dead-letters --limit 20 --format table",
        ),
    ),
    "reconcile": CommandDoc(
        "re-fetch a workspace's subscriptions and open invoices from Stripe and apply them",
        "Read the customer's subscriptions and open invoices from Stripe and apply them like\n"
        "webhooks (latest wins). Needs STRIPE_API_KEY.",
        (
            f"DATABASE_URL, REDIS_URL ({_URLS_FROM_DATA_DIR})",
            "STRIPE_API_KEY (required), STRIPE_API_BASE, BW_DATA_DIR",
        ),
        ("STRIPE_API_KEY=sk_test_… billing-worker reconcile ws_123",),
    ),
    "backfill": CommandDoc(
        "import events Stripe has and the inbox lacks (30-day horizon)",
        "Read Stripe's events API from --since on (or continue run --resume N) and store the events\n"
        "the inbox lacks, which are then processed. Prints the run id on stderr at once, then its\n"
        "progress (pages, fetched, inserted, skipped = already stored or malformed, cursor): a\n"
        "progress bar on a terminal, a log line every few seconds otherwise. After Ctrl-C or an\n"
        "error, `--resume RUN_ID` continues after the saved cursor. The final run is JSON on stdout.",
        (
            f"DATABASE_URL, REDIS_URL ({_URLS_FROM_DATA_DIR})",
            "STRIPE_API_KEY (required), STRIPE_API_BASE, BW_DATA_DIR",
        ),
        (
            "billing-worker backfill --since 2026-11-01T00:00:00Z",
            "billing-worker backfill --since 1730419200",
            "billing-worker backfill --resume 7",
        ),
    ),
}


def _epilog(doc: CommandDoc) -> str:
    env = "\n".join(f"  {line}" for line in doc.env)
    examples = "\n".join(f"  {line}" for line in doc.examples)
    return (
        f"environment:\n{env}\n  BW_LOG_LEVEL (logs go to stderr; results to stdout)\n\n"
        f"examples:\n{examples}\n\n"
        "Known failures print one line and exit non-zero; --debug shows the traceback."
    )


def add_command(sub: Any, name: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """A sub-command parser with its summary, description and the environment/examples epilog."""
    doc = DOCS[name]
    return sub.add_parser(  # type: ignore[no-any-return]
        name,
        help=doc.summary,
        description=doc.description,
        epilog=_epilog(doc),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=parents,
    )
