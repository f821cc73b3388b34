"""PostgreSQL connection pool with JSON codecs; transient-error classification."""

from __future__ import annotations

from typing import Any

import asyncpg

from worker.infra import json_codec


async def init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=json_codec.dumps, decoder=json_codec.loads, schema="pg_catalog"
        )


async def keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (``RESET ALL; UNLISTEN *; …``: a round trip and
    server work on every pool use). Safe because no pooled connection carries session state:
    settings are ``SET LOCAL`` inside transactions, nothing LISTENs, and the one session advisory
    lock (backfill) lives on its own connection. asyncpg still rolls back an open transaction."""


# Set at the start of each transaction that reads and locks rows by key (event batches, sweeps,
# API writes), in one round trip. Lock waits are bounded: a busy row means a retry, not a hang.
# Sequential scans are off because PostgreSQL fixes a statement's plan after its first executions
# on a connection: made on a young table (a new deployment), it can be a sequential scan that
# stays one as the table grows, until autovacuum's next ANALYZE invalidates it. bench.e2e showed
# one such scan of ``workspaces`` per batch (1.4 ms of a 1.5 ms lock statement, 6,000 rows, no
# ANALYZE yet). Where no index serves a query, PostgreSQL still scans: this only rules out the
# choice.
_KEYED_TRANSACTION = "SELECT set_config('lock_timeout', $1, true), set_config('enable_seqscan', 'off', true)"


async def begin_keyed(conn: asyncpg.Connection, lock_timeout_ms: int) -> None:
    """Settings of a transaction that works on rows found by key (see ``_KEYED_TRANSACTION``)."""
    await conn.execute(_KEYED_TRANSACTION, f"{int(lock_timeout_ms)}ms")


async def create_pool(url: str, size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=size,
        init=init_connection,
        reset=keep_session,
        command_timeout=30,
        **kwargs,
    )


# Errors worth a later retry: the database was unreachable, restarting, or busy.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.QueryCanceledError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_DB_ERRORS)
