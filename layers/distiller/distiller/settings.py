"""Function settings, read from the environment once and validated at cold start.

A missing or malformed setting fails the first invocation loudly with its name, instead of
surfacing as a confusing error in the middle of a batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Self


class SettingsError(RuntimeError):
    """A required setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, slots=True)
class MongoSettings:
    uri_secret: str
    """Secrets Manager name/ARN holding the MongoDB connection string (never the URI itself)."""
    database: str = "privateauto"
    lookup_ttl_seconds: float = 60.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Self:
        env = dict(os.environ) if env is None else env
        secret = env.get("MONGODB_URI_SECRET", "").strip()
        if not secret:
            raise SettingsError("MONGODB_URI_SECRET: required (Secrets Manager name or ARN of the Mongo URI)")
        try:
            ttl = float(env.get("LOOKUP_TTL_SECONDS", "60"))
        except ValueError as exc:
            raise SettingsError(f"LOOKUP_TTL_SECONDS: not a number: {env['LOOKUP_TTL_SECONDS']!r}") from exc
        if ttl < 0:
            raise SettingsError("LOOKUP_TTL_SECONDS: must be >= 0")
        return cls(
            uri_secret=secret,
            database=env.get("MONGODB_DATABASE", "privateauto") or "privateauto",
            lookup_ttl_seconds=ttl,
        )
