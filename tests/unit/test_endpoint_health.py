"""Endpoint health's pure rules: when a partner is paused, and which round a held delivery goes in."""

from __future__ import annotations

import datetime as dt

import mongomock
import pytest

from distiller.adapters.endpoint_health import MongoPartnerHealth
from distiller.core.partners import PartnerRecordError, partner_from_record
from distiller.deliver.health import (
    HEALTH_ROUNDS_FROM,
    FailureStreak,
    HeldDelivery,
    PausePolicy,
    already_delivered,
    pause_reason,
)
from distiller.deliver.message import DeliveryMessage

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("policy", "streak", "paused"),
    [
        pytest.param(PausePolicy(dead_letters=5), FailureStreak(3, NOW - HOUR), None, id="4th-dead-letter-of-5"),
        pytest.param(PausePolicy(dead_letters=5), FailureStreak(4, NOW - HOUR), "5 consecutive", id="5th-pauses"),
        pytest.param(PausePolicy(dead_letters=1), FailureStreak(0, None), "1 consecutive", id="first-of-1"),
        pytest.param(
            PausePolicy(dead_letters=0, failing_hours=24), FailureStreak(40, NOW - 23 * HOUR), None, id="count-off"
        ),
        pytest.param(
            PausePolicy(dead_letters=0, failing_hours=24),
            FailureStreak(1, NOW - 24 * HOUR),
            "every attempt failed since 2026-05-31T12:00:00.000Z (24 h or more)",
            id="failing-24h",
        ),
        pytest.param(
            PausePolicy(dead_letters=9, failing_hours=0.5), FailureStreak(0, NOW - HOUR), "0.5 h", id="half-hour"
        ),
        pytest.param(PausePolicy(dead_letters=9, failing_hours=0), FailureStreak(0, NOW - 99 * HOUR), None, id="off"),
        pytest.param(PausePolicy(), FailureStreak(0, None), None, id="no-failures-yet"),
    ],
)
def test_pause_reason(policy: PausePolicy, streak: FailureStreak, paused: str | None) -> None:
    reason = pause_reason(streak, policy, NOW)
    if paused is None:
        assert reason is None
    else:
        assert reason is not None and paused in reason


def message(round_: int = 0, attempt: int = 3) -> DeliveryMessage:
    return DeliveryMessage(
        partner_id="acme",
        event="deal.created",
        event_id="e" * 64,
        event_key="k",
        payload={"event": "deal.created", "eventId": "e" * 64},
        emitted_at="2026-06-01T11:00:00.000Z",
        attempt=attempt,
        last_error="HTTP 503",
        redrive=round_,
    )


def test_a_resumed_delivery_is_its_own_round_with_the_whole_schedule_and_the_same_one_each_drain() -> None:
    held = HeldDelivery.of(message(), NOW, "paused")
    resumed = held.resumed()
    assert resumed.redrive == int(NOW.timestamp() * 1000) and resumed.attempt == 0 and resumed.last_error is None
    assert held.resumed() == resumed  # a repeated drain is the same round: deduplicated
    assert (resumed.event_id, resumed.emitted_at, resumed.payload) == (
        held.message().event_id,
        message().emitted_at,
        message().payload,
    )


def test_health_rounds_are_apart_from_replay_and_redrive_rounds() -> None:
    replay_round = int(NOW.timestamp())  # the partner API's replay: epoch seconds
    held = HeldDelivery.of(message(round_=replay_round), NOW, "paused")
    resumed = held.resumed().redrive
    assert resumed >= HEALTH_ROUNDS_FROM > replay_round + 10**9  # no replay second can reach it
    again = HeldDelivery.of(held.resumed(), NOW + HOUR, "paused again")  # drained, then held once more
    assert again.resumed().redrive > resumed  # a later round: its earlier attempts do not count against it


def test_each_probe_is_a_round_apart_from_the_resume_round() -> None:
    held = HeldDelivery.of(message(), NOW, "paused")
    probes = {held.probe(NOW + n * HOUR).redrive for n in range(3)}
    assert len(probes) == 3 and held.resumed().redrive not in probes
    assert held.probe(NOW).redrive != held.resumed().redrive  # a probe in the very millisecond of the hold


@pytest.mark.parametrize(
    ("held_round", "delivered_rounds", "expected"),
    [
        (0, set(), False),
        (0, {0}, True),
        (0, {1_780_000_000}, True),  # a probe or an earlier drain delivered it
        (1_780_000_000, {0}, False),  # a replay asks for a new copy: an earlier round does not count
        (1_780_000_000, {1_780_000_001}, True),
    ],
)
def test_already_delivered_counts_its_own_round_and_later_ones(held_round, delivered_rounds, expected) -> None:
    held = HeldDelivery.of(message(round_=held_round), NOW, "paused")
    assert already_delivered(held, {held.event_id: delivered_rounds}) is expected


def test_a_partner_records_state_is_validated() -> None:
    assert partner_from_record({"partnerId": "p", "state": "paused"}).paused is True
    assert partner_from_record({"partnerId": "p", "state": None}).paused is False
    with pytest.raises(PartnerRecordError, match=r"partner 'p'\.state: 'sleeping' is not one of active, paused"):
        partner_from_record({"partnerId": "p", "state": "sleeping"})


def test_the_streak_starts_after_the_last_delivered_attempt_and_pause_changes_the_record_once() -> None:
    db = mongomock.MongoClient(tz_aware=True)["privateauto"]
    log = db["webhook_deliveries"]

    def attempt(hours_ago: int, status: str, dead: bool = False, partner: str = "acme", url: str | None = "u") -> None:
        at = NOW - hours_ago * HOUR
        log.insert_one({"partnerId": partner, "status": status, "deadLettered": dead, "attemptedAt": at, "url": url})

    attempt(30, "failed", dead=True)
    attempt(20, "delivered")
    attempt(10, "failed")
    attempt(9, "failed", dead=True)
    attempt(5, "held")
    attempt(4, "failed", dead=True)
    attempt(3, "failed", dead=True, url=None)  # a give-up or an expired hold: no attempt at the endpoint
    attempt(1, "failed", dead=True, partner="other")
    health = MongoPartnerHealth(db)
    assert health.failure_streak("acme", 5) == FailureStreak(2, NOW - 10 * HOUR)
    assert health.failure_streak("acme", 1).dead_letters == 1  # counted only as far as needed
    assert health.failure_streak("nobody", 5) == FailureStreak(0, None)
    # An operator's resume starts a fresh count, as a delivered attempt does.
    db["partners"].insert_one({"partnerId": "acme", "health": {"resumedAt": NOW - 6 * HOUR}})
    assert health.failure_streak("acme", 5) == FailureStreak(1, NOW - 4 * HOUR)
    db["partners"].delete_many({})

    db["partners"].insert_one({"partnerId": "acme"})
    assert health.is_paused("acme") is False
    assert health.pause("acme", "5 dead letters", NOW) is True
    assert health.pause("acme", "again", NOW) is False  # one invocation wins: one alarm
    assert health.is_paused("acme") is True
    assert [p.partner_id for p in health.paused()] == ["acme"] and health.paused()[0].reason == "5 dead letters"
    assert health.resume("acme", NOW, "probe delivered") is True
    assert health.resume("acme", NOW, "probe delivered") is False
    record = db["partners"].find_one({"partnerId": "acme"})
    assert "state" not in record and record["health"]["resumedBy"] == "probe delivered"


def test_a_local_runs_table_counts_held_deliveries_in_a_column_of_their_own_only_when_there_are_some() -> None:
    from distiller_tools.local.pipeline import RunReport

    def attempt(status: str, dead: bool = False) -> dict[str, object]:
        return {"partnerId": "acme", "event": "deal.created", "status": status, "deadLettered": dead}

    quiet = RunReport(attempts=[attempt("delivered"), attempt("failed")])
    assert quiet.table().splitlines()[0].split()[-1] == "skipped"
    paused = RunReport(attempts=[attempt("failed"), attempt("failed", dead=True), attempt("held"), attempt("held")])
    header, row, _ = paused.table().splitlines()
    assert header.split() == ["partner", "event", "delivered", "retried", "dead-lettered", "skipped", "held"]
    assert row.split() == ["acme", "deal.created", "0", "1", "1", "0", "2"]
