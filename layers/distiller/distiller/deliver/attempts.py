"""One webhook attempt, as the Dispatcher and the endpoint-health probe both make it.

The retry schedule, the spec's headers and signature, one signed POST with the partner's current
secret, and what an attempt's log lines may carry (ids, never the payload, URL or secret).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Protocol

from distiller.adapters.queues import MAX_DELAY_SECONDS
from distiller.adapters.secrets import SecretUnavailable
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.sender import USER_AGENT, SendResult
from distiller.deliver.signing import signature

_QUERY = re.compile(r"(?P<base>[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"?#]*)[?#][^\s'\"]*")


def loggable(text: str | None) -> str | None:
    """`text` for the log, with any URL cut before its query string (tokens, signed links)."""
    return _QUERY.sub(r"\g<base>?…", text) if text else text


def log_ids(message: DeliveryMessage, attempt: int | None = None) -> dict[str, object]:
    """The keys that identify a delivery in every log line (never its payload, URL or secret)."""
    keys: dict[str, object] = {
        "partnerId": message.partner_id,
        "eventId": message.event_id,
        "event": message.event,
        "redrive": message.redrive,
    }
    if attempt is not None:
        keys["attempt"] = attempt
    return keys


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Delays before retry 1, 2, 3, ...; after the last one the delivery is dead-lettered."""

    delays: tuple[int, ...] = (60, 300, 900)

    @classmethod
    def parse(cls, text: str) -> RetrySchedule:
        try:
            delays = tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError as exc:
            raise ValueError(f"retry delays {text!r}: expected comma-separated whole seconds") from exc
        if any(d < 0 or d > MAX_DELAY_SECONDS for d in delays):
            raise ValueError(f"retry delays {text!r}: each must be 0..{MAX_DELAY_SECONDS} seconds (the SQS limit)")
        return cls(delays)

    def delay_after(self, attempts_made: int) -> int | None:
        """Delay before the next attempt, or None when `attempts_made` exhausts the schedule."""
        if attempts_made < 1:
            raise ValueError(f"attempts_made must be >= 1, got {attempts_made}")
        return self.delays[attempts_made - 1] if attempts_made <= len(self.delays) else None


SIGNATURE_REFUSED = frozenset({401, 403})
"""Answers after which the partner's secret is read afresh: it may have been rotated meanwhile."""


class Secrets(Protocol):
    def webhook_secret(self, partner_id: str) -> str: ...


class Sender(Protocol):
    def post(self, url: str, headers: dict[str, str], body: bytes, *, start_by: float | None = None) -> SendResult: ...


def webhook_headers(message: DeliveryMessage, secret: str, body: bytes) -> dict[str, str]:
    """Exactly the spec's headers; the signature covers `{X-PA-Timestamp}.{body}`."""
    return {
        "Content-Type": "application/json",
        "X-PA-Event": message.event,
        "X-PA-Timestamp": message.emitted_at,
        "X-PA-Signature": signature(secret, message.emitted_at, body),
        "X-PA-Partner": message.partner_id,
        "X-PA-Event-Id": message.event_id,
        "User-Agent": USER_AGENT,
    }


def post_signed(
    sender: Sender, secrets: Secrets, url: str, message: DeliveryMessage, *, start_by: float | None = None
) -> tuple[SendResult, int | None]:
    """POST `message` (its payload in hand) signed with the partner's current secret, once.

    Returns the result and how long the POST took in ms (None when no POST was made: the secret
    could not be read). A 401/403 makes the next read of the secret fresh: it may have been rotated.
    """
    body = message.raw_body()
    try:
        secret = secrets.webhook_secret(message.partner_id)
    except SecretUnavailable as exc:
        return SendResult(False, error=str(exc)), None
    started = time.monotonic()
    result = sender.post(url, webhook_headers(message, secret, body), body, start_by=start_by)
    latency_ms = round((time.monotonic() - started) * 1000)
    if result.status_code in SIGNATURE_REFUSED:
        forget = getattr(secrets, "forget", None)  # fakes in tests may not cache
        if forget is not None:
            forget(message.partner_id)
    return result, latency_ms
