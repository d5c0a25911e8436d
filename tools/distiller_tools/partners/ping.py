"""`distiller partners test`: one signed sample delivery to a partner's endpoint, through the real sender.

The body is the event's payload shape from its reducer row (every field the row builds, null,
as `docs/event-catalog.md` lists them) with `"test": true`, a fresh `test-…` eventId and an
eventKey of the usual shape; it is signed by `webhook_headers`, as the Dispatcher signs, and
POSTed by `WebhookSender`, whose SSRF checks run again at send time. Nothing is written to the
delivery log or any queue: a test ping leaves no trace in the stack.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from distiller.core.clock import iso_utc, utc_now
from distiller.core.reducers import TABLES
from distiller.deliver.dispatch import webhook_headers
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.sender import SendResult, WebhookSender
from distiller.deliver.ssrf import Resolver, system_resolver

TEST_EVENT_ID_PREFIX = "test-"


@dataclass(frozen=True, slots=True)
class PingResult:
    message: DeliveryMessage
    result: SendResult
    latency_ms: float


def sample_payload(event: str, event_id: str, event_key: str) -> dict[str, Any]:
    """The event's payload with every field its reducer row builds (null), marked `"test": true`."""
    for reducer in TABLES:
        for row in reducer.rows:
            if row.event == event:
                build = row.payload or reducer.payload
                body = build({})
                payload: dict[str, Any] = {
                    "id": body.get("id"),
                    "eventId": event_id,
                    "eventKey": event_key,
                    "entityType": row.entity_type or reducer.entity_type,
                }
                payload.update(body)
                payload["test"] = True
                return payload
    raise ValueError(f"{event!r} is not a catalog event")


def sample_message(partner_id: str, event: str) -> DeliveryMessage:
    """A delivery of `event` for `partner_id` with a fresh eventId; its eventKey has the pipeline's
    shape (`{token}:{partnerId}:{event}:{index}`) so a receiver reading it finds the right labels."""
    event_id = f"{TEST_EVENT_ID_PREFIX}{uuid.uuid4().hex}"
    event_key = f"{event_id}:{partner_id}:{event}:0"
    return DeliveryMessage(
        partner_id=partner_id,
        event=event,
        event_id=event_id,
        event_key=event_key,
        payload=sample_payload(event, event_id, event_key),
        emitted_at=iso_utc(utc_now()),
    )


def send_test(
    url: str,
    secret: str,
    message: DeliveryMessage,
    *,
    allow_private: bool = False,
    resolver: Resolver = system_resolver,
) -> PingResult:
    """POST `message` once, signed with `secret`; no retry, no log, no queue."""
    body = message.raw_body()
    sender = WebhookSender(allow_private=allow_private, resolver=resolver, per_host_connections=1)
    try:
        started = time.perf_counter()
        result = sender.post(url, webhook_headers(message, secret, body), body)
        latency_ms = (time.perf_counter() - started) * 1000
    finally:
        sender.close()
    return PingResult(message, result, latency_ms)
