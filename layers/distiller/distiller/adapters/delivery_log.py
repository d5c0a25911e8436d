"""The delivery log and the per-attempt claims in MongoDB (see `distiller.deliver.log`)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from distiller.core.clock import iso_utc, utc_now
from distiller.core.lookups import LookupFailure
from distiller.deliver.log import (
    CLAIM_RETENTION,
    CLAIMS_COLLECTION,
    DELIVERIES_COLLECTION,
    AttemptKey,
    ClaimHeld,
    DeliveryAttempt,
    as_utc,
)


class MongoDeliveryLog:
    def __init__(
        self,
        collection: Collection,
        claims: Collection | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._collection = collection
        self._claims = claims if claims is not None else collection.database[CLAIMS_COLLECTION]
        self._clock = clock

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
        c.create_index(  # endpoint health: a partner's dead letters since its last delivery or resume
            [("partnerId", ASCENDING), ("deadLettered", ASCENDING), ("attemptedAt", ASCENDING)],
            name="partner_dead_lettered_date",
        )
        c.create_index("attemptedAt", name="ttl_attempted_at", expireAfterSeconds=retention_days * 86400)
        self._claims.create_index(
            [("partnerId", ASCENDING), ("eventId", ASCENDING), ("round", ASCENDING), ("attempt", ASCENDING)],
            name="one_claim_per_attempt",
            unique=True,
        )
        self._claims.create_index("expiresAt", name="ttl_expires_at", expireAfterSeconds=0)

    def claim(self, key: AttemptKey, lease_seconds: float) -> ClaimHeld | str:
        now = self._clock()
        until = now + dt.timedelta(seconds=lease_seconds)
        token = secrets.token_hex(8)
        lease = {"leaseUntil": until, "token": token, "expiresAt": until + CLAIM_RETENTION}
        try:
            try:
                self._claims.insert_one({**key.fields(), **lease})
                return token
            except DuplicateKeyError:
                # Held before: take it over only if that lease ran out (its holder crashed).
                taken = self._claims.update_one({**key.fields(), "leaseUntil": {"$lte": now}}, {"$set": lease})
                if taken.modified_count == 1:
                    return token
                held = self._claims.find_one(key.fields(), {"leaseUntil": 1}) or {}
        except PyMongoError as exc:
            raise LookupFailure(f"{CLAIMS_COLLECTION}: {exc}") from exc
        held_until = as_utc(held.get("leaseUntil") or until)
        wait = max(1, int((held_until - now).total_seconds()) + 1)
        return ClaimHeld(
            f"attempt {key.attempt} is being made by another invocation (lease until {iso_utc(held_until)})", wait
        )

    def release(self, key: AttemptKey, token: str) -> None:
        try:
            self._claims.delete_one({**key.fields(), "token": token})
        except PyMongoError as exc:
            raise LookupFailure(f"{CLAIMS_COLLECTION}: {exc}") from exc

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


__all__ = ["MongoDeliveryLog"]
