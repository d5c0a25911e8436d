"""The delivery message: what travels on the delivery, retry and dead-letter queues.

It carries everything the dispatcher needs except the endpoint and the secret, which are read
at send time so a rotation applies to retries. `attempt` counts the POSTs already made and
`firstAttemptAt` the first of them; both survive every retry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from distiller.model import Delivery


class DeliveryMessageError(ValueError):
    """A queue message that is not a delivery; the message names the field."""


@dataclass(frozen=True, slots=True)
class DeliveryMessage:
    partner_id: str
    event: str
    event_id: str
    event_key: str
    payload: dict[str, Any]
    emitted_at: str
    """ISO 8601 instant the distiller emitted the event: the `X-PA-Timestamp` of every attempt."""
    attempt: int = 0
    first_attempt_at: str | None = None
    last_error: str | None = None
    redrive: int = 0
    """How many times an operator redrove it from the dead-letter queue (a new round of attempts)."""

    @classmethod
    def from_delivery(cls, delivery: Delivery, emitted_at: str) -> DeliveryMessage:
        return cls(
            partner_id=delivery.partner_id,
            event=delivery.event,
            event_id=delivery.event_id,
            event_key=delivery.event_key,
            payload=delivery.payload,
            emitted_at=emitted_at,
        )

    def after_attempt(self, attempted_at: str, error: str | None) -> DeliveryMessage:
        """The message as it travels after one more failed attempt."""
        return replace(
            self,
            attempt=self.attempt + 1,
            first_attempt_at=self.first_attempt_at or attempted_at,
            last_error=error,
        )

    def to_body(self) -> str:
        body = {
            "partnerId": self.partner_id,
            "event": self.event,
            "eventId": self.event_id,
            "eventKey": self.event_key,
            "payload": self.payload,
            "emittedAt": self.emitted_at,
            "attempt": self.attempt,
            "firstAttemptAt": self.first_attempt_at,
            "lastError": self.last_error,
        }
        if self.redrive:
            body["redrive"] = self.redrive
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str) -> DeliveryMessage:
        try:
            data = json.loads(body)
        except (TypeError, ValueError) as exc:
            raise DeliveryMessageError(f"body: not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DeliveryMessageError("body: expected a JSON object")
        for name in ("partnerId", "event", "eventId", "eventKey", "emittedAt"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise DeliveryMessageError(f"{name}: required string")
        if not isinstance(data.get("payload"), dict):
            raise DeliveryMessageError("payload: required object")
        attempt = data.get("attempt", 0)
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
            raise DeliveryMessageError("attempt: expected a non-negative integer")
        redrive = data.get("redrive", 0)
        if not isinstance(redrive, int) or isinstance(redrive, bool) or redrive < 0:
            raise DeliveryMessageError("redrive: expected a non-negative integer")
        return cls(
            partner_id=data["partnerId"],
            event=data["event"],
            event_id=data["eventId"],
            event_key=data["eventKey"],
            payload=data["payload"],
            emitted_at=data["emittedAt"],
            attempt=attempt,
            first_attempt_at=data.get("firstAttemptAt"),
            last_error=data.get("lastError"),
            redrive=redrive,
        )

    def raw_body(self) -> bytes:
        """The exact bytes POSTed and signed: the payload as compact JSON."""
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
