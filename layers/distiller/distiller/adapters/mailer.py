"""Plain-text email through Amazon SES v2 (`distiller.api.sell.Mailer`): DealNow deal links."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from distiller.api.sell import MailerError


class SesMailer:
    """Sends from `from_address` (a verified SES identity) with a boto3 ``sesv2`` client."""

    def __init__(self, client: Any, from_address: str) -> None:
        self._client = client
        self.from_address = from_address

    def send(self, to: str, subject: str, text: str) -> None:
        try:
            self._client.send_email(
                FromEmailAddress=self.from_address,
                Destination={"ToAddresses": [to]},
                Content={
                    "Simple": {
                        "Subject": {"Data": subject, "Charset": "UTF-8"},
                        "Body": {"Text": {"Data": text, "Charset": "UTF-8"}},
                    }
                },
            )
        except ClientError as exc:
            raise MailerError(f"SES refused the message: {exc.response.get('Error', {}).get('Code', 'error')}") from exc
        except BotoCoreError as exc:
            raise MailerError(f"SES unreachable: {type(exc).__name__}") from exc

    def __repr__(self) -> str:
        return f"SesMailer(from_address={self.from_address!r})"
