"""The delivery log: one Mongo document per attempt, shaped like the spec's webhook-deliveries response.

Indexed for the /data filters (partner + status / event / date range, eventId) and expired by
a TTL index on `attemptedAt`. It also answers the dispatcher's one question before a POST:
was this eventId already delivered to this partner?
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from distiller.ejson import iso_utc
from distiller.lookups import LookupFailure

DELIVERIES_COLLECTION = "webhook_deliveries"
EXCERPT_LIMIT = 1024
"""Characters of the partner's response body kept per attempt."""

DeliveryStatus = Literal["delivered", "failed", "skipped"]


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
        if self.redrive:  # a round of attempts after an operator's redrive (absent means 0)
            document["redrive"] = self.redrive
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
NEWEST_FIRST = [("attemptedAt", DESCENDING), ("_id", DESCENDING)]


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
    query: dict[str, Any] = {"partnerId": partner_id}
    if status is not None:
        query["status"] = status
    if event is not None:
        query["event"] = event
    if event_id is not None:
        query["eventId"] = event_id
    bounds: dict[str, dt.datetime] = {}
    if date_from is not None:
        bounds["$gte"] = as_utc(date_from)
    if date_to is not None:
        bounds["$lte"] = as_utc(date_to)
    if bounds:
        query["attemptedAt"] = bounds
    return query


def as_utc(value: dt.datetime) -> dt.datetime:
    """A datetime in UTC; one without an offset is taken to be UTC already."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class DeliveryLog(Protocol):
    def record(self, attempt: DeliveryAttempt) -> None: ...

    def already_processed(self, partner_id: str, event_id: str, attempt: int, redrive: int = 0) -> str | None:
        """Why this attempt must not be made (already delivered, or this attempt already done), or None."""
        ...


class MongoDeliveryLog:
    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    def ensure_indexes(self, retention_days: int) -> None:
        """Create the /data filter indexes and the TTL index (idempotent)."""
        c = self._collection
        c.create_index([("partnerId", ASCENDING), ("attemptedAt", DESCENDING)], name="partner_date")
        c.create_index(
            [("partnerId", ASCENDING), ("status", ASCENDING), ("attemptedAt", DESCENDING)], name="partner_status_date"
        )
        c.create_index(
            [("partnerId", ASCENDING), ("event", ASCENDING), ("attemptedAt", DESCENDING)], name="partner_event_date"
        )
        c.create_index(
            [("partnerId", ASCENDING), ("eventId", ASCENDING), ("status", ASCENDING)], name="partner_event_id"
        )
        c.create_index("attemptedAt", name="ttl_attempted_at", expireAfterSeconds=retention_days * 86400)

    def record(self, attempt: DeliveryAttempt) -> None:
        try:
            self._collection.insert_one(attempt.to_document())
        except PyMongoError as exc:
            raise LookupFailure(f"{DELIVERIES_COLLECTION}: {exc}") from exc

    def already_processed(self, partner_id: str, event_id: str, attempt: int, redrive: int = 0) -> str | None:
        # Each round of attempts (the original, an operator's redrive, a partner's replay) is judged on
        # its own; entries without `redrive` belong to round 0.
        same_round: dict[str, Any] = {"redrive": {"$in": [redrive, None]}} if redrive == 0 else {"redrive": redrive}
        query = {
            "partnerId": partner_id,
            "eventId": event_id,
            "$or": [{"status": "delivered", **same_round}, {"attempt": attempt, "status": "failed", **same_round}],
        }
        try:
            found = self._collection.find_one(query, {"status": 1, "attempt": 1})
        except PyMongoError as exc:
            raise LookupFailure(f"{DELIVERIES_COLLECTION}: {exc}") from exc
        if found is None:
            return None
        if found["status"] == "delivered":
            return f"already delivered (attempt {found.get('attempt')})"
        return f"attempt {attempt} was already made (redelivered message)"


__all__ = ["DeliveryAttempt", "DeliveryLog", "MongoDeliveryLog", "log_line"]
