"""The operations commands of the CLI (same triggers as the internal API's):

billing-worker retry EVENT_ID | --type TYPE    re-run one event / every dead letter of a type
billing-worker dead-letters [--type TYPE]      list dead letters with their reasons
billing-worker reconcile WORKSPACE_ID          re-fetch from Stripe and apply
billing-worker backfill --since TIME | --resume RUN_ID   import missed events (30-day horizon)

Failures are raised (``worker.errors``, ``stripe.StripeError``, connection errors); worker/cli/main.py
turns each into one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from worker.cli.help import add_command
from worker.cli.output import emit
from worker.cli.progress import BackfillProgress
from worker.config import Settings
from worker.errors import InvalidInput, NotFound
from worker.ops import backfill, recovery
from worker.ops.reconcile import reconcile_workspace
from worker.services import Services

COMMANDS = ("retry", "dead-letters", "reconcile", "backfill")


def _run_id(text: str) -> int:
    try:
        return backfill.check_run_id(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a run id: {text!r}") from None
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def add_parsers(sub: Any, common: list[argparse.ArgumentParser], table: argparse.ArgumentParser) -> None:
    retry = add_command(sub, "retry", common)
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("event_id", nargs="?", help="the inbox event to re-run (evt_…)")
    target.add_argument(
        "--type", dest="event_type", metavar="TYPE", help="re-run every dead letter of this event type"
    )
    dead = add_command(sub, "dead-letters", [*common, table])
    dead.add_argument("--type", dest="event_type", metavar="TYPE", help="only this event type")
    dead.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    reconcile = add_command(sub, "reconcile", common)
    reconcile.add_argument("workspace_id", help="the workspace to re-fetch (its Stripe customer)")
    run = add_command(sub, "backfill", common)
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--since", metavar="TIME", help="ISO-8601 time with a zone, or unix seconds (within 30 days)"
    )
    which.add_argument("--resume", type=_run_id, metavar="RUN_ID", help="continue a stopped run")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    services = await Services.start(settings)
    try:
        if args.command == "retry":
            if args.event_type:
                out: Any = {"retried": await recovery.retry_dead_letters(services, args.event_type)}
            else:
                result = await recovery.retry_event(services, args.event_id)
                if result is None:
                    raise NotFound("event_not_found", f"no inbox event {args.event_id!r}")
                out = result.as_json()
        elif args.command == "dead-letters":
            out = await recovery.list_dead_letters(services, args.event_type, args.limit)
        elif args.command == "reconcile":
            out = await reconcile_workspace(services, services.require_stripe(), args.workspace_id)
        else:
            out = await _backfill(services, args)
        emit(out, getattr(args, "format", "json"))
        return 0
    finally:
        await services.close()


async def _backfill(services: Services, args: argparse.Namespace) -> Any:
    gateway = services.require_stripe()
    if args.resume:
        run_id = args.resume
        if await backfill.get_run(services.pool, run_id) is None:
            raise NotFound("backfill_not_found", f"no backfill run {run_id}")
        print(f"backfill run {run_id}: resuming", file=sys.stderr, flush=True)
    else:
        since = backfill.parse_since(
            int(args.since) if args.since.isascii() and args.since.isdigit() else args.since
        )
        run_id = await backfill.start_run(services.pool, since, services.clock())
        print(
            f"backfill run {run_id} started (since {since.isoformat()}); if it stops, continue it "
            f"with: billing-worker backfill --resume {run_id}",
            file=sys.stderr,
            flush=True,
        )
    progress = BackfillProgress(run_id)
    try:
        return await backfill.run_pages(services, gateway, run_id, on_page=progress)
    finally:
        progress.close()
