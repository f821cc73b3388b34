"""PostgreSQL connection pool with JSON codecs; transient-error classification."""

from __future__ import annotations

from typing import Any

import asyncpg

from worker import json_codec


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
