"""Per-partner rate limiting for the partner API.

Why: the stage-wide API Gateway throttle is shared by every partner, so one partner can exhaust it for
all the others and, through replay, make the dispatcher fire real POSTs at partner endpoints. A limit
per key (a partner id, optionally prefixed by the API it guards) bounds each caller separately.

Algorithm: a sliding window approximated with two fixed windows of ``per_seconds`` each (Cloudflare's
approach). A request at a fraction ``f`` into the current window sees the estimate
``previous * (1 - f) + current``, where ``previous`` and ``current`` count the requests *admitted* in
the previous and the current fixed window. It is admitted while the estimate, including itself, stays
within ``requests``. Refused requests are not counted: a caller that ignores ``Retry-After`` and keeps
hammering still gets exactly its share and is never locked out, and a window's count never exceeds
the limit. ``Retry-After`` is the whole number of seconds until the estimate leaves room for one
request (at least 1, at most the window length, rounded up). The arithmetic is `capacity` and `decide`,
shared by both implementations.

State: the function runs in many concurrent containers, so `MongoRateLimiter` keeps the counts in
MongoDB (one small document per key and window, expired by a TTL index); `InMemoryRateLimiter` keeps
them in a dict for local runs and tests.

Failure mode: the limiter protects capacity and must not take the API down. When MongoDB fails
(any `pymongo.errors.PyMongoError`), `MongoRateLimiter.acquire` fails open: it allows the request and
logs a warning naming the key and the error class, never request data.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, Self

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

logger = logging.getLogger(__name__)

RATE_LIMITS_COLLECTION = "api_rate_limits"
MAX_WINDOW_SECONDS = 31 * 86400
"""Longest accepted window (a month): longer ones are a configuration mistake."""

_EPSILON = 1e-9
"""Absorbs float noise in the estimate so a request exactly at the limit is not refused by rounding."""
_LIMIT_TEXT = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+(?:\.[0-9]+)?)\s*")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``requests`` per sliding window of ``per_seconds`` seconds."""

    requests: int
    per_seconds: float

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not isinstance(self.requests, int) or self.requests < 1:
            raise ValueError(f"requests must be an integer >= 1, got {self.requests!r}")
        seconds = self.per_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise ValueError(f"per_seconds must be a finite number, got {seconds!r}")
        if not 0 < seconds <= MAX_WINDOW_SECONDS:
            raise ValueError(f"per_seconds must be > 0 and <= {MAX_WINDOW_SECONDS}, got {seconds!r}")

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``"<requests>/<seconds>"``: ``"600/60"`` is 600 requests per 60 seconds, ``"5/0.5"`` is 5
        per half second. Whole requests, seconds in plain decimal (no units, no exponent); spaces around
        the numbers are ignored. Anything else raises ``ValueError`` quoting the text."""
        match = _LIMIT_TEXT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"invalid rate limit {text!r}: expected '<requests>/<seconds>', e.g. '600/60'")
        try:
            return cls(int(match[1]), float(match[2]))
        except ValueError as exc:
            raise ValueError(f"invalid rate limit {text!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after_seconds: int
    """0 when allowed; otherwise whole seconds >= 1, for an HTTP ``Retry-After`` header."""
    remaining: int
    """Approximate requests left in the sliding window after this one (0 when refused)."""


class RateLimiter(Protocol):
    def acquire(self, key: str, limit: RateLimit) -> RateDecision:
        """Admit (and count) one request for ``key`` under ``limit``, or refuse it (not counted)."""
        ...


def capacity(previous: int, elapsed_fraction: float, limit: RateLimit) -> int:
    """How many requests the current window may hold in total, given ``previous`` admitted in the
    previous window and ``elapsed_fraction`` (0 to 1) of the current window gone. Never negative."""
    weighted = previous * (1.0 - elapsed_fraction)
    return max(0, math.floor(limit.requests - weighted + _EPSILON))


def decide(previous: int, current: int, elapsed_fraction: float, limit: RateLimit) -> RateDecision:
    """The decision for one request, given the counts admitted before it in the previous and the current
    window and how far (0 to 1) into the current window it arrives. Pure: both limiters use it."""
    room = capacity(previous, elapsed_fraction, limit)
    if current < room:
        return RateDecision(allowed=True, retry_after_seconds=0, remaining=room - current - 1)
    window = float(limit.per_seconds)
    # The earliest fraction of a window at which previous * (1 - f) <= requests - current - 1.
    need = limit.requests - current - 1
    if need >= 0 and previous > 0:
        wait = (1.0 - need / previous - elapsed_fraction) * window
    else:
        # The current window is full: wait for it to end, then for its count (as the next window's
        # "previous") to slide down far enough to leave room for one request.
        wait = (1.0 - elapsed_fraction) * window
        if current > 0:
            wait += max(0.0, 1.0 - (limit.requests - 1) / current) * window
    retry_after = min(math.ceil(wait - _EPSILON), math.ceil(window))
    return RateDecision(allowed=False, retry_after_seconds=max(1, retry_after), remaining=0)


def _window(now: float, limit: RateLimit) -> tuple[int, float]:
    """The index of the fixed window holding ``now`` and the fraction of it elapsed, in [0, 1)."""
    window = float(limit.per_seconds)
    index = math.floor(now / window)
    fraction = (now - index * window) / window
    return index, min(max(fraction, 0.0), math.nextafter(1.0, 0.0))


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
            return RateDecision(allowed=True, retry_after_seconds=0, remaining=limit.requests - 1)

    def _acquire(self, key: str, limit: RateLimit) -> RateDecision:
        index, fraction = _window(self._clock(), limit)
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


class InMemoryRateLimiter:
    """`RateLimiter` in a dict guarded by a lock: one process only (``distiller api`` local runs, tests).

    Same algorithm and decisions as `MongoRateLimiter`. Windows that can no longer be read (ended more
    than one window ago) are pruned whenever the table has doubled since the last sweep.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, float, int], int] = {}
        self._sweep_floor = 64
        self._sweep_at = self._sweep_floor

    def acquire(self, key: str, limit: RateLimit) -> RateDecision:
        with self._lock:
            now = self._clock()
            index, fraction = _window(now, limit)
            window = float(limit.per_seconds)
            current_key = (key, window, index)
            previous = self._counts.get((key, window, index - 1), 0)
            current = self._counts.get(current_key, 0)
            decision = decide(previous, current, fraction, limit)
            if decision.allowed:
                self._counts[current_key] = current + 1
                if len(self._counts) >= self._sweep_at:
                    self._prune(now)
            return decision

    def _prune(self, now: float) -> None:
        self._counts = {
            (key, window, index): count
            for (key, window, index), count in self._counts.items()
            if math.floor(now / window) <= index + 1
        }
        self._sweep_at = max(self._sweep_floor, 2 * len(self._counts))
