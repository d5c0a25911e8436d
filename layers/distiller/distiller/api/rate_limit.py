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
request (at least 1, rounded up; up to two windows when the current one is full, so a caller that
waits exactly that long is admitted). The arithmetic is `capacity` and `decide`,
shared by both implementations.

State: the function runs in many concurrent containers, so `MongoRateLimiter` keeps the counts in
MongoDB (one small document per key and window, expired by a TTL index); `InMemoryRateLimiter` keeps
them in a dict for local runs and tests.

Failure mode: the limiter protects capacity and must not take the API down. When MongoDB fails
(any `pymongo.errors.PyMongoError`), `MongoRateLimiter.acquire` fails open: it allows the request and
logs a warning naming the key and the error class, never request data.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, Self

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
    reset_seconds: int = 0
    """Whole seconds until the allowance grows again (`RateLimit-Reset`): the end of the current
    fixed window when allowed, `retry_after_seconds` when refused."""


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
    window = float(limit.per_seconds)
    if current < room:
        reset = max(1, math.ceil((1.0 - elapsed_fraction) * window - _EPSILON))
        return RateDecision(allowed=True, retry_after_seconds=0, remaining=room - current - 1, reset_seconds=reset)
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
    retry_after = math.ceil(wait - _EPSILON)
    retry_after = max(1, retry_after)
    return RateDecision(allowed=False, retry_after_seconds=retry_after, remaining=0, reset_seconds=retry_after)


def window_position(now: float, limit: RateLimit) -> tuple[int, float]:
    """The index of the fixed window holding ``now`` and the fraction of it elapsed, in [0, 1)."""
    window = float(limit.per_seconds)
    index = math.floor(now / window)
    fraction = (now - index * window) / window
    return index, min(max(fraction, 0.0), math.nextafter(1.0, 0.0))


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
            index, fraction = window_position(now, limit)
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


DEFAULT_REQUEST_LIMIT = RateLimit(600, 60)
"""Every route, per partner (`API_RATE_LIMIT`)."""
DEFAULT_REPLAY_LIMIT = RateLimit(30, 60)
"""Replays, per partner, on top (`API_REPLAY_RATE_LIMIT`): each makes the dispatcher POST."""
DEFAULT_LEADS_LIMIT = RateLimit(60, 60)
"""Lead submissions, per partner whose record has no `leadsRateLimit` (`LEADS_RATE_LIMIT`)."""
