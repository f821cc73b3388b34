"""Settings read from the environment, once, into one explicit object.

Every variable the service reads is declared in ``ENV_VARS`` so the README table, the deploy
files and a test can all be checked against a single list.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: str | None
    description: str


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar(
        "DATABASE_URL",
        None,
        "PostgreSQL URL. Unset: the embedded PostgreSQL under BW_DATA_DIR is started.",
    ),
    EnvVar("REDIS_URL", None, "Redis URL. Unset: the embedded Redis under BW_DATA_DIR is started."),
    EnvVar(
        "STRIPE_WEBHOOK_SECRETS",
        None,
        "Comma-separated `whsec_…` endpoint secrets; every one is tried (secret rotation).",
    ),
    EnvVar(
        "STRIPE_API_KEY", None, "Stripe secret key for outgoing calls (plan changes, refetch, thin events)."
    ),
    EnvVar("STRIPE_API_BASE", None, "Override of Stripe's API base URL (a local emulator)."),
    EnvVar("BW_CATALOG_PATH", None, "Plan catalog TOML. Unset: the example catalog shipped."),
    EnvVar("BW_DATA_DIR", ".billing-worker", "Folder of the embedded servers' data."),
    EnvVar("BW_RECEIVER_HOST", "0.0.0.0", "Public webhook receiver bind address."),
    EnvVar("BW_RECEIVER_PORT", "8080", "Public webhook receiver port."),
    EnvVar("BW_INTERNAL_HOST", "127.0.0.1", "Internal API bind address."),
    EnvVar("BW_INTERNAL_PORT", "8081", "Internal API port."),
    EnvVar("BW_INTERNAL_TOKEN", None, "Bearer token of the internal API (required)."),
    EnvVar("BW_MAX_BODY_BYTES", "1048576", "Largest webhook body accepted (413 above)."),
    EnvVar("BW_WEBHOOK_TOLERANCE_SECONDS", "300", "Largest accepted age of a signature timestamp."),
    EnvVar("BW_REDIS_PREFIX", "billing", "Prefix of the queue name and job ids in Redis."),
    EnvVar("BW_MAX_JOBS", "100", "Concurrent jobs per worker process (arq's default is 10)."),
    EnvVar("BW_JOB_TIMEOUT_SECONDS", "60", "Time limit of one job."),
    EnvVar(
        "BW_MAX_TRIES",
        "8",
        "Tries of one event (counted on its inbox row) or plan-change job before it is given up.",
    ),
    EnvVar(
        "BW_POLL_DELAY_SECONDS",
        "0.02",
        "How often a worker polls Redis for due jobs (a queued job waits half of it on average).",
    ),
    EnvVar("BW_LOCK_TIMEOUT_MS", "5000", "Wait for a workspace row lock before retrying later."),
    EnvVar("BW_SWEEP_RECEIVED_AFTER_SECONDS", "60", "Re-enqueue inbox events still `received` after this."),
    EnvVar(
        "BW_UNMATCHED_RETRY_SECONDS",
        "5,30,120,600,3600",
        "Backoff of unmatched events; once it is used up they are dead-lettered.",
    ),
    EnvVar("BW_SWEEP_INTERVAL_SECONDS", "10", "How often the inbox sweep runs (a divisor of 60)."),
    EnvVar("BW_SWEEP_BATCH_SIZE", "1000", "Most inbox events one sweep run re-enqueues."),
    EnvVar("BW_REQUEST_TIMEOUT_SECONDS", "30", "Time limit of one HTTP request on either port (408 above)."),
    EnvVar("BW_MAX_HEADER_BYTES", "8190", "Longest request line / header field accepted (431 / 400 above)."),
    EnvVar(
        "BW_WORKER_METRICS_PORT",
        "9102",
        "Port of /metrics, /livez and /readyz in a process without the internal API (a worker, a receiver alone); 0: none.",
    ),
    EnvVar(
        "BW_WORKER_PROCESSES",
        "auto",
        "Worker processes `billing-worker run` starts beside its receiver + API process "
        "(`--worker-processes`); auto: half the usable CPUs, at least 1; 0: the worker runs in the main process.",
    ),
    EnvVar(
        "BW_PROCESS_NAME",
        "main",
        "The `process` key of every log line; `billing-worker run` names its worker processes `worker-1`, `worker-2`, ….",
    ),
    EnvVar("BW_DB_POOL_SIZE", "20", "PostgreSQL connections per process."),
    EnvVar("BW_LOG_LEVEL", "info", "debug, info, warning or error."),
    EnvVar(
        "BW_LOG_BATCH_MS",
        "20",
        "Longest wait of a log line for the next ones, to be written together (0: each at once).",
    ),
    EnvVar(
        "BW_TRACING",
        None,
        "1: send OpenTelemetry traces (OTLP over HTTP, `tracing` extra); 0: never. "
        "Unset: on when OTEL_EXPORTER_OTLP_ENDPOINT is set.",
    ),
    EnvVar(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        None,
        "OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`); setting it turns tracing on.",
    ),
    EnvVar("OTEL_SERVICE_NAME", "billing-worker", "The traces' `service.name`."),
)

_DEFAULTS = {v.name: v.default for v in ENV_VARS}


def _divisor_of_60(seconds: int) -> int:
    """arq cron fires on wall-clock seconds: only divisors of 60 give even intervals."""
    if 60 % seconds:
        raise ConfigError(f"BW_SWEEP_INTERVAL_SECONDS must divide 60 (1, 2, 3, 5, 10, …), got {seconds}")
    return seconds


def parse_worker_processes(value: str, name: str = "--worker-processes") -> int | None:
    """A count of worker processes, ``auto`` (None) or a number >= 0 (0: none beside the main one)."""
    if value.strip().lower() == "auto":
        return None
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be auto or a number of processes >= 0, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must be auto or a number of processes >= 0, got {number}")
    return number


class _EnvReader:
    """Reads and checks one variable at a time; a blank value means the declared default."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return _DEFAULTS[name]
        return value.strip()

    def integer(self, name: str, minimum: int = 0) -> int:
        value = self.raw(name)
        try:
            number = int(value or "")
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {number}")
        return number

    def decimal_seconds(self, name: str) -> float:
        value = self.raw(name)
        try:
            number = float(value or "")
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
        if number <= 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
        return number

    def secrets(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in (self.raw("STRIPE_WEBHOOK_SECRETS") or "").split(",") if s.strip())

    def backoff(self) -> tuple[int, ...]:
        try:
            return tuple(int(s) for s in (self.raw("BW_UNMATCHED_RETRY_SECONDS") or "").split(","))
        except ValueError:
            raise ConfigError(
                "BW_UNMATCHED_RETRY_SECONDS must be comma-separated integers, "
                f"got {self.raw('BW_UNMATCHED_RETRY_SECONDS')!r}"
            ) from None

    def tracing(self) -> bool:
        value = (self.raw("BW_TRACING") or "").lower()
        if value in {"", "auto"}:
            return self.raw("OTEL_EXPORTER_OTLP_ENDPOINT") is not None
        if value not in {"0", "1", "true", "false"}:
            raise ConfigError(f"BW_TRACING must be 1 or 0, got {value!r}")
        return value in {"1", "true"}

    def worker_processes(self) -> int | None:
        """None: the default of ``billing-worker run`` (worker/runner_processes.py), from the CPUs."""
        return parse_worker_processes(self.raw("BW_WORKER_PROCESSES") or "auto", "BW_WORKER_PROCESSES")

    def log_level(self) -> str:
        level = (self.raw("BW_LOG_LEVEL") or "info").lower()
        if level not in {"debug", "info", "warning", "error"}:
            raise ConfigError(f"BW_LOG_LEVEL must be debug, info, warning or error, got {level!r}")
        return level


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    redis_url: str | None
    webhook_secrets: tuple[str, ...]
    stripe_api_key: str | None
    stripe_api_base: str | None
    catalog_path: Path | None
    data_dir: Path
    receiver_host: str
    receiver_port: int
    internal_host: str
    internal_port: int
    internal_token: str | None
    max_body_bytes: int
    webhook_tolerance_seconds: int
    redis_prefix: str
    max_jobs: int
    job_timeout_seconds: int
    max_tries: int
    poll_delay_seconds: float
    lock_timeout_ms: int
    sweep_received_after_seconds: int
    unmatched_retry_seconds: tuple[int, ...]
    sweep_interval_seconds: int
    sweep_batch_size: int
    request_timeout_seconds: int
    max_header_bytes: int
    worker_metrics_port: int
    db_pool_size: int
    log_level: str
    log_batch_ms: int = 20
    tracing: bool = False
    service_name: str = "billing-worker"
    worker_processes: int | None = None  # None: from the CPUs (worker/runner_processes.py)
    process_name: str = "main"

    @property
    def queue_name(self) -> str:
        return f"{self.redis_prefix}:queue"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        read = _EnvReader(os.environ if env is None else env)
        # Read before the integers, so that the first malformed variable reported stays the same.
        secrets, backoff, level = read.secrets(), read.backoff(), read.log_level()
        catalog = read.raw("BW_CATALOG_PATH")
        return cls(
            database_url=read.raw("DATABASE_URL"),
            redis_url=read.raw("REDIS_URL"),
            webhook_secrets=secrets,
            stripe_api_key=read.raw("STRIPE_API_KEY"),
            stripe_api_base=read.raw("STRIPE_API_BASE"),
            catalog_path=Path(catalog) if catalog else None,
            data_dir=Path(read.raw("BW_DATA_DIR") or ".billing-worker"),
            receiver_host=read.raw("BW_RECEIVER_HOST") or "0.0.0.0",
            receiver_port=read.integer("BW_RECEIVER_PORT"),
            internal_host=read.raw("BW_INTERNAL_HOST") or "127.0.0.1",
            internal_port=read.integer("BW_INTERNAL_PORT"),
            internal_token=read.raw("BW_INTERNAL_TOKEN"),
            max_body_bytes=read.integer("BW_MAX_BODY_BYTES", 1024),
            webhook_tolerance_seconds=read.integer("BW_WEBHOOK_TOLERANCE_SECONDS", 1),
            redis_prefix=read.raw("BW_REDIS_PREFIX") or "billing",
            max_jobs=read.integer("BW_MAX_JOBS", 1),
            job_timeout_seconds=read.integer("BW_JOB_TIMEOUT_SECONDS", 1),
            max_tries=read.integer("BW_MAX_TRIES", 1),
            poll_delay_seconds=read.decimal_seconds("BW_POLL_DELAY_SECONDS"),
            lock_timeout_ms=read.integer("BW_LOCK_TIMEOUT_MS", 1),
            sweep_received_after_seconds=read.integer("BW_SWEEP_RECEIVED_AFTER_SECONDS", 1),
            unmatched_retry_seconds=backoff,
            sweep_interval_seconds=_divisor_of_60(read.integer("BW_SWEEP_INTERVAL_SECONDS", 1)),
            sweep_batch_size=read.integer("BW_SWEEP_BATCH_SIZE", 1),
            request_timeout_seconds=read.integer("BW_REQUEST_TIMEOUT_SECONDS", 1),
            max_header_bytes=read.integer("BW_MAX_HEADER_BYTES", 1024),
            worker_metrics_port=read.integer("BW_WORKER_METRICS_PORT"),
            db_pool_size=read.integer("BW_DB_POOL_SIZE", 2),
            log_level=level,
            log_batch_ms=read.integer("BW_LOG_BATCH_MS"),
            tracing=read.tracing(),
            service_name=read.raw("OTEL_SERVICE_NAME") or "billing-worker",
            worker_processes=read.worker_processes(),
            process_name=read.raw("BW_PROCESS_NAME") or "main",
        )

    def require_service_settings(self) -> None:
        """The receiver cannot verify anything without a secret, nor guard the API without a token."""
        if not self.webhook_secrets:
            raise ConfigError("STRIPE_WEBHOOK_SECRETS is empty: set at least one whsec_ secret")
        if not self.internal_token:
            raise ConfigError("BW_INTERNAL_TOKEN is empty: the internal API needs a bearer token")
