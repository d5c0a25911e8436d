"""Building the API's runtime from the environment (deployed) or from local files (`distiller api`)."""

from __future__ import annotations

import boto3
from botocore.config import Config
from pymongo.database import Database

from distiller.adapters.file_links import FileLinks
from distiller.adapters.lookups import MongoLookups
from distiller.adapters.mongo import connect_database
from distiller.adapters.queues import SqsQueue
from distiller.adapters.secrets import DEFAULT_PREFIX, SecretsManagerSharedSecrets
from distiller.api.auth import AuthSettings
from distiller.api.data import PartnerData
from distiller.api.rate_limit import RATE_LIMITS_COLLECTION, MongoRateLimiter, RateLimit
from distiller.api.routes import DEFAULT_REPLAY_LIMIT, DEFAULT_REQUEST_LIMIT, ApiLimits, ApiRuntime
from distiller.runtime import payload_store
from distiller.settings import Env, MongoSettings, SettingsError


def api_runtime_from_env() -> ApiRuntime:
    env = Env(None)
    database = connect_database(MongoSettings.from_env())
    file_links = FileLinks(
        boto3.client("s3", config=Config(signature_version="s3v4")),
        env.required("DOCUMENTS_BUCKET", "S3 bucket holding deal documents, for signed links"),
        env.text("DOCUMENTS_KEY_PREFIX", ""),
    )
    return ApiRuntime(
        data=PartnerData(database, file_links),
        partners=MongoLookups(database, ttl_seconds=env.number("LOOKUP_TTL_SECONDS", 60.0)).partners,
        secrets=SecretsManagerSharedSecrets(env.text("PARTNER_SECRETS_PREFIX", DEFAULT_PREFIX)),
        auth=AuthSettings(
            max_lifetime_seconds=int(env.number("JWT_MAX_LIFETIME_SECONDS", 900, minimum=1)),
            leeway_seconds=int(env.number("JWT_LEEWAY_SECONDS", 30)),
        ),
        replay_queue=SqsQueue(boto3.client("sqs"), env.required("DELIVERY_QUEUE_URL", "URL of the delivery queue")),
        file_links=file_links,
        payloads=payload_store(env.text("CLAIM_CHECK_BUCKET", "") or None),
        limiter=_rate_limiter(database),
        limits=api_limits(env),
    )


def api_limits(env: Env) -> ApiLimits:
    """`API_RATE_LIMIT` (every route) and `API_REPLAY_RATE_LIMIT`, each `requests/seconds`."""
    return ApiLimits(
        requests=_rate_limit(env, "API_RATE_LIMIT", DEFAULT_REQUEST_LIMIT),
        replays=_rate_limit(env, "API_REPLAY_RATE_LIMIT", DEFAULT_REPLAY_LIMIT),
    )


def _rate_limit(env: Env, name: str, default: RateLimit) -> RateLimit:
    raw = env.text(name, "")
    if not raw:
        return default
    try:
        return RateLimit.parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _rate_limiter(database: Database) -> MongoRateLimiter:
    limiter = MongoRateLimiter(database[RATE_LIMITS_COLLECTION])
    limiter.ensure_indexes()
    return limiter
