"""Function settings, read from the environment once and validated at cold start.

A missing or malformed setting fails the first invocation loudly with its name, instead of
surfacing as a confusing error in the middle of a batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from distiller.adapters.secrets import DEFAULT_PREFIX


class SettingsError(RuntimeError):
    """A required setting is missing or malformed; the message names the variable."""


class Env:
    def __init__(self, env: Mapping[str, str] | None) -> None:
        self._env = dict(os.environ) if env is None else dict(env)

    def required(self, name: str, what: str) -> str:
        value = self._env.get(name, "").strip()
        if not value:
            raise SettingsError(f"{name}: required ({what})")
        return value

    def text(self, name: str, default: str) -> str:
        return self._env.get(name, "").strip() or default

    def number(self, name: str, default: float, minimum: float = 0) -> float:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError as exc:
            raise SettingsError(f"{name}: not a number: {raw!r}") from exc
        if value < minimum:
            raise SettingsError(f"{name}: must be >= {minimum:g}")
        return value

    def flag(self, name: str) -> bool:
        raw = self._env.get(name, "").strip().lower()
        if raw in ("", "0", "false", "no", "off"):
            return False
        if raw in ("1", "true", "yes", "on"):
            return True
        raise SettingsError(f"{name}: expected true or false, got {raw!r}")


@dataclass(frozen=True, slots=True)
class MongoSettings:
    uri_secret: str
    """Secrets Manager name/ARN holding the MongoDB connection string (never the URI itself)."""
    database: str = "privateauto"
    lookup_ttl_seconds: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        e = Env(env)
        return cls(
            uri_secret=e.required("MONGODB_URI_SECRET", "Secrets Manager name or ARN of the Mongo URI"),
            database=e.text("MONGODB_DATABASE", "privateauto"),
            lookup_ttl_seconds=e.number("LOOKUP_TTL_SECONDS", 60.0),
        )


MAX_RECEIVE_COUNT = 5
"""The queues' `maxReceiveCount` (template.yaml): the receive on which a handler parks instead of failing."""


@dataclass(frozen=True, slots=True)
class DistillerSettings:
    delivery_queue_url: str
    ingest_dead_letter_queue_url: str
    documents_bucket: str
    documents_key_prefix: str = ""
    claim_check_bucket: str | None = None
    max_receive_count: int = MAX_RECEIVE_COUNT
    linked_deal_max_age_seconds: float = 3600.0
    """How long a record whose linked deal is not visible yet is retried before it is parked."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        e = Env(env)
        return cls(
            delivery_queue_url=e.required("DELIVERY_QUEUE_URL", "URL of the delivery queue"),
            ingest_dead_letter_queue_url=e.required("INGEST_DLQ_URL", "URL of the ingest dead-letter queue"),
            documents_bucket=e.required("DOCUMENTS_BUCKET", "S3 bucket holding deal documents, for signed links"),
            documents_key_prefix=e.text("DOCUMENTS_KEY_PREFIX", ""),
            claim_check_bucket=e.text("CLAIM_CHECK_BUCKET", "") or None,
            max_receive_count=int(e.number("MAX_RECEIVE_COUNT", MAX_RECEIVE_COUNT, minimum=1)),
            linked_deal_max_age_seconds=e.number("LINKED_DEAL_MAX_AGE_SECONDS", 3600.0),
        )


@dataclass(frozen=True, slots=True)
class DispatcherSettings:
    retry_queue_url: str
    dead_letter_queue_url: str
    retry_delays: str = "60,300,900"
    allow_private_endpoints: bool = False
    partner_secrets_prefix: str = DEFAULT_PREFIX
    secret_cache_seconds: int = 30
    timeout_seconds: float = 10.0
    per_host_connections: int = 4
    concurrency: int = 16
    delivery_log_retention_days: int = 30
    claim_check_bucket: str | None = None
    max_receive_count: int = MAX_RECEIVE_COUNT
    claim_lease_seconds: float = 120.0
    """How long an attempt stays claimed: longer than the function may run (template: 90 s)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        e = Env(env)
        return cls(
            retry_queue_url=e.required("RETRY_QUEUE_URL", "URL of the retry queue"),
            dead_letter_queue_url=e.required("DELIVERY_DLQ_URL", "URL of the delivery dead-letter queue"),
            retry_delays=e.text("RETRY_DELAYS", "60,300,900"),
            allow_private_endpoints=e.flag("ALLOW_PRIVATE_ENDPOINTS"),
            partner_secrets_prefix=e.text("PARTNER_SECRETS_PREFIX", DEFAULT_PREFIX),
            secret_cache_seconds=int(e.number("SECRET_CACHE_SECONDS", 30)),
            timeout_seconds=e.number("DELIVERY_TIMEOUT_SECONDS", 10.0, minimum=0.1),
            per_host_connections=int(e.number("PER_HOST_CONNECTIONS", 4, minimum=1)),
            concurrency=int(e.number("DISPATCH_CONCURRENCY", 16, minimum=1)),
            delivery_log_retention_days=int(e.number("DELIVERY_LOG_RETENTION_DAYS", 30, minimum=1)),
            claim_check_bucket=e.text("CLAIM_CHECK_BUCKET", "") or None,
            max_receive_count=int(e.number("MAX_RECEIVE_COUNT", MAX_RECEIVE_COUNT, minimum=1)),
            claim_lease_seconds=e.number("CLAIM_LEASE_SECONDS", 120.0, minimum=1),
        )
