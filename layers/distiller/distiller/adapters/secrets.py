"""Partner webhook secrets from AWS Secrets Manager, through powertools Parameters (cached).

Webhook secrets are cached an hour per warm instance (at a few deliveries a second a 30 s cache
made Secrets Manager the largest line of the bill, docs/scaling.md); a partner answering 401 or
403 makes the next attempt fetch its secret afresh, so a rotation the partner already applied
reaches the next retry, whatever the cache's age. Values are never logged.
"""

from __future__ import annotations

import re
import threading
import time

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

DEFAULT_PREFIX = "trigger-distiller/partners/"
SHARED_SECRET_SUFFIX = "/shared-secret"  # noqa: S105 - a name suffix, not a secret
_SECRET_NAME_PARTNER_ID = re.compile(r"[A-Za-z0-9_.@+=-]{1,256}")
"""Partner ids that can be part of a secret name; any other is an unknown partner."""
WEBHOOK_SECRET_SUFFIX = "/webhook-secret"  # noqa: S105 - a name suffix, not a secret


class SecretUnavailable(RuntimeError):
    """The partner's secret could not be read; the message names the secret, never its value."""


class PartnerSecrets:
    def __init__(
        self, prefix: str = DEFAULT_PREFIX, max_age_seconds: int = 3600, refresh_interval_seconds: float = 60.0
    ) -> None:
        self.prefix = prefix
        self.max_age_seconds = max_age_seconds
        self.refresh_interval_seconds = refresh_interval_seconds
        self._stale: set[str] = set()
        self._refreshed_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def name_for(self, partner_id: str) -> str:
        return f"{self.prefix}{partner_id}{WEBHOOK_SECRET_SUFFIX}"

    def forget(self, partner_id: str) -> None:
        """The partner refused our signature: read its secret afresh on the next attempt, at most once
        per `refresh_interval_seconds` (an endpoint refusing everything must not cost a call per attempt)."""
        with self._lock:
            last = self._refreshed_at.get(partner_id)
            if last is None or time.monotonic() - last >= self.refresh_interval_seconds:
                self._stale.add(partner_id)

    def webhook_secret(self, partner_id: str) -> str:
        name = self.name_for(partner_id)
        with self._lock:  # taken before the fetch, so a refusal seen meanwhile marks it again
            stale = partner_id in self._stale
            self._stale.discard(partner_id)
            if stale:
                self._refreshed_at[partner_id] = time.monotonic()
        try:
            value = parameters.get_secret(name, max_age=self.max_age_seconds, force_fetch=stale)
        except GetParameterError as exc:
            if stale:
                with self._lock:
                    self._stale.add(partner_id)  # still to be read afresh
            raise SecretUnavailable(f"secret {name} could not be read") from exc
        if not isinstance(value, str) or not value:
            raise SecretUnavailable(f"secret {name} is empty or not text")
        return value


class SecretsManagerSharedSecrets:
    """Shared secrets from AWS Secrets Manager (``{prefix}{partnerId}/shared-secret``) through powertools
    Parameters, cached for ``max_age_seconds``.

    A secret that does not exist, or a partnerId that cannot be part of a secret name (e.g. one with a
    ``/``), is an unknown partner (None); any other failure raises `SecretUnavailable`. Values are
    never logged. Not-found answers are not cached by powertools, so each one costs a Secrets Manager call.
    """

    def __init__(self, prefix: str = DEFAULT_PREFIX, max_age_seconds: int = 300) -> None:
        self.prefix = prefix
        self.max_age_seconds = max_age_seconds

    def name_for(self, partner_id: str) -> str:
        return f"{self.prefix}{partner_id}{SHARED_SECRET_SUFFIX}"

    def shared_secret(self, partner_id: str) -> str | None:
        if not isinstance(partner_id, str) or not _SECRET_NAME_PARTNER_ID.fullmatch(partner_id):
            return None
        name = self.name_for(partner_id)
        try:
            value = parameters.get_secret(name, max_age=self.max_age_seconds)
        except GetParameterError as exc:
            if _is_not_found(exc):
                return None
            raise SecretUnavailable(f"secret {name} could not be read") from exc
        if not isinstance(value, str) or not value.strip():
            raise SecretUnavailable(f"secret {name} is empty or not text")
        return value


def _is_not_found(exc: BaseException) -> bool:
    """Powertools wraps the botocore error (as the implicit context) in a GetParameterError."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        response = getattr(seen, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return True
        seen = seen.__cause__ or seen.__context__
    return "ResourceNotFoundException" in str(exc)
