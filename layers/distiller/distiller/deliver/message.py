"""The delivery message: what travels on the delivery, retry and dead-letter queues.

It carries everything the dispatcher needs except the endpoint and the secret, which are read
at send time so a rotation applies to retries. `attempt` counts the POSTs already made and
`firstAttemptAt` the first of them; both survive every retry. A payload too large for a queue
message travels as `payloadRef` (see `claim_check`) and is loaded just before the POST.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from distiller.core.model import Delivery
from distiller.deliver.claim_check import INLINE_LIMIT_BYTES, PayloadRef, PayloadStore, PayloadTooLarge


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
    """The round of attempts (wire field `redrive`): 0 first; an operator's dead-letter redrive adds 1;
    an API replay sets it to the request time in epoch seconds, distinct from every earlier round.
    Attempts are claimed and logged per round, so a new round is POSTed even after a delivery."""
    payload_ref: PayloadRef | None = None
    """Where the payload is when it is claim-checked; `payload` is then empty until loaded."""

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

    def next_round(self, round_: int) -> DeliveryMessage:
        """The message as a new round of attempts (a redrive, a resume): the whole retry schedule again."""
        return replace(self, attempt=0, last_error=None, redrive=round_)

    def to_body(self) -> str:
        body = {
            "partnerId": self.partner_id,
            "event": self.event,
            "eventId": self.event_id,
            "eventKey": self.event_key,
            "emittedAt": self.emitted_at,
            "attempt": self.attempt,
            "firstAttemptAt": self.first_attempt_at,
            "lastError": self.last_error,
        }
        if self.payload_ref is not None:
            body["payloadRef"] = self.payload_ref.to_json()
        else:
            body["payload"] = self.payload
        if self.redrive:
            body["redrive"] = self.redrive
        return json.dumps(body, separators=(",", ":"))

    def claim_checked(self, store: PayloadStore | None) -> DeliveryMessage:
        """This message ready for a queue: a payload over the inline limit goes to `store`.

        Raises `PayloadTooLarge` when it is over the limit and there is no store (it could never
        be queued: park it), and `PayloadUnavailable` when the store fails (retry)."""
        if self.payload_ref is not None:
            return self
        raw = self.raw_body()
        if len(raw) <= INLINE_LIMIT_BYTES:
            return self
        if store is None:
            raise PayloadTooLarge(
                f"payload of {len(raw)} bytes is over the {INLINE_LIMIT_BYTES}-byte queue limit"
                " and no claim-check bucket is configured (CLAIM_CHECK_BUCKET)"
            )
        return replace(self, payload={}, payload_ref=store.put(raw))

    def with_payload(self, store: PayloadStore | None) -> DeliveryMessage:
        """The message with its payload in hand (loaded from the claim check if it is there).

        It keeps its `payloadRef`, so the bodies queued after the attempt stay small."""
        if self.payload_ref is None:
            return self
        if store is None:
            raise PayloadTooLarge("payloadRef: the payload is claim-checked but no claim-check bucket is configured")
        return replace(self, payload=json.loads(store.get(self.payload_ref)))

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
        payload_ref = None
        if "payloadRef" in data:
            try:
                payload_ref = PayloadRef.from_json(data["payloadRef"])
            except ValueError as exc:
                raise DeliveryMessageError(str(exc)) from exc
        elif not isinstance(data.get("payload"), dict):
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
            payload=data["payload"] if payload_ref is None else {},
            emitted_at=data["emittedAt"],
            attempt=attempt,
            first_attempt_at=data.get("firstAttemptAt"),
            last_error=data.get("lastError"),
            redrive=redrive,
            payload_ref=payload_ref,
        )

    def raw_body(self) -> bytes:
        """The exact bytes POSTed and signed: the payload as compact JSON."""
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
