"""The ``billing-worker`` command line.

billing-worker run [--roles receiver,api,worker] [--worker-processes N]
                                                   everything: receiver + API in this process, the
                                                   worker in N processes beside it (0: in this one);
                                                   embedded Postgres/Redis when DATABASE_URL /
                                                   REDIS_URL are unset
billing-worker receiver | api | worker             one role, against configured services
billing-worker migrate                             apply pending SQL migrations
billing-worker show WORKSPACE_ID                   a workspace's billing state
billing-worker event EVENT_ID                      an inbox row
billing-worker retry | dead-letters | reconcile | backfill   operations (worker/cli/ops.py)

Results go to stdout (JSON, or ``--format table``), logs and progress to stderr. With the URLs
unset, the commands use the servers of the ``billing-worker run`` serving ``BW_DATA_DIR``
(worker/dev/owner.py). A known failure is one line on stderr and a non-zero exit; ``--debug``
shows its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import stripe
from redis.exceptions import RedisError

from handlers.catalog import CatalogError
from handlers.codec import to_jsonable
from worker.api.workspaces import workspace_json
from worker.cli import ops as cli_ops
from worker.cli.help import add_command
from worker.cli.output import emit
from worker.config import ConfigError, Settings, parse_worker_processes
from worker.dev.owner import hold_data_dir, published, running_instance
from worker.dev.server import EmbeddedServiceError
from worker.dev.services import embedded_services
from worker.errors import BillingError, NotFound
from worker.infra.logging import configure, get_logger
from worker.runner import ROLES, serve
from worker.runner_processes import CHILD_FLAG, READY_FD_FLAG, worker_process_count
from worker.storage import inbox, workspaces
from worker.storage.db import init_connection
from worker.storage.migrate import Migration, migrate

log = get_logger("cli")
SERVICE_COMMANDS = ("run", *ROLES)


def _parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of a failure"
    )
    table = argparse.ArgumentParser(add_help=False)
    table.add_argument(
        "--format", choices=("json", "table"), default="json", help="json (default) or a table for people"
    )
    parser = argparse.ArgumentParser(
        prog="billing-worker",
        description="Stripe webhooks → workspace billing state. `billing-worker COMMAND --help` for more.",
        epilog="With DATABASE_URL / REDIS_URL unset, every command uses the servers of the running\n"
        "`billing-worker run` (./scripts/run) of BW_DATA_DIR (default .billing-worker).\n\n"
        "example:\n  ./scripts/run  # then, in another terminal:\n"
        "  billing-worker dead-letters --format table",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = add_command(sub, "run", [debug])
    run.add_argument(
        "--roles",
        default=",".join(ROLES),
        help=f"comma-separated subset of {','.join(ROLES)} (default: all)",
    )
    run.add_argument(
        "--worker-processes",
        type=_worker_processes,
        default=None,
        metavar="N",
        help="worker processes beside this one: a number, 0 (the worker runs in this process) or auto "
        "(half the usable CPUs, at least 1); default: BW_WORKER_PROCESSES, else auto",
    )
    for role in ROLES:
        command = add_command(sub, role, [debug])
        if role == "worker":  # how `run` starts its worker processes: stop when the pipe ends
            command.add_argument(CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)
            command.add_argument(READY_FD_FLAG, type=int, default=None, help=argparse.SUPPRESS)
    add_command(sub, "migrate", [debug])
    show = add_command(sub, "show", [debug, table])
    show.add_argument("workspace_id", help="the product's workspace id (metadata.workspace_id)")
    event = add_command(sub, "event", [debug, table])
    event.add_argument("event_id", help="a Stripe event id (evt_…)")
    cli_ops.add_parsers(sub, [debug], table)
    return parser


def _worker_processes(text: str) -> int | None:
    try:
        return parse_worker_processes(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--worker-processes ")) from None


def _roles(text: str) -> list[str]:
    roles = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        what = f"unknown role(s) {', '.join(map(repr, unknown))}" if unknown else "no role given"
        raise ConfigError(f"--roles: {what}; valid roles: {', '.join(ROLES)}")
    return roles


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


def _run(settings: Settings, roles: Sequence[str], configured_processes: int | None = None) -> int:
    """Serve; in embedded mode own the data folder first, and publish the servers once serving."""
    count = 0
    if "worker" in roles:
        wanted = configured_processes if configured_processes is not None else settings.worker_processes
        count = worker_process_count(wanted)
    with ExitStack() as stack:
        on_ready: Callable[[], None] | None = None
        if not settings.database_url or not settings.redis_url:
            data_dir = settings.data_dir
            stack.enter_context(hold_data_dir(data_dir))  # before any server is touched
            urls = stack.enter_context(embedded_services(data_dir))
            settings = dataclasses.replace(
                settings,
                database_url=settings.database_url or urls.database_url,
                redis_url=settings.redis_url or urls.redis_url,
            )
            settings = _dev_defaults(settings, data_dir)
            served = settings

            def on_ready() -> None:
                assert served.database_url and served.redis_url
                stack.enter_context(
                    published(data_dir, served.database_url, served.redis_url, served.redis_prefix)
                )

        _require(settings, roles)
        asyncio.run(serve(settings, roles, run_migrations=True, on_ready=on_ready, worker_processes=count))
    return 0


def _require(settings: Settings, roles: Sequence[str]) -> None:
    if "receiver" in roles and not settings.webhook_secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRETS is empty: set at least one whsec_ secret")
    if "api" in roles and not settings.internal_token:
        raise ConfigError("BW_INTERNAL_TOKEN is empty: the internal API needs a bearer token")
    if not settings.database_url or not settings.redis_url:
        raise ConfigError("DATABASE_URL and REDIS_URL must be set for this command")


def _locate(settings: Settings, *, redis: bool) -> Settings:
    """Unset URLs → those of the ``billing-worker run`` serving ``BW_DATA_DIR`` (one-line error if none)."""
    if settings.database_url and (settings.redis_url or not redis):
        return settings
    instance = running_instance(settings.data_dir)
    prefix = settings.redis_prefix if os.environ.get("BW_REDIS_PREFIX", "").strip() else instance.redis_prefix
    log.debug("cli_uses_running_instance", pid=instance.pid, data_dir=instance.data_dir)
    return dataclasses.replace(
        settings,
        database_url=settings.database_url or instance.database_url,
        redis_url=settings.redis_url or instance.redis_url,
        redis_prefix=prefix,
    )


async def _query(settings: Settings, what: str, ident: str, fmt: str) -> int:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        await init_connection(conn)
        if what == "show":
            row = await workspaces.get_workspace(conn, ident)
            if row is None:
                raise NotFound("workspace_not_found", f"no billing state for workspace {ident!r}")
            doc = workspace_json(row, list(await workspaces.open_invoices(conn, ident)))
        else:
            row = await inbox.get_event(conn, ident)
            if row is None:
                raise NotFound("event_not_found", f"no inbox event {ident!r}")
            doc = to_jsonable(dict(row))
        emit(doc, fmt)
        return 0
    finally:
        await conn.close()


def _applying(migration: Migration) -> None:
    print(f"applying migration {migration.version:04d}_{migration.name}", file=sys.stderr, flush=True)


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "run":
        return _run(settings, _roles(args.roles), args.worker_processes)
    if args.command in ROLES:
        _require(settings, [args.command])
        asyncio.run(
            serve(
                settings,
                [args.command],
                stop_at_stdin_eof=getattr(args, "stop_at_stdin_eof", False),
                ready_fd=getattr(args, "ready_fd", None),
            )
        )
        return 0
    if args.command in cli_ops.COMMANDS:
        return asyncio.run(cli_ops.run(_locate(settings, redis=True), args))
    settings = _locate(settings, redis=False)
    assert settings.database_url
    if args.command == "migrate":
        applied = asyncio.run(migrate(settings.database_url, on_apply=_applying))
        emit({"applied": [f"{m.version:04d}_{m.name}" for m in applied]})
        return 0
    ident = args.workspace_id if args.command == "show" else args.event_id
    return asyncio.run(_query(settings, args.command, ident, args.format))


def failure_line(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) for a failure an operator can act on; None for a bug (traceback)."""
    if isinstance(exc, ConfigError | CatalogError):
        return 2, f"configuration error: {exc}"
    if isinstance(exc, EmbeddedServiceError):
        return 1, str(exc).splitlines()[0]
    if isinstance(exc, BillingError):
        return 1, f"{exc.code}: {exc.message}"
    if isinstance(exc, stripe.StripeError):
        return 1, f"Stripe error {type(exc).__name__}: {exc.user_message or exc}"
    if isinstance(exc, RedisError):
        return 1, f"Redis: {exc}"
    if isinstance(exc, asyncpg.PostgresError):
        return 1, f"PostgreSQL: {exc}"
    if isinstance(exc, asyncpg.InterfaceError | ValueError):
        return 2, f"invalid setting: {exc}"
    if isinstance(exc, OSError | TimeoutError):
        return 1, f"cannot reach a server: {exc or type(exc).__name__}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        # A service logs on stdout (its only output); a command keeps stdout for its result.
        if args.command in SERVICE_COMMANDS:
            configure(settings.log_level, process=settings.process_name)
        else:
            configure(settings.log_level, sys.stderr, process=settings.process_name)
            # arq's "redis connection error, N retries remaining" would precede our one line.
            logging.getLogger("arq").setLevel(logging.ERROR)
        return _dispatch(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        failure = failure_line(exc)
        if failure is None or args.debug:
            raise
        print(f"billing-worker: {failure[1]}", file=sys.stderr)
        return failure[0]


if __name__ == "__main__":
    sys.exit(main())
