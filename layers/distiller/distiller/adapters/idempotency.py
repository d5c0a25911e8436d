"""Idempotency keys of the partner API in MongoDB (`distiller.api.sell.IdempotencyStore`).

powertools' idempotency utility persists to DynamoDB, Redis or a cache, not MongoDB, so this is our
own small store: one document per key, claimed by inserting it (the unique `_id` decides who holds
the key when requests race; nothing is read before the claim), completed with the response, and
removed by a TTL index once `expiresAt` passes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from distiller.api.sell import StoredRequest, StoreUnavailable
from distiller.core.clock import utc_now

logger = logging.getLogger(__name__)

IDEMPOTENCY_COLLECTION = "api_idempotency"
IN_PROGRESS, COMPLETED = "in_progress", "completed"
_ATTEMPTS = 3


class MongoIdempotencyStore:
    """Documents `{_id: key, fingerprint, state, response, createdAt, expiresAt}`.

    An unfinished claim lapses at its `lease_until` (a request that died mid-way must not hold its
    key for a day); a lapsed document the TTL monitor has not removed yet (it runs about once a
    minute) counts as absent and is taken over with a compare-and-swap on its `expiresAt`.
    """

    def __init__(self, collection: Collection, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._collection = collection
        self._clock = clock

    def ensure_indexes(self) -> None:
        """Create the TTL index on ``expiresAt`` (idempotent). Errors propagate: this is setup, not a request."""
        self._collection.create_index("expiresAt", name="ttl_expires_at", expireAfterSeconds=0)

    def begin(self, key: str, fingerprint: str, lease_until: dt.datetime) -> StoredRequest | None:
        now = self._clock()
        claim = {
            "_id": key,
            "fingerprint": fingerprint,
            "state": IN_PROGRESS,
            "createdAt": now,
            "expiresAt": lease_until,
        }
        try:
            for _ in range(_ATTEMPTS):
                try:
                    self._collection.insert_one(dict(claim))
                    return None
                except DuplicateKeyError:
                    pass
                held = self._collection.find_one({"_id": key})
                if held is None:  # removed between our insert and our read: claim again
                    continue
                if _aware(held.get("expiresAt")) > now:
                    done = held.get("state") == COMPLETED
                    return StoredRequest(str(held.get("fingerprint")), held.get("response") if done else None)
                taken = self._collection.replace_one({"_id": key, "expiresAt": held.get("expiresAt")}, claim)
                if taken.modified_count == 1:
                    return None
        except PyMongoError as exc:
            raise _unavailable("claim", exc) from exc
        # Lost every race for a key others keep claiming and releasing: it is busy.
        return StoredRequest(fingerprint, None)

    def complete(self, key: str, response: dict[str, Any], keep_until: dt.datetime) -> None:
        try:
            self._collection.update_one(
                {"_id": key, "state": IN_PROGRESS},
                {"$set": {"state": COMPLETED, "response": response, "expiresAt": keep_until}},
            )
        except PyMongoError as exc:
            raise _unavailable("complete", exc) from exc

    def release(self, key: str) -> None:
        try:
            self._collection.delete_one({"_id": key, "state": IN_PROGRESS})
        except PyMongoError as exc:
            raise _unavailable("release", exc) from exc


def _aware(value: Any) -> dt.datetime:
    """A stored instant as an aware UTC datetime (a client without tz_aware reads naive UTC)."""
    if not isinstance(value, dt.datetime):
        return dt.datetime.min.replace(tzinfo=dt.UTC)  # no expiry recorded: lapsed
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _unavailable(what: str, exc: PyMongoError) -> StoreUnavailable:
    logger.error("idempotency store could not %s a key (%s)", what, type(exc).__name__)
    return StoreUnavailable()
