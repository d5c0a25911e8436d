"""Every function's settings, read from the environment once and validated at cold start.

One pydantic model per concern; each field's alias is its environment variable, so the names the
template sets and the names read here are one list (`tests/unit/test_settings.py` feeds the
template's own `Environment.Variables` to every function's settings). A missing or malformed
setting fails the first invocation loudly with the variable's name, instead of surfacing as a
confusing error in the middle of a batch. An empty value means unset (the template passes ""
for optional parameters).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distiller.adapters.secrets import DEFAULT_PREFIX
from distiller.api.auth import AuthSettings
from distiller.api.rate_limit import DEFAULT_LEADS_LIMIT, DEFAULT_REPLAY_LIMIT, DEFAULT_REQUEST_LIMIT, RateLimit
from distiller.deliver.health import PausePolicy
from distiller.relay.stream import DEFAULT_COLLECTIONS, DEFAULT_RELAY_NAME, StartAt, parse_start_at

MAX_RECEIVE_COUNT = 5
"""The queues' `maxReceiveCount` (template.yaml): the receive on which a handler parks instead of failing."""


class SettingsError(RuntimeError):
    """A required setting is missing or malformed; the message names the variable."""


_DOMAIN = re.compile(r"(?!app\.)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+")
"""A lower-case domain name of two labels or more; links add the `app.` label themselves."""


class _FromEnv(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True, populate_by_name=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """The settings from `env` (default: `os.environ`); `SettingsError` naming every bad variable."""
        source = os.environ if env is None else env
        values = {name: value for name, value in source.items() if isinstance(value, str) and value.strip()}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError("; ".join(_problem(cls, error) for error in exc.errors())) from None

    @classmethod
    def variables(cls) -> dict[str, bool]:
        """Every environment variable this reads, and whether it is required."""
        return {str(field.alias): field.is_required() for field in cls.model_fields.values()}


def _problem(model: type[BaseModel], error: Any) -> str:
    name = str(error["loc"][0]) if error.get("loc") else model.__name__
    field = next((f for f in model.model_fields.values() if f.alias == name), None)
    what = f" ({field.description})" if field is not None and field.description and error["type"] == "missing" else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{name}: {'required' if error['type'] == 'missing' else message}{what}"


def _env(name: str, description: str, default: Any = ..., **constraints: Any) -> Any:
    return Field(default, alias=name, description=description, **constraints)


Seconds = Annotated[float, Field(ge=0)]


class MongoSettings(_FromEnv):
    uri_secret: str = _env("MONGODB_URI_SECRET", "Secrets Manager name or ARN of the Mongo URI (never the URI)")
    database: str = _env("MONGODB_DATABASE", "database name", "privateauto")
    lookup_ttl_seconds: Seconds = _env("LOOKUP_TTL_SECONDS", "how long partner records and lookups are cached", 60.0)


class DistillerSettings(_FromEnv):
    delivery_queue_url: str = _env("DELIVERY_QUEUE_URL", "URL of the delivery queue")
    ingest_dead_letter_queue_url: str = _env("INGEST_DLQ_URL", "URL of the ingest dead-letter queue")
    documents_bucket: str = _env("DOCUMENTS_BUCKET", "S3 bucket holding deal documents, for signed links")
    documents_key_prefix: str = _env("DOCUMENTS_KEY_PREFIX", "key prefix of deal documents", "")
    claim_check_bucket: str | None = _env("CLAIM_CHECK_BUCKET", "bucket for payloads too large for SQS", None)
    max_receive_count: int = _env("MAX_RECEIVE_COUNT", "the ingest queue's maxReceiveCount", MAX_RECEIVE_COUNT, ge=1)
    linked_deal_max_age_seconds: Seconds = _env(
        "LINKED_DEAL_MAX_AGE_SECONDS", "how long a record waits for its linked deal to appear", 3600.0
    )


class DispatcherSettings(_FromEnv):
    retry_queue_url: str = _env("RETRY_QUEUE_URL", "URL of the retry queue")
    dead_letter_queue_url: str = _env("DELIVERY_DLQ_URL", "URL of the delivery dead-letter queue")
    retry_delays: str = _env("RETRY_DELAYS", "seconds before each retry, comma-separated", "60,300,900")
    allow_private_endpoints: bool = _env("ALLOW_PRIVATE_ENDPOINTS", "local runs only: allow loopback", False)
    partner_secrets_prefix: str = _env("PARTNER_SECRETS_PREFIX", "Secrets Manager prefix", DEFAULT_PREFIX)
    secret_cache_seconds: int = _env("SECRET_CACHE_SECONDS", "webhook secret cache", 3600, ge=0)
    timeout_seconds: float = _env("DELIVERY_TIMEOUT_SECONDS", "per-attempt budget", 10.0, ge=0.1)
    per_host_connections: int = _env("PER_HOST_CONNECTIONS", "concurrent POSTs per partner host", 10, ge=1)
    concurrency: int = _env("DISPATCH_CONCURRENCY", "concurrent POSTs per instance (>= the SQS BatchSize)", 50, ge=1)
    delivery_log_retention_days: int = _env("DELIVERY_LOG_RETENTION_DAYS", "delivery log TTL", 30, ge=1)
    claim_check_bucket: str | None = _env("CLAIM_CHECK_BUCKET", "bucket for payloads too large for SQS", None)
    max_receive_count: int = _env("MAX_RECEIVE_COUNT", "the queues' maxReceiveCount", MAX_RECEIVE_COUNT, ge=1)
    claim_lease_seconds: float = _env(
        "CLAIM_LEASE_SECONDS", "how long an attempt stays claimed: longer than the function may run", 120.0, ge=1
    )
    partner_metrics: bool = _env("PARTNER_METRICS", "per-partner metrics (one EMF blob per partner per batch)", True)


class EndpointHealthSettings(_FromEnv):
    """When a failing partner is paused, how often it is probed and how long its deliveries are held
    (`deliver/health.py`): read by the Dispatcher and the health sweep alike."""

    pause_after_dead_letters: int = _env(
        "PAUSE_AFTER_DEAD_LETTERS", "consecutive dead letters that pause a partner (0: never)", 5, ge=0
    )
    pause_after_failing_hours: float = _env(
        "PAUSE_AFTER_FAILING_HOURS", "hours of nothing but failed attempts that pause a partner (0: never)", 24.0, ge=0
    )
    probe_seconds: int = _env("HEALTH_PROBE_SECONDS", "least seconds between probes of a paused partner", 300, ge=60)
    held_retention_days: int = _env(
        "HELD_RETENTION_DAYS", "days a delivery stays held before it is dead-lettered", 14, ge=1, le=14
    )

    def policy(self) -> PausePolicy:
        return PausePolicy(
            dead_letters=self.pause_after_dead_letters,
            failing_hours=self.pause_after_failing_hours,
            probe_seconds=self.probe_seconds,
            retention_days=self.held_retention_days,
        )


class HealthSweepSettings(_FromEnv):
    delivery_queue_url: str = _env("DELIVERY_QUEUE_URL", "URL of the delivery queue (drained held deliveries)")
    dead_letter_queue_url: str = _env("DELIVERY_DLQ_URL", "URL of the delivery dead-letter queue (expired holds)")
    partner_secrets_prefix: str = _env("PARTNER_SECRETS_PREFIX", "Secrets Manager prefix", DEFAULT_PREFIX)
    timeout_seconds: float = _env("DELIVERY_TIMEOUT_SECONDS", "per-probe budget", 10.0, ge=0.1)
    allow_private_endpoints: bool = _env("ALLOW_PRIVATE_ENDPOINTS", "local runs only: allow loopback", False)
    claim_check_bucket: str | None = _env("CLAIM_CHECK_BUCKET", "bucket of claim-checked payloads", None)


class ApiSettings(_FromEnv):
    delivery_queue_url: str = _env("DELIVERY_QUEUE_URL", "URL of the delivery queue (replays)")
    documents_bucket: str = _env("DOCUMENTS_BUCKET", "S3 bucket holding deal documents, for signed links")
    documents_key_prefix: str = _env("DOCUMENTS_KEY_PREFIX", "key prefix of deal documents", "")
    partner_secrets_prefix: str = _env("PARTNER_SECRETS_PREFIX", "Secrets Manager prefix", DEFAULT_PREFIX)
    claim_check_bucket: str | None = _env("CLAIM_CHECK_BUCKET", "bucket for replayed payloads too large", None)
    jwt_max_lifetime_seconds: int = _env("JWT_MAX_LIFETIME_SECONDS", "longest accepted token lifetime", 900, ge=1)
    jwt_leeway_seconds: int = _env("JWT_LEEWAY_SECONDS", "clock skew tolerated on exp/iat/nbf", 30, ge=0)
    request_limit: RateLimit = _env("API_RATE_LIMIT", "requests per partner, requests/seconds", DEFAULT_REQUEST_LIMIT)
    replay_limit: RateLimit = _env(
        "API_REPLAY_RATE_LIMIT", "replays per partner, requests/seconds", DEFAULT_REPLAY_LIMIT
    )
    leads_limit: RateLimit = _env(
        "LEADS_RATE_LIMIT", "lead submissions per partner without leadsRateLimit, requests/seconds", DEFAULT_LEADS_LIMIT
    )
    dealnow_domain: str = _env("DEALNOW_DOMAIN", "DealNow links: https://app.<this>/...", "dealnow.com", min_length=3)
    app_domain: str = _env(
        "APP_DOMAIN", "PrivateAuto app links: https://app.<this>/...", "privateauto.com", min_length=3
    )
    ses_from_address: str | None = _env("SES_FROM_ADDRESS", "sender of DealNow link emails (unset: none sent)", None)
    allow_http_redirects: bool = _env(
        "ALLOW_PRIVATE_ENDPOINTS", "local runs only: GET /sell may redirect to http://", False
    )

    @field_validator("dealnow_domain", "app_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not _DOMAIN.fullmatch(value):
            raise ValueError("expected a bare domain name such as example.com (no scheme, path or app. prefix)")
        return value

    @field_validator("request_limit", "replay_limit", "leads_limit", mode="before")
    @classmethod
    def _rate_limit(cls, value: Any) -> Any:
        return RateLimit.parse(value) if isinstance(value, str) else value

    @property
    def auth(self) -> AuthSettings:
        return AuthSettings(max_lifetime_seconds=self.jwt_max_lifetime_seconds, leeway_seconds=self.jwt_leeway_seconds)


class RelaySettings(_FromEnv):
    ingest_queue_url: str = _env("INGEST_QUEUE_URL", "URL of the ingest queue")
    ingest_dead_letter_queue_url: str = _env("INGEST_DLQ_URL", "where a change too big for SQS is parked")
    collections: tuple[str, ...] = _env(
        "RELAY_COLLECTIONS", "collections to watch, comma-separated", DEFAULT_COLLECTIONS
    )
    max_seconds: float = _env("RELAY_MAX_SECONDS", "how long one invocation reads", 50.0, ge=1)
    name: str = _env("RELAY_NAME", "the checkpoint's name", DEFAULT_RELAY_NAME)
    start_at: StartAt | None = _env(
        "RELAY_START_AT", "where to start without a checkpoint (unset: refuse to guess)", None
    )

    @field_validator("collections", mode="before")
    @classmethod
    def _collections(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(name.strip() for name in value.split(",") if name.strip())
            if not value:
                raise ValueError("needs at least one collection name")
        return value

    @field_validator("start_at", mode="before")
    @classmethod
    def _start_at(cls, value: Any) -> Any:
        return parse_start_at(value) if isinstance(value, str) else value


__all__ = [
    "MAX_RECEIVE_COUNT",
    "ApiSettings",
    "DispatcherSettings",
    "DistillerSettings",
    "MongoSettings",
    "RelaySettings",
    "SettingsError",
]
