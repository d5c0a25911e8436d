"""The delivery log: one Mongo document per attempt, shaped like the spec's webhook-deliveries response.

Indexed for the /data filters (partner + status / event / date range, eventId) and expired by
a TTL index on `attemptedAt`. It also answers the dispatcher's two questions before a POST:
was this eventId already delivered to this partner (or this attempt already made), and may
this invocation make the attempt now? The second is a claim: a unique insert of
{partner, eventId, round, attempt} with a lease, so two dispatchers holding the same SQS
message never both POST. A lease outlives the function timeout; only a crash between the
POST and the log write lets an expired lease be taken over and the attempt repeated.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from bson import ObjectId

from distiller.core.clock import iso_utc, parse_instant

DELIVERIES_COLLECTION = "webhook_deliveries"
CLAIMS_COLLECTION = "webhook_delivery_claims"
CLAIM_RETENTION = dt.timedelta(days=7)
"""How long a claim is kept after its lease (longer than any message stays on a queue)."""
EXCERPT_LIMIT = 1024
"""Characters of the partner's response body kept per attempt."""

DeliveryStatus = Literal["delivered", "failed", "skipped", "held"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)
"""Every status an attempt is logged with: the one enumeration (ops, the log). `held`: kept for a
paused partner (`deliver/health.py`), no POST made."""
PARTNER_STATUSES: tuple[DeliveryStatus, ...] = ("delivered", "failed", "skipped")
"""The statuses the spec's webhook-deliveries endpoint enumerates: all a partner's API sees
(`held` entries are the operators', so partners' enum parsing keeps working)."""


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    partner_id: str
    event: str
    event_id: str
    attempt: int
    status: DeliveryStatus
    url: str | None
    attempted_at: dt.datetime
    payload: dict[str, Any]
    status_code: int | None = None
    response_body_excerpt: str | None = None
    error: str | None = None
    dead_lettered: bool = False
    """This failed attempt was the last one: the delivery went to the dead-letter queue."""
    redrive: int = 0
    latency_ms: int | None = None
    """How long the POST took; None when no POST was made. Entries written before it was kept lack it."""

    def to_document(self) -> dict[str, Any]:
        document = {
            "partnerId": self.partner_id,
            "event": self.event,
            "eventId": self.event_id,
            "attempt": self.attempt,
            "status": self.status,
            "url": self.url,
            "statusCode": self.status_code,
            "attemptedAt": self.attempted_at,
            "responseBodyExcerpt": (self.response_body_excerpt or "")[:EXCERPT_LIMIT] or None,
            "error": self.error,
            "deadLettered": self.dead_lettered,
            "payload": self.payload,
        }
        if self.redrive:  # the round (a redrive's count, or a replay's epoch seconds); absent means 0
            document["redrive"] = self.redrive
        if self.latency_ms is not None:  # optional: readers count an entry without it, minus a latency
            document["latencyMs"] = self.latency_ms
        return document


def log_line(document: dict[str, Any]) -> dict[str, Any]:
    """A stored attempt as plain JSON (`--log` lines, the /data response): `id`, ISO dates."""
    out = {("id" if k == "_id" else k): v for k, v in document.items()}
    if isinstance(out.get("id"), ObjectId):
        out["id"] = str(out["id"])
    if isinstance(out.get("attemptedAt"), dt.datetime):
        out["attemptedAt"] = iso_utc(out["attemptedAt"])
    return out


#: Newest first, ties by insertion: the order of the webhook-deliveries endpoint and the CLI.
NEWEST_FIRST = [("attemptedAt", -1), ("_id", -1)]  # descending, as pymongo spells it


def attempts_query(
    partner_id: str,
    *,
    status: str | None = None,
    event: str | None = None,
    date_from: dt.datetime | None = None,
    date_to: dt.datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The Mongo filter for one partner's attempts, as the spec's webhook-deliveries filters read:
    `dateFrom`/`dateTo` are inclusive bounds on `attemptedAt` (UTC when no offset is given)."""
    return DeliveryFilter(
        partner_id, status=status, event=event, date_from=date_from, date_to=date_to, event_id=event_id
    ).query()


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """The spec's webhook-deliveries filters, defined once for every reader of the delivery log.

    `query()` is the Mongo filter (the /data API, `distiller deliveries --mongo-uri`); `matches()`
    is the same test on one attempt in hand (`distiller deliveries --log`), so the two cannot
    drift apart. Order and limit are the reader's (`NEWEST_FIRST` in Mongo). `date_from` and
    `date_to` are inclusive bounds on `attemptedAt`, UTC when no offset is given, taken at the
    millisecond Mongo keeps (a BSON date has no microseconds, for a bound as for a stored time).
    """

    partner_id: str
    status: str | None = None
    event: str | None = None
    date_from: dt.datetime | None = None
    date_to: dt.datetime | None = None
    event_id: str | None = None

    def query(self) -> dict[str, Any]:
        query: dict[str, Any] = self._equal()
        low, high = self._bounds()
        bounds = {op: value for op, value in (("$gte", low), ("$lte", high)) if value is not None}
        if bounds:
            query["attemptedAt"] = bounds
        return query

    def matches(self, entry: Mapping[str, Any]) -> bool:
        """Whether `query()` would select this attempt: a stored document (`attemptedAt` a datetime)
        or its `log_line` (`attemptedAt` the ISO 8601 string); one without a readable time passes
        only when there are no date bounds, as in Mongo."""
        if any(entry.get(key) != value for key, value in self._equal().items()):
            return False
        low, high = self._bounds()
        if low is None and high is None:
            return True
        at = _stored_instant(entry.get("attemptedAt"))
        return at is not None and (low is None or at >= low) and (high is None or at <= high)

    def _equal(self) -> dict[str, str]:
        fields = {"partnerId": self.partner_id, "status": self.status, "event": self.event, "eventId": self.event_id}
        return {key: value for key, value in fields.items() if value is not None}

    def _bounds(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        return (
            None if self.date_from is None else _to_millisecond(self.date_from),
            None if self.date_to is None else _to_millisecond(self.date_to),
        )


def _to_millisecond(value: dt.datetime) -> dt.datetime:
    """In UTC and cut to the millisecond, as a BSON date holds it (pymongo truncates)."""
    value = as_utc(value)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _stored_instant(value: object) -> dt.datetime | None:
    """`attemptedAt` of a document or a log line as Mongo would compare it; None when it is no time."""
    if isinstance(value, str):
        try:
            value = parse_instant(value)
        except ValueError:
            return None
    return _to_millisecond(value) if isinstance(value, dt.datetime) else None


def as_utc(value: dt.datetime) -> dt.datetime:
    """A datetime in UTC; one without an offset is taken to be UTC already."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True, slots=True)
class AttemptKey:
    """One attempt of one delivery: what a claim is unique on."""

    partner_id: str
    event_id: str
    attempt: int
    redrive: int = 0

    def fields(self) -> dict[str, Any]:
        return {"partnerId": self.partner_id, "eventId": self.event_id, "round": self.redrive, "attempt": self.attempt}


@dataclass(frozen=True, slots=True)
class ClaimHeld:
    """Another invocation holds the attempt; look again after `retry_in_seconds`."""

    reason: str
    retry_in_seconds: int


class DeliveryLog(Protocol):
    def record(self, attempt: DeliveryAttempt) -> None: ...

    def claim(self, key: AttemptKey, lease_seconds: float) -> ClaimHeld | str:
        """Take the attempt for `lease_seconds`: a claim token, or who holds it and for how long."""
        ...

    def release(self, key: AttemptKey, token: str) -> None:
        """Give back an attempt that was claimed but not made (the invocation ran out of time)."""
        ...

    def already_processed(self, partner_id: str, event_id: str, attempt: int, redrive: int = 0) -> str | None:
        """Why this attempt must not be made (already delivered, or this attempt already done), or None."""
        ...


__all__ = ["AttemptKey", "ClaimHeld", "DeliveryAttempt", "DeliveryFilter", "DeliveryLog", "log_line"]
