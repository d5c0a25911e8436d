"""The partner API's rate-limit counters in MongoDB (see `distiller.api.rate_limit`): one small
document per key and window, expired by a TTL index, shared by every container."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from distiller.api.rate_limit import RateDecision, RateLimit, capacity, decide, window_position

logger = logging.getLogger(__name__)


class MongoRateLimiter:
    """`RateLimiter` over a MongoDB collection shared by every container.

    One document per key and window: ``_id`` is ``"<key>:<window seconds>:<window index>"``, e.g.
    ``"p1:60.0:28333334"`` (the window length is part of it so a changed limit never reads counts of
    another window length), with ``count``, ``key``, ``windowStart`` and ``expiresAt`` (window end plus
    one window, for the TTL index of `ensure_indexes`). Each request reads both windows in one query;
    an admitted one then adds itself with a conditional ``$inc`` (upserting) that succeeds only while
    the window is below the room computed, so concurrent containers cannot overshoot the limit. A
    refused request writes nothing. ``clock`` is epoch seconds (wall time, shared by all containers).
    On a MongoDB error the request is allowed (``remaining`` is then ``requests - 1``, a guess).
    """

    def __init__(self, collection: Collection, clock: Callable[[], float] = time.time) -> None:
        self._collection = collection
        self._clock = clock

    def ensure_indexes(self) -> None:
        """Create the TTL index on ``expiresAt`` (idempotent). Errors propagate: this is setup, not a request."""
        self._collection.create_index("expiresAt", name="ttl_expires_at", expireAfterSeconds=0)

    def acquire(self, key: str, limit: RateLimit) -> RateDecision:
        try:
            return self._acquire(key, limit)
        except PyMongoError as exc:
            logger.warning("rate limiter unavailable for key %s (%s): request allowed", key, type(exc).__name__)
            return RateDecision(
                allowed=True,
                retry_after_seconds=0,
                remaining=limit.requests - 1,
                reset_seconds=math.ceil(limit.per_seconds),
            )

    def _acquire(self, key: str, limit: RateLimit) -> RateDecision:
        index, fraction = window_position(self._clock(), limit)
        window = float(limit.per_seconds)
        previous_id, current_id = (f"{key}:{window!r}:{i}" for i in (index - 1, index))
        counts = {
            doc["_id"]: int(doc.get("count", 0))
            for doc in self._collection.find({"_id": {"$in": [previous_id, current_id]}}, {"count": True})
        }
        previous, current = counts.get(previous_id, 0), counts.get(current_id, 0)
        room = capacity(previous, fraction, limit)
        for _ in range(2):  # the second try only follows a lost race between two first inserts
            if current >= room:
                break
            try:
                doc = self._collection.find_one_and_update(
                    {"_id": current_id, "count": {"$lt": room}},
                    {"$inc": {"count": 1}, "$setOnInsert": self._new_document(key, index, window)},
                    upsert=True,
                    projection={"count": True},
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                # The window is full (the filter missed, so the upsert collided with it) or another
                # container inserted it first: read the count it really has.
                doc = self._collection.find_one({"_id": current_id}, {"count": True})
                current = int(doc.get("count", 0)) if doc else 0
                continue
            return decide(previous, int(doc["count"]) - 1, fraction, limit)
        return decide(previous, max(current, room), fraction, limit)

    @staticmethod
    def _new_document(key: str, index: int, window: float) -> dict[str, Any]:
        start = index * window
        return {
            "key": key,
            "windowStart": dt.datetime.fromtimestamp(start, tz=dt.UTC),
            "expiresAt": dt.datetime.fromtimestamp(start + 2 * window, tz=dt.UTC),
        }
