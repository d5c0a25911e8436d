"""The composition root: the adapters each function runs with, built once per container from
settings, and everything a handler needs.

Handlers import from here only (`tests/unit/test_architecture.py`): a runtime, the flow that
handles their event, and the observability singletons. Tests and the local pipeline hand in
their own runtimes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import boto3
from botocore.config import Config
from pymongo.collection import Collection
from pymongo.database import Database

from distiller.adapters.checkpoints import MongoCheckpointStore
from distiller.adapters.dealnow import MongoDealStore
from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.adapters.endpoint_health import MongoHeldDeliveries, MongoPartnerHealth
from distiller.adapters.file_links import FileLinks
from distiller.adapters.idempotency import IDEMPOTENCY_COLLECTION, MongoIdempotencyStore
from distiller.adapters.leads import MongoLeadStore
from distiller.adapters.lookups import MongoLookups
from distiller.adapters.mailer import SesMailer
from distiller.adapters.mongo import connect_database
from distiller.adapters.payload_store import S3PayloadStore
from distiller.adapters.queues import SqsQueue
from distiller.adapters.rate_limits import MongoRateLimiter
from distiller.adapters.secrets import PartnerSecrets, SecretsManagerSharedSecrets
from distiller.api.data import PartnerData
from distiller.api.lead_routes import LeadServices
from distiller.api.leads import LEADS_COLLECTION
from distiller.api.rate_limit import RATE_LIMITS_COLLECTION, RateLimiter
from distiller.api.routes import ApiLimits, ApiRuntime, app, use_runtime
from distiller.api.sell import Mailer
from distiller.api.sell_routes import SellServices
from distiller.core.lookups import Lookups
from distiller.deliver.claim_check import PayloadStore
from distiller.deliver.dispatch import Dispatcher, RetrySchedule
from distiller.deliver.handler import handle_deliveries, report_pause
from distiller.deliver.health import HELD_COLLECTION
from distiller.deliver.health_handler import handle_health_sweep
from distiller.deliver.log import DELIVERIES_COLLECTION, DeliveryLog
from distiller.deliver.sender import WebhookSender
from distiller.deliver.sweep import HealthSweep
from distiller.ingest.batch import RetryPolicy
from distiller.ingest.handler import handle_ingest
from distiller.observability import logger, metrics, tracer
from distiller.relay.handler import handle_relay
from distiller.relay.loop import Relay
from distiller.relay.stream import CHECKPOINTS_COLLECTION
from distiller.settings import (
    ApiSettings,
    DispatcherSettings,
    DistillerSettings,
    EndpointHealthSettings,
    HealthSweepSettings,
    MongoSettings,
    RelaySettings,
    SettingsError,
)


def payload_store(bucket: str | None) -> PayloadStore | None:
    """The claim-check store, when the stack has a bucket for it."""
    return S3PayloadStore(boto3.client("s3"), bucket) if bucket else None


@dataclass(slots=True)
class DistillerRuntime:
    lookups: Lookups
    delivery_queue: SqsQueue
    ingest_dead_letters: SqsQueue
    file_links: FileLinks | None = None
    payloads: PayloadStore | None = None
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def build(cls, database: Database, settings: DistillerSettings, lookup_ttl: float = 60.0) -> DistillerRuntime:
        sqs = boto3.client("sqs")
        return cls(
            lookups=MongoLookups(database, ttl_seconds=lookup_ttl),
            delivery_queue=SqsQueue(sqs, settings.delivery_queue_url),
            ingest_dead_letters=SqsQueue(sqs, settings.ingest_dead_letter_queue_url),
            file_links=FileLinks(
                boto3.client("s3", config=Config(signature_version="s3v4")),
                settings.documents_bucket,
                settings.documents_key_prefix,
            ),
            payloads=payload_store(settings.claim_check_bucket),
            retry_policy=RetryPolicy(settings.max_receive_count, settings.linked_deal_max_age_seconds),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DistillerRuntime:
        mongo = MongoSettings.from_env(env)
        return cls.build(connect_database(mongo), DistillerSettings.from_env(env), mongo.lookup_ttl_seconds)


@dataclass(slots=True)
class DispatcherRuntime:
    dispatcher: Dispatcher
    dead_letters: SqsQueue
    max_receive_count: int = 5
    partner_metrics: bool = True
    """One EMF blob per partner per batch (`PARTNER_METRICS`); off, only the totals and PartnerPaused."""

    @classmethod
    def build(
        cls,
        database: Database,
        settings: DispatcherSettings,
        lookup_ttl: float = 60.0,
        log_view: Callable[[Collection], DeliveryLog] | None = None,
        health: EndpointHealthSettings | None = None,
    ) -> DispatcherRuntime:
        """`log_view`: the delivery log to use over the collection once it is indexed, instead of
        `MongoDeliveryLog` (`distiller run` answers lookups from memory: mongomock scans).
        `health`: when partners are paused (default: `EndpointHealthSettings`' defaults)."""
        try:
            schedule = RetrySchedule.parse(settings.retry_delays)
        except ValueError as exc:
            raise SettingsError(f"RETRY_DELAYS: {exc}") from exc
        sqs = boto3.client("sqs")
        mongo_log = MongoDeliveryLog(database[DELIVERIES_COLLECTION])
        mongo_log.ensure_indexes(settings.delivery_log_retention_days)
        lookups = MongoLookups(database, ttl_seconds=lookup_ttl)
        dead_letters = SqsQueue(sqs, settings.dead_letter_queue_url)
        dispatcher = Dispatcher(
            partners=lookups.partners,
            secrets=PartnerSecrets(settings.partner_secrets_prefix, settings.secret_cache_seconds),
            sender=WebhookSender(
                timeout_seconds=settings.timeout_seconds,
                allow_private=settings.allow_private_endpoints,
                per_host_connections=settings.per_host_connections,
            ),
            log=log_view(database[DELIVERIES_COLLECTION]) if log_view is not None else mongo_log,
            retry_queue=SqsQueue(sqs, settings.retry_queue_url),
            dead_letter_queue=dead_letters,
            schedule=schedule,
            max_workers=settings.concurrency,
            per_partner=settings.per_host_connections,
            attempt_budget_seconds=settings.timeout_seconds,
            lease_seconds=settings.claim_lease_seconds,
            partner_errors=lambda: lookups.partner_errors,
            payloads=payload_store(settings.claim_check_bucket),
            held=held_deliveries(database),
            health=MongoPartnerHealth(database),
            pause_policy=(health or EndpointHealthSettings()).policy(),
            on_pause=report_pause,
        )
        return cls(
            dispatcher=dispatcher,
            dead_letters=dead_letters,
            max_receive_count=settings.max_receive_count,
            partner_metrics=settings.partner_metrics,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DispatcherRuntime:
        mongo = MongoSettings.from_env(env)
        settings, health = DispatcherSettings.from_env(env), EndpointHealthSettings.from_env(env)
        return cls.build(connect_database(mongo), settings, mongo.lookup_ttl_seconds, health=health)


def held_deliveries(database: Database) -> MongoHeldDeliveries:
    """The held-delivery store, its indexes made (the unique one is what holds a delivery once)."""
    held = MongoHeldDeliveries(database[HELD_COLLECTION])
    held.ensure_indexes()
    return held


@dataclass(slots=True)
class HealthRuntime:
    sweep: HealthSweep

    @classmethod
    def build(
        cls,
        database: Database,
        settings: HealthSweepSettings,
        health: EndpointHealthSettings,
        sqs_client: object = None,
    ) -> HealthRuntime:
        sqs = sqs_client if sqs_client is not None else boto3.client("sqs")
        sweep = HealthSweep(
            partners=MongoLookups(database, ttl_seconds=0).partners,  # pause state read afresh each sweep
            health=MongoPartnerHealth(database),
            held=held_deliveries(database),
            sender=WebhookSender(
                timeout_seconds=settings.timeout_seconds, allow_private=settings.allow_private_endpoints
            ),
            secrets=PartnerSecrets(settings.partner_secrets_prefix, 0),
            log=MongoDeliveryLog(database[DELIVERIES_COLLECTION]),
            delivery_queue=SqsQueue(sqs, settings.delivery_queue_url),
            dead_letters=SqsQueue(sqs, settings.dead_letter_queue_url),
            policy=health.policy(),
            payloads=payload_store(settings.claim_check_bucket),
            attempt_budget_seconds=settings.timeout_seconds,
        )
        return cls(sweep=sweep)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HealthRuntime:
        mongo = MongoSettings.from_env(env)
        settings, health = HealthSweepSettings.from_env(env), EndpointHealthSettings.from_env(env)
        return cls.build(connect_database(mongo), settings, health)


# -- Relay -----------------------------------------------------------------------------------


@dataclass(slots=True)
class RelayRuntime:
    relay: Relay
    max_seconds: float

    @classmethod
    def build(cls, database: Database, settings: RelaySettings, sqs_client: object = None) -> RelayRuntime:
        if sqs_client is None:
            sqs_client = boto3.client("sqs")
        relay = Relay(
            database,
            SqsQueue(sqs_client, settings.ingest_queue_url),
            MongoCheckpointStore(database[CHECKPOINTS_COLLECTION]),
            name=settings.name,
            collections=settings.collections,
            dead_letters=SqsQueue(sqs_client, settings.ingest_dead_letter_queue_url),
            start_at=settings.start_at,
        )
        return cls(relay=relay, max_seconds=settings.max_seconds)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RelayRuntime:
        settings = RelaySettings.from_env(env)
        return cls.build(connect_database(MongoSettings.from_env(env)), settings)


# -- API -------------------------------------------------------------------------------------


def api_runtime_from_env(env: Mapping[str, str] | None = None) -> ApiRuntime:
    """The API's runtime from the environment (deployed); `distiller api` builds its own from files."""
    mongo, settings = MongoSettings.from_env(env), ApiSettings.from_env(env)
    database = connect_database(mongo)
    file_links = FileLinks(
        boto3.client("s3", config=Config(signature_version="s3v4")),
        settings.documents_bucket,
        settings.documents_key_prefix,
    )
    limiter = _rate_limiter(database)
    mailer = SesMailer(boto3.client("sesv2"), settings.ses_from_address) if settings.ses_from_address else None
    return ApiRuntime(
        data=PartnerData(database, file_links),
        partners=MongoLookups(database, ttl_seconds=mongo.lookup_ttl_seconds).partners,
        secrets=SecretsManagerSharedSecrets(settings.partner_secrets_prefix),
        auth=settings.auth,
        replay_queue=SqsQueue(boto3.client("sqs"), settings.delivery_queue_url),
        file_links=file_links,
        payloads=payload_store(settings.claim_check_bucket),
        limiter=limiter,
        limits=api_limits(settings),
        sell=sell_services(database, settings, mailer),
        leads=lead_services(database, settings, limiter),
    )


def sell_services(database: Database, settings: ApiSettings, mailer: Mailer | None) -> SellServices:
    """DealNow initiation over `database` (listings, offers, idempotency keys with their TTL index).
    `distiller api` builds the same with its own mailer."""
    idempotency = MongoIdempotencyStore(database[IDEMPOTENCY_COLLECTION])
    idempotency.ensure_indexes()
    deals = MongoDealStore(database)
    deals.ensure_indexes()
    return SellServices(
        deals=deals,
        idempotency=idempotency,
        dealnow_domain=settings.dealnow_domain,
        app_domain=settings.app_domain,
        mailer=mailer,
        allow_http_redirects=settings.allow_http_redirects,
    )


def lead_services(database: Database, settings: ApiSettings, limiter: RateLimiter) -> LeadServices:
    """Lead ingestion over `database`: the unique (partnerId, callerReferenceId) index is the dedup,
    so it is created before the first request."""
    store = MongoLeadStore(database[LEADS_COLLECTION])
    store.ensure_indexes()
    return LeadServices(store=store, limiter=limiter, default_limit=settings.leads_limit)


def api_limits(settings: ApiSettings) -> ApiLimits:
    """`API_RATE_LIMIT` (every route) and `API_REPLAY_RATE_LIMIT` (replays, on top)."""
    return ApiLimits(requests=settings.request_limit, replays=settings.replay_limit)


def _rate_limiter(database: Database) -> MongoRateLimiter:
    limiter = MongoRateLimiter(database[RATE_LIMITS_COLLECTION])
    limiter.ensure_indexes()
    return limiter


__all__ = [
    "ApiRuntime",
    "DispatcherRuntime",
    "DistillerRuntime",
    "HealthRuntime",
    "RelayRuntime",
    "api_runtime_from_env",
    "app",
    "handle_deliveries",
    "handle_health_sweep",
    "handle_ingest",
    "handle_relay",
    "lead_services",
    "logger",
    "metrics",
    "sell_services",
    "tracer",
    "use_runtime",
]
