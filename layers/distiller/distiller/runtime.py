"""The adapters each function runs with, built once per container from settings.

Handlers take a runtime from here; tests and the local pipeline hand in their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import boto3
from botocore.config import Config
from pymongo.database import Database

from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.adapters.file_links import FileLinks
from distiller.adapters.lookups import MongoLookups
from distiller.adapters.mongo import connect_database
from distiller.adapters.payload_store import S3PayloadStore
from distiller.adapters.queues import SqsQueue
from distiller.adapters.secrets import PartnerSecrets
from distiller.core.lookups import Lookups
from distiller.deliver.claim_check import PayloadStore
from distiller.deliver.dispatch import Dispatcher, RetrySchedule
from distiller.deliver.log import DELIVERIES_COLLECTION
from distiller.deliver.sender import WebhookSender
from distiller.ingest.batch import RetryPolicy
from distiller.settings import DispatcherSettings, DistillerSettings, MongoSettings, SettingsError


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

    @classmethod
    def build(cls, database: Database, settings: DispatcherSettings, lookup_ttl: float = 60.0) -> DispatcherRuntime:
        try:
            schedule = RetrySchedule.parse(settings.retry_delays)
        except ValueError as exc:
            raise SettingsError(f"RETRY_DELAYS: {exc}") from exc
        sqs = boto3.client("sqs")
        log = MongoDeliveryLog(database[DELIVERIES_COLLECTION])
        log.ensure_indexes(settings.delivery_log_retention_days)
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
            log=log,
            retry_queue=SqsQueue(sqs, settings.retry_queue_url),
            dead_letter_queue=dead_letters,
            schedule=schedule,
            max_workers=settings.concurrency,
            attempt_budget_seconds=settings.timeout_seconds,
            lease_seconds=settings.claim_lease_seconds,
            partner_errors=lambda: lookups.partner_errors,
            payloads=payload_store(settings.claim_check_bucket),
        )
        return cls(dispatcher=dispatcher, dead_letters=dead_letters, max_receive_count=settings.max_receive_count)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DispatcherRuntime:
        mongo = MongoSettings.from_env(env)
        return cls.build(connect_database(mongo), DispatcherSettings.from_env(env), mongo.lookup_ttl_seconds)
