"""The ``billing-worker`` command line.

billing-worker run [--roles receiver,api,worker]   everything; embedded Postgres/Redis when
                                                   DATABASE_URL / REDIS_URL are unset
billing-worker receiver | api | worker             one role, against configured services
billing-worker migrate                             apply pending SQL migrations
billing-worker show WORKSPACE_ID                   a workspace's billing state (JSON)
billing-worker event EVENT_ID                      an inbox row (JSON)
billing-worker retry | dead-letters | reconcile | backfill   operations (see worker/cli_ops.py)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import secrets
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import asyncpg

from handlers.catalog import CatalogError
from handlers.codec import to_jsonable
from worker.api.workspaces import workspace_json
from worker.cli import ops as cli_ops
from worker.config import ConfigError, Settings
from worker.dev.services import embedded_services
from worker.infra.logging import configure, get_logger
from worker.runner import serve
from worker.storage import inbox, workspaces
from worker.storage.db import init_connection
from worker.storage.migrate import migrate

log = get_logger("cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="billing-worker", description="Stripe webhooks → workspace billing state."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="receiver + internal API + worker (embedded services when URLs are unset)"
    )
    run.add_argument(
        "--roles", default="receiver,api,worker", help="comma-separated subset of receiver,api,worker"
    )
    for role in ("receiver", "api", "worker"):
        sub.add_parser(role, help=f"run only the {role}")
    sub.add_parser("migrate", help="apply pending SQL migrations")
    show = sub.add_parser("show", help="print a workspace's billing state")
    show.add_argument("workspace_id")
    event = sub.add_parser("event", help="print an inbox event's status")
    event.add_argument("event_id")
    cli_ops.add_parsers(sub)
    return parser


def _dev_defaults(settings: Settings, data_dir: Path) -> Settings:
    """Embedded dev mode may start without secrets: make them once and keep them in the data dir."""
    secrets_file = data_dir / "dev-secrets.json"
    stored = json.loads(secrets_file.read_text()) if secrets_file.exists() else {}
    stored.setdefault("webhook_secret", "whsec_" + secrets.token_hex(16))
    stored.setdefault("internal_token", secrets.token_urlsafe(24))
    secrets_file.write_text(json.dumps(stored))
    secrets_file.chmod(0o600)
    changes = {}
    if not settings.webhook_secrets:
        changes["webhook_secrets"] = (stored["webhook_secret"],)
    if not settings.internal_token:
        changes["internal_token"] = stored["internal_token"]
    if changes:
        print(f"dev mode: webhook secret and internal token are in {secrets_file}", file=sys.stderr)
    return dataclasses.replace(settings, **changes)


def _run(settings: Settings, roles: Sequence[str]) -> int:
    with ExitStack() as stack:
        if not settings.database_url or not settings.redis_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            urls = stack.enter_context(embedded_services(settings.data_dir))
            settings = dataclasses.replace(
                settings,
                database_url=settings.database_url or urls.database_url,
                redis_url=settings.redis_url or urls.redis_url,
            )
            settings = _dev_defaults(settings, settings.data_dir)
        _require(settings, roles)
        asyncio.run(serve(settings, roles, run_migrations=True))
    return 0


def _require(settings: Settings, roles: Sequence[str]) -> None:
    if "receiver" in roles and not settings.webhook_secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRETS is empty: set at least one whsec_ secret")
    if "api" in roles and not settings.internal_token:
        raise ConfigError("BW_INTERNAL_TOKEN is empty: the internal API needs a bearer token")
    if not settings.database_url or not settings.redis_url:
        raise ConfigError("DATABASE_URL and REDIS_URL must be set for this command")


async def _query(settings: Settings, what: str, ident: str) -> int:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        await init_connection(conn)
        if what == "show":
            row = await workspaces.get_workspace(conn, ident)
            if row is None:
                print(f"no billing state for workspace {ident!r}", file=sys.stderr)
                return 1
            doc = workspace_json(row, list(await workspaces.open_invoices(conn, ident)))
        else:
            row = await inbox.get_event(conn, ident)
            if row is None:
                print(f"no inbox event {ident!r}", file=sys.stderr)
                return 1
            doc = to_jsonable(dict(row))
        print(json.dumps(doc, indent=2, default=str))
        return 0
    finally:
        await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure(settings.log_level)
        if args.command == "run":
            roles = [r.strip() for r in args.roles.split(",") if r.strip()]
            return _run(settings, roles)
        if args.command in ("receiver", "api", "worker"):
            _require(settings, [args.command])

            asyncio.run(serve(settings, [args.command]))
            return 0
        if not settings.database_url:
            raise ConfigError("DATABASE_URL must be set for this command")
        if args.command in cli_ops.COMMANDS:
            _require(settings, [])
            return asyncio.run(cli_ops.run(settings, args))
        if args.command == "migrate":
            applied = asyncio.run(migrate(settings.database_url))
            print(
                f"applied {len(applied)} migration(s)"
                + "".join(f"\n  {m.version:04d}_{m.name}" for m in applied)
            )
            return 0
        return asyncio.run(
            _query(settings, args.command, args.workspace_id if args.command == "show" else args.event_id)
        )
    except (ConfigError, CatalogError) as exc:
        print(f"billing-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
