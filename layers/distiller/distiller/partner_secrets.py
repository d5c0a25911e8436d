"""Partner webhook secrets from AWS Secrets Manager, through powertools Parameters (cached).

The cache is short so a rotation reaches the next retry; values are never logged.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

DEFAULT_PREFIX = "trigger-distiller/partners/"
WEBHOOK_SECRET_SUFFIX = "/webhook-secret"  # noqa: S105 - a name suffix, not a secret


class SecretUnavailable(RuntimeError):
    """The partner's secret could not be read; the message names the secret, never its value."""


class PartnerSecrets:
    def __init__(self, prefix: str = DEFAULT_PREFIX, max_age_seconds: int = 30) -> None:
        self.prefix = prefix
        self.max_age_seconds = max_age_seconds

    def name_for(self, partner_id: str) -> str:
        return f"{self.prefix}{partner_id}{WEBHOOK_SECRET_SUFFIX}"

    def webhook_secret(self, partner_id: str) -> str:
        name = self.name_for(partner_id)
        try:
            value = parameters.get_secret(name, max_age=self.max_age_seconds)
        except GetParameterError as exc:
            raise SecretUnavailable(f"secret {name} could not be read") from exc
        if not isinstance(value, str) or not value:
            raise SecretUnavailable(f"secret {name} is empty or not text")
        return value
