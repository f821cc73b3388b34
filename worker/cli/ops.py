"""The operations commands of the CLI (same triggers as the internal API's):

billing-worker retry EVENT_ID | --type TYPE    re-run one event / every dead letter of a type
billing-worker dead-letters [--type TYPE]      list dead letters with their reasons
billing-worker reconcile WORKSPACE_ID          re-fetch from Stripe and apply
billing-worker backfill --since TIME | --resume RUN_ID   import missed events (30-day horizon)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import stripe

from worker.config import Settings
from worker.errors import BillingError
from worker.ops import backfill, recovery
from worker.ops.reconcile import reconcile_workspace
from worker.services import Services

COMMANDS = ("retry", "dead-letters", "reconcile", "backfill")


def add_parsers(sub: Any) -> None:
    retry = sub.add_parser("retry", help="retry one inbox event, or every dead letter of a type")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("event_id", nargs="?")
    target.add_argument("--type", dest="event_type", help="retry every dead letter of this event type")
    dead = sub.add_parser("dead-letters", help="list dead letters and why they were parked")
    dead.add_argument("--type", dest="event_type")
    dead.add_argument("--limit", type=int, default=100)
    reconcile = sub.add_parser("reconcile", help="re-fetch a workspace's objects from Stripe and apply them")
    reconcile.add_argument("workspace_id")
    backfill = sub.add_parser("backfill", help="import events Stripe has and the inbox lacks")
    which = backfill.add_mutually_exclusive_group(required=True)
    which.add_argument("--since", help="ISO-8601 time with zone, or unix seconds (within 30 days)")
    which.add_argument("--resume", type=int, metavar="RUN_ID", help="continue a stopped run")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    services = await Services.start(settings)
    try:
        if args.command == "retry":
            if args.event_type:
                out: Any = {"retried": await recovery.retry_dead_letters(services, args.event_type)}
            else:
                result = await recovery.retry_event(services, args.event_id)
                if result is None:
                    return _fail(f"no inbox event {args.event_id!r}")
                out = result.as_json()
        elif args.command == "dead-letters":
            out = await recovery.list_dead_letters(services, args.event_type, args.limit)
        else:
            gateway = services.require_stripe()
            if args.command == "reconcile":
                out = await reconcile_workspace(services, gateway, args.workspace_id)
            else:
                if args.resume:
                    run_id = args.resume
                else:
                    since = backfill.parse_since(int(args.since) if args.since.isdigit() else args.since)
                    run_id = await backfill.start_run(services.pool, since, services.clock())
                out = await backfill.run_pages(services, gateway, run_id)
        print(json.dumps(out, indent=2, default=str))
        return 0
    except BillingError as exc:
        return _fail(f"{exc.code}: {exc.message}")
    except stripe.StripeError as exc:
        return _fail(f"Stripe error {type(exc).__name__}: {exc.user_message or exc}")
    finally:
        await services.close()


def _fail(message: str) -> int:
    print(f"billing-worker: {message}", file=sys.stderr)
    return 1
