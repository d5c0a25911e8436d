"""Claims on delivery attempts: one invocation makes each attempt, a crashed one's lease runs out."""

from __future__ import annotations

import datetime as dt

import mongomock
import pytest

from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.deliver.log import AttemptKey, ClaimHeld

START = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(clock: Clock) -> MongoDeliveryLog:
    database = mongomock.MongoClient(tz_aware=True)["privateauto"]
    log = MongoDeliveryLog(database["webhook_deliveries"], clock=clock)
    log.ensure_indexes(retention_days=30)
    return log


KEY = AttemptKey("acme", "ab" * 32, attempt=1)


def test_the_first_claim_wins_and_a_second_waits_for_the_lease(log: MongoDeliveryLog, clock: Clock) -> None:
    token = log.claim(KEY, lease_seconds=120)
    assert isinstance(token, str)
    clock.now += dt.timedelta(seconds=30)
    held = log.claim(KEY, lease_seconds=120)
    assert isinstance(held, ClaimHeld)
    assert held.retry_in_seconds == 91
    assert "another invocation" in held.reason and "2026-12-01T12:02:00" in held.reason


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(AttemptKey("acme", "ab" * 32, attempt=2), id="next-attempt"),
        pytest.param(AttemptKey("acme", "ab" * 32, attempt=1, redrive=1), id="next-round"),
        pytest.param(AttemptKey("lendco", "ab" * 32, attempt=1), id="other-partner"),
        pytest.param(AttemptKey("acme", "cd" * 32, attempt=1), id="other-event"),
    ],
)
def test_claims_are_per_partner_event_round_and_attempt(log: MongoDeliveryLog, other: AttemptKey) -> None:
    assert isinstance(log.claim(KEY, 120), str)
    assert isinstance(log.claim(other, 120), str)


def test_an_expired_lease_is_taken_over_once(log: MongoDeliveryLog, clock: Clock) -> None:
    crashed = log.claim(KEY, 120)
    clock.now += dt.timedelta(seconds=121)
    taken = log.claim(KEY, 120)
    assert isinstance(taken, str) and taken != crashed
    assert isinstance(log.claim(KEY, 120), ClaimHeld)  # the takeover holds a fresh lease


def test_a_released_claim_can_be_made_again_but_only_by_its_holder(log: MongoDeliveryLog) -> None:
    token = log.claim(KEY, 120)
    assert isinstance(token, str)
    log.release(KEY, "not-the-token")
    assert isinstance(log.claim(KEY, 120), ClaimHeld)
    log.release(KEY, token)
    assert isinstance(log.claim(KEY, 120), str)
