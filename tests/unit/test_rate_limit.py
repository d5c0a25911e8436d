"""Per-partner rate limiter: limits and parsing, the shared arithmetic, and both implementations.

Time is always an injected clock (a mutable float); nothing sleeps. The Mongo limiter runs on mongomock,
and a differential test checks it decides exactly like the in-memory one on any sequence of calls.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from typing import Any

import mongomock
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo.errors import DuplicateKeyError, ServerSelectionTimeoutError

from distiller.adapters.rate_limits import MongoRateLimiter
from distiller.api.rate_limit import (
    MAX_WINDOW_SECONDS,
    RATE_LIMITS_COLLECTION,
    InMemoryRateLimiter,
    RateDecision,
    RateLimit,
    RateLimiter,
    capacity,
    decide,
    window_position,
)

EPOCH = 1_700_000_040.0
"""A wall-clock instant on a 60-second (and 1-, 10-, 20-second) window boundary."""


class Clock:
    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_collection() -> Any:
    return mongomock.MongoClient().db[RATE_LIMITS_COLLECTION]


def make_mongo(clock: Clock) -> MongoRateLimiter:
    return MongoRateLimiter(new_collection(), clock=clock)


def make_memory(clock: Clock) -> InMemoryRateLimiter:
    return InMemoryRateLimiter(clock=clock)


@pytest.fixture(params=[make_mongo, make_memory], ids=["mongo", "memory"])
def make(request: pytest.FixtureRequest) -> Callable[[Clock], RateLimiter]:
    return request.param


def burst(limiter: RateLimiter, key: str, limit: RateLimit, n: int) -> list[RateDecision]:
    return [limiter.acquire(key, limit) for _ in range(n)]


# --- RateLimit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "requests", "per_seconds"),
    [
        ("600/60", 600, 60.0),
        ("10/1", 10, 1.0),
        ("1/86400", 1, 86400.0),
        ("5/0.5", 5, 0.5),
        (" 30 / 60 ", 30, 60.0),
        ("007/010", 7, 10.0),
    ],
)
def test_parse_accepts_requests_slash_seconds(text: str, requests: int, per_seconds: float) -> None:
    assert RateLimit.parse(text) == RateLimit(requests, per_seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "600",
        "600/",
        "/60",
        "600/60s",
        "600/1m",
        "600 per 60",
        "600/60/1",
        "-1/60",
        "1.5/60",
        "600/-60",
        "600/1e3",
        "600/.5",
        "600/inf",
        "600/nan",
        "٦/60",  # a non-ASCII digit
        "0/60",
        "600/0",
        "600/0.0",
        f"1/{MAX_WINDOW_SECONDS + 1}",
    ],
)
def test_parse_rejects_other_text_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="invalid rate limit") as caught:
        RateLimit.parse(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    ("requests", "per_seconds", "field"),
    [
        (0, 60, "requests"),
        (-5, 60, "requests"),
        (1.5, 60, "requests"),
        (True, 60, "requests"),
        ("10", 60, "requests"),
        (10, 0, "per_seconds"),
        (10, -1.0, "per_seconds"),
        (10, math.inf, "per_seconds"),
        (10, math.nan, "per_seconds"),
        (10, "60", "per_seconds"),
        (10, True, "per_seconds"),
        (10, MAX_WINDOW_SECONDS + 1, "per_seconds"),
    ],
)
def test_rate_limit_validates_fields(requests: Any, per_seconds: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RateLimit(requests, per_seconds)


def test_rate_limit_accepts_bounds() -> None:
    assert RateLimit(1, MAX_WINDOW_SECONDS).per_seconds == MAX_WINDOW_SECONDS
    assert RateLimit(1, 0.001).requests == 1


# --- the shared arithmetic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "fraction", "expected"),
    [
        (0, 0.0, 10),
        (10, 0.0, 0),
        (10, 0.5, 5),
        (10, 0.25, 2),  # 10 - 7.5 leaves room for 2 whole requests
        (10, 0.9, 9),
        (4, 0.5, 8),
        (30, 0.1, 0),  # never negative
    ],
)
def test_capacity_weights_the_previous_window_by_what_remains_of_it(
    previous: int, fraction: float, expected: int
) -> None:
    assert capacity(previous, fraction, RateLimit(10, 60)) == expected


@pytest.mark.parametrize(
    ("previous", "current", "fraction", "expected"),
    [
        (0, 0, 0.0, RateDecision(True, 0, 9, 60)),  # the window ends in 60 s
        (0, 9, 0.0, RateDecision(True, 0, 0, 60)),
        (0, 10, 0.5, RateDecision(False, 36, 0, 36)),  # full window: 30 s to its end, then 6 s (10 * 0.9 <= 9)
        (0, 10, 0.0, RateDecision(False, 66, 0, 66)),  # 60 s to the window's end, then 6 s more
        (10, 0, 0.0, RateDecision(False, 6, 0, 6)),  # 10 * (1 - f) <= 9 from f = 0.1
        (10, 4, 0.5, RateDecision(True, 0, 0, 30)),  # room for 5: this is the fifth
        (10, 5, 0.5, RateDecision(False, 6, 0, 6)),  # a sixth needs 10 * (1 - f) <= 4: f = 0.6
        (20, 0, 0.0, RateDecision(False, 33, 0, 33)),  # 20 * (1 - f) <= 9 from f = 0.55
        (10, 1, 0.199, RateDecision(False, 1, 0, 1)),  # room again at f = 0.2, 0.06 s away: still 1
    ],
)
def test_decide(previous: int, current: int, fraction: float, expected: RateDecision) -> None:
    assert decide(previous, current, fraction, RateLimit(10, 60)) == expected


def test_a_caller_that_waits_exactly_retry_after_is_admitted_even_beyond_one_window() -> None:
    limit = RateLimit(2, 3600)
    refused = decide(0, 2, 0.1, limit)  # full window: 3240 s to its end, then half of the next one
    assert not refused.allowed and refused.retry_after_seconds == 5040
    index, fraction = window_position(0.1 * 3600 + refused.retry_after_seconds, limit)
    assert index == 1 and decide(2, 0, fraction, limit).allowed
    _, early = window_position(0.1 * 3600 + refused.retry_after_seconds - 2, limit)
    assert not decide(2, 0, early, limit).allowed


def decision_later(previous: int, current: int, fraction: float, limit: RateLimit, seconds: float) -> RateDecision:
    """The decision ``seconds`` after a refused one, with no request admitted in between."""
    position = fraction + seconds / limit.per_seconds
    if position < 1:
        return decide(previous, current, position, limit)
    if position < 2:
        return decide(current, 0, position - 1, limit)
    return decide(0, 0, position - 2, limit)


@settings(max_examples=400, deadline=None)
@given(
    requests=st.integers(1, 50),
    per_seconds=st.sampled_from([0.5, 1.0, 7.0, 60.0, 3600.0]),
    previous=st.integers(0, 60),
    current=st.integers(0, 60),
    fraction=st.floats(0.0, 0.999),
)
def test_retry_after_is_the_first_whole_second_with_room(
    requests: int, per_seconds: float, previous: int, current: int, fraction: float
) -> None:
    limit = RateLimit(requests, per_seconds)
    decision = decide(previous, current, fraction, limit)
    if decision.allowed:
        assert decision.retry_after_seconds == 0
        assert 0 <= decision.remaining < requests
        return
    assert decision.remaining == 0
    assert 1 <= decision.retry_after_seconds <= math.ceil(2 * per_seconds)
    # Waiting exactly Retry-After is always enough, even when that is beyond the current window.
    assert decision_later(previous, current, fraction, limit, decision.retry_after_seconds).allowed
    if decision.retry_after_seconds > 1:
        assert not decision_later(previous, current, fraction, limit, decision.retry_after_seconds - 1).allowed


# --- both limiters -----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [RateLimit(1, 1), RateLimit(3, 10), RateLimit(600, 60), RateLimit(5, 0.5)])
def test_allows_exactly_requests_then_refuses(make: Callable[[Clock], RateLimiter], limit: RateLimit) -> None:
    limiter = make(Clock())
    decisions = burst(limiter, "partner-a", limit, limit.requests)
    assert [d.allowed for d in decisions] == [True] * limit.requests
    assert [d.remaining for d in decisions] == list(range(limit.requests - 1, -1, -1))
    assert all(d.retry_after_seconds == 0 for d in decisions)
    refused = limiter.acquire("partner-a", limit)
    assert not refused.allowed
    assert refused.retry_after_seconds >= 1
    assert refused.remaining == 0


def test_keys_are_independent(make: Callable[[Clock], RateLimiter]) -> None:
    limiter, limit = make(Clock()), RateLimit(3, 60)
    burst(limiter, "partner-a", limit, 3)
    assert not limiter.acquire("partner-a", limit).allowed
    assert [d.allowed for d in burst(limiter, "partner-b", limit, 4)] == [True, True, True, False]
    assert not limiter.acquire("partner-a", limit).allowed


def test_same_key_with_another_window_length_is_counted_apart(make: Callable[[Clock], RateLimiter]) -> None:
    limiter = make(Clock(90.0))  # window 1 of 60 s and window 1 of 90 s: the index alone would collide
    burst(limiter, "partner-a", RateLimit(2, 60), 2)
    assert not limiter.acquire("partner-a", RateLimit(2, 60)).allowed
    assert limiter.acquire("partner-a", RateLimit(2, 90)).allowed


@pytest.mark.parametrize(
    ("seconds_later", "admitted"),
    [
        (0.0, 0),  # same instant
        (29.0, 0),  # end of the same window
        (30.0, 0),  # next window starts: the previous one still counts whole
        (45.0, 2),  # a quarter in: 10 * 0.75 = 7.5 counted, room for 2
        (60.0, 5),  # one full window later, half-way into the next: the previous window counts half
        (84.0, 9),
        (90.0, 10),  # two windows later: nothing counts any more
        (6000.0, 10),
    ],
)
def test_the_window_slides(make: Callable[[Clock], RateLimiter], seconds_later: float, admitted: int) -> None:
    clock, limit = Clock(EPOCH + 30.0), RateLimit(10, 60)
    limiter = make(clock)
    assert all(d.allowed for d in burst(limiter, "partner-a", limit, 10))
    clock.now += seconds_later
    decisions = burst(limiter, "partner-a", limit, 11)
    assert [d.allowed for d in decisions] == [True] * admitted + [False] * (11 - admitted)


def test_allowed_again_after_retry_after(make: Callable[[Clock], RateLimiter]) -> None:
    clock, limit = Clock(EPOCH + 30.0), RateLimit(10, 60)
    limiter = make(clock)
    burst(limiter, "partner-a", limit, 10)
    clock.now += 31.0  # 1 s into the next window: previous counts 10 * 59/60, no room
    refused = limiter.acquire("partner-a", limit)
    assert not refused.allowed
    assert refused.retry_after_seconds == 5  # from 6 s in, 10 * 0.9 = 9 leaves room for 1
    clock.now += refused.retry_after_seconds - 1
    assert not limiter.acquire("partner-a", limit).allowed
    clock.now += 1
    assert limiter.acquire("partner-a", limit).allowed


def test_refused_requests_are_not_counted_so_a_hammering_caller_keeps_its_share(
    make: Callable[[Clock], RateLimiter],
) -> None:
    clock, limit = Clock(), RateLimit(10, 60)
    limiter = make(clock)
    admitted_per_window = [0] * 10
    for tick in range(600 * 4):  # four calls a second for ten windows, 24 times the limit
        clock.now = EPOCH + tick / 4
        if limiter.acquire("partner-a", limit).allowed:
            admitted_per_window[tick // 240] += 1
    assert admitted_per_window[0] == 10
    assert all(count >= 5 for count in admitted_per_window), admitted_per_window
    assert sum(admitted_per_window) <= 10 * 10


# --- MongoDB -----------------------------------------------------------------------------------------


def test_containers_share_one_count_through_mongo() -> None:
    collection, clock, limit = new_collection(), Clock(), RateLimit(5, 60)
    containers = [MongoRateLimiter(collection, clock=clock) for _ in range(3)]
    decisions = [containers[i % 3].acquire("partner-a", limit) for i in range(9)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 4


def test_ensure_indexes_creates_the_ttl_index() -> None:
    collection = new_collection()
    limiter = MongoRateLimiter(collection, clock=Clock())
    limiter.ensure_indexes()
    limiter.ensure_indexes()  # idempotent
    ttl = [spec for spec in collection.index_information().values() if spec["key"] == [("expiresAt", 1)]]
    assert len(ttl) == 1
    assert ttl[0]["expireAfterSeconds"] == 0


def test_window_documents_expire_one_window_after_their_window_ends() -> None:
    collection, clock = new_collection(), Clock(EPOCH + 15.0)
    MongoRateLimiter(collection, clock=clock).acquire("partner-a", RateLimit(10, 60))
    [document] = collection.find()
    start = dt.datetime.fromtimestamp(EPOCH, tz=dt.UTC)
    assert document["count"] == 1
    assert document["key"] == "partner-a"
    assert document["_id"].startswith("partner-a:")
    assert document["windowStart"].replace(tzinfo=dt.UTC) == start
    assert document["expiresAt"].replace(tzinfo=dt.UTC) == start + dt.timedelta(seconds=120)


def test_a_refused_request_writes_nothing() -> None:
    collection, limit = new_collection(), RateLimit(2, 60)
    limiter = MongoRateLimiter(collection, clock=Clock())
    burst(limiter, "partner-a", limit, 5)
    assert [d["count"] for d in collection.find()] == [2]


class RacingCollection:
    """A mongomock collection where another container acts just before this one's first update."""

    def __init__(self, other_container: Callable[[Any, str], None]) -> None:
        self.inner = new_collection()
        self.other_container = other_container
        self.raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def find_one_and_update(self, filter: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if not self.raced:
            self.raced = True
            self.other_container(self.inner, filter["_id"])
        return self.inner.find_one_and_update(filter, *args, **kwargs)


def test_mongo_retries_after_losing_an_insert_race() -> None:
    def insert_first(collection: Any, document_id: str) -> None:
        collection.insert_one({"_id": document_id, "count": 1})
        raise DuplicateKeyError("E11000 duplicate key error")

    racing = RacingCollection(insert_first)
    decision = MongoRateLimiter(racing, clock=Clock()).acquire("partner-a", RateLimit(3, 60))
    assert decision == RateDecision(allowed=True, retry_after_seconds=0, remaining=1, reset_seconds=60)
    assert racing.inner.find_one()["count"] == 2


def test_mongo_refuses_when_another_container_filled_the_window_meanwhile() -> None:
    def fill(collection: Any, document_id: str) -> None:
        collection.insert_one({"_id": document_id, "count": 3})

    racing = RacingCollection(fill)
    decision = MongoRateLimiter(racing, clock=Clock()).acquire("partner-a", RateLimit(3, 60))
    assert not decision.allowed
    assert decision.retry_after_seconds >= 1
    assert racing.inner.find_one()["count"] == 3


class FailingCollection:
    """A mongomock collection whose ``method`` raises ``error`` (by default: the cluster is unreachable)."""

    def __init__(self, method: str, error: Exception | None = None) -> None:
        self.inner = new_collection()
        self.method = method
        self.error = error or ServerSelectionTimeoutError("db-host.internal:27017: timed out")

    def __getattr__(self, name: str) -> Any:
        if name == self.method:

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise self.error

            return fail
        return getattr(self.inner, name)


@pytest.mark.parametrize("method", ["find", "find_one_and_update"])
def test_mongo_fails_open_and_logs_the_key(method: str, caplog: pytest.LogCaptureFixture) -> None:
    limit = RateLimit(1, 60)
    limiter = MongoRateLimiter(FailingCollection(method), clock=Clock())
    with caplog.at_level(logging.WARNING, logger="distiller.adapters.rate_limits"):
        decisions = burst(limiter, "partner-a", limit, 3)
    assert all(d.allowed and d.retry_after_seconds == 0 for d in decisions)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all("partner-a" in r.getMessage() for r in warnings)
    assert all("ServerSelectionTimeoutError" in r.getMessage() for r in warnings)
    assert not any("db-host" in r.getMessage() for r in warnings)


def test_mongo_does_not_swallow_other_errors() -> None:
    limiter = MongoRateLimiter(FailingCollection("find", TypeError("a bug, not an outage")), clock=Clock())
    with pytest.raises(TypeError):
        limiter.acquire("partner-a", RateLimit(1, 60))


# --- Mongo and in-memory agree -----------------------------------------------------------------------

LIMITS = [RateLimit(1, 1), RateLimit(3, 2), RateLimit(4, 0.5), RateLimit(5, 10)]


@settings(max_examples=150, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.integers(0, 24),  # quarter seconds since the previous call
            st.sampled_from(["partner-a", "partner-b", "partner-a:1"]),
            st.integers(0, len(LIMITS) - 1),
        ),
        max_size=120,
    )
)
def test_mongo_and_memory_limiters_agree(calls: list[tuple[int, str, int]]) -> None:
    clock = Clock()
    mongo, memory = make_mongo(clock), make_memory(clock)
    memory._sweep_floor = memory._sweep_at = 2  # prune often, so pruning is exercised too
    for quarters, key, limit_index in calls:
        clock.now += quarters / 4
        limit = LIMITS[limit_index]
        assert mongo.acquire(key, limit) == memory.acquire(key, limit), (clock.now - EPOCH, key, limit)


def test_memory_limiter_prunes_windows_that_can_no_longer_be_read() -> None:
    clock, limit = Clock(), RateLimit(1, 1)
    limiter = make_memory(clock)
    for second in range(1000):
        clock.now = EPOCH + second
        limiter.acquire(f"partner-{second % 7}", limit)
    assert len(limiter._counts) < 64
