"""Endpoint health end to end: a partner's endpoint down, then up (moto queues, mongomock, loopback).

The Dispatcher pauses the partner at its N-th consecutive dead letter and holds what follows; the
health sweep probes, resumes and drains; every held delivery reaches the partner exactly once,
with its original eventId, in order, and nothing is dead-lettered while paused.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from typing import Any

import pytest

from distiller.adapters.endpoint_health import MongoPartnerHealth
from distiller.adapters.lookups import MongoLookups
from distiller.adapters.queues import OutgoingMessage
from distiller.deliver.attempts import RetrySchedule
from distiller.deliver.dispatch import Dispatcher
from distiller.deliver.handler import handle_deliveries
from distiller.deliver.health import HELD_COLLECTION, PAUSED_METRIC, HeldDelivery, PausePolicy
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.partner_metrics import (
    HELD_METRIC,
    PARTNER_DIMENSION,
    STAGE_DIMENSION,
    PartnerTally,
)
from distiller.deliver.signing import verify
from distiller.deliver.sweep import HealthSweep, SweepReport
from distiller.observability import metrics
from distiller.runtime import held_deliveries
from tests.delivery_world import message, serve, world  # noqa: F401  (fixtures)
from tests.integration.loopback import Reply

START = dt.datetime.now(dt.UTC).replace(microsecond=0)
"""Now: the delivery log's TTL index (mongomock applies it) would expire entries dated in the past."""
POLICY = PausePolicy(dead_letters=2, failing_hours=24, probe_seconds=300, retention_days=14)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Stack:
    """The Dispatcher and the health sweep over one mongomock database and the world's queues."""

    def __init__(self, queues: Any, url: str, *, active: bool = True) -> None:
        self.world = queues
        self.db = queues.collection.database
        self.clock = Clock()
        self.secret = queues.add_partner("acme", url, active=active)
        self.db["partners"].insert_one({"partnerId": "acme", "active": active, "webhook": {"url": url}})
        self.partners = MongoLookups(self.db, ttl_seconds=0).partners
        self.held = held_deliveries(self.db)
        self.health = MongoPartnerHealth(self.db)
        self.dispatcher = Dispatcher(
            partners=self.partners,
            secrets=queues.secrets,
            sender=queues.sender(),
            log=queues.log,
            retry_queue=queues.queue(queues.retry_url),
            dead_letter_queue=queues.queue(queues.dlq_url),
            schedule=RetrySchedule((0,)),  # two attempts, then the dead-letter queue
            clock=self.clock,
            held=self.held,
            health=self.health,
            pause_policy=POLICY,
        )
        self.sweeper = self.health_sweep(self.held)

    def health_sweep(self, held: Any) -> HealthSweep:
        return HealthSweep(
            partners=self.partners,
            health=self.health,
            held=held,
            sender=self.world.sender(),
            secrets=self.world.secrets,
            log=self.world.log,
            delivery_queue=self.world.queue(self.world.delivery_url),
            dead_letters=self.world.queue(self.world.dlq_url),
            policy=POLICY,
            clock=self.clock,
        )

    def crashing_sweep(self) -> HealthSweep:
        """A sweep whose invocation dies at its first removal from the hold (after its queue sends)."""
        store = self.held

        class CrashOnRemove:
            def __getattr__(self, name: str) -> Any:
                return getattr(store, name)

            def remove(self, held: Any) -> None:
                if held:
                    raise RuntimeError("crashed before removing")

        return self.health_sweep(CrashOnRemove())

    def dispatch(self, *messages: DeliveryMessage, tally: PartnerTally | None = None) -> list[Any]:
        return self.dispatcher.dispatch_all(list(messages), tally=tally)

    def dispatch_until_settled(self, *messages: DeliveryMessage) -> list[Any]:
        """Dispatch, then dispatch the retry queue until it is empty (delays elapse at once)."""
        outcomes = self.dispatch(*messages)
        while retries := self.world.take(self.world.retry_url):
            outcomes += self.dispatch(*retries)
        return outcomes

    def sweep(self, after_seconds: float) -> SweepReport:
        self.clock.advance(after_seconds)
        return self.sweeper.run()

    def record(self) -> dict[str, Any]:
        return self.db["partners"].find_one({"partnerId": "acme"}, {"_id": 0})

    def close(self) -> None:
        self.dispatcher.close()


@pytest.fixture
def stack_for(world):  # noqa: F811
    made: list[Stack] = []

    def make(url: str, **options: Any) -> Stack:
        made.append(Stack(world, url, **options))
        return made[-1]

    yield make
    for stack in made:
        stack.close()


def deliveries(count: int) -> list[DeliveryMessage]:
    """Deliveries emitted a second apart, in that order."""
    return [replace(message("acme"), emitted_at=f"2026-03-02T08:59:{10 + n:02d}.000Z") for n in range(count)]


def test_a_partner_down_then_up_receives_every_held_delivery_exactly_once_in_order(world, serve, stack_for):  # noqa: F811
    server = serve(default=Reply(503))
    stack = stack_for(server.url())
    first, second, *later = deliveries(6)

    # Down: the first delivery is dead-lettered after its two attempts; the second one's last
    # failure is the second consecutive dead letter, so the partner is paused and it is held.
    assert stack.dispatch_until_settled(first) == ["retry-scheduled", "dead-lettered"]
    tally = PartnerTally()
    assert stack.dispatch(second, tally=tally) == ["retry-scheduled"]
    assert stack.dispatch(*world.take(world.retry_url), tally=tally) == ["held"]
    assert tally.paused_partners == ["acme"]
    record = stack.record()
    assert record["state"] == "paused"
    assert "2 consecutive deliveries dead-lettered" in record["health"]["reason"]
    # Paused: nothing is sent or dead-lettered; the deliveries are held and logged as such.
    posts_while_down = len(server.received)
    assert posts_while_down == 4
    assert stack.dispatch(*later) == ["held"] * 4
    assert len(server.received) == posts_while_down
    assert [q.body["eventId"] for q in world.queued(world.dlq_url)] == [first.event_id]
    assert world.queued(world.retry_url) == []
    assert stack.held.count("acme") == 5
    held_logged = [e["eventId"] for e in world.entries(partner_id="acme") if e["status"] == "held"]
    assert held_logged == [m.event_id for m in [second, *later]]

    # Still down: no probe before the interval, then a probe that fails keeps everything held.
    assert stack.sweep(60).probes == {}
    report = stack.sweep(POLICY.probe_seconds)
    assert report.probes == {"acme": False} and report.resumed == [] and report.still_held == {"acme": 5}
    assert stack.record()["health"]["lastProbeAt"] is not None
    assert stack.sweep(60).probes == {}  # the next probe waits for the interval again

    # Up: the next probe delivers the oldest held delivery, resumes the partner, drains the rest.
    server.default = Reply(200)
    up_from = len(server.received)
    report = stack.sweep(POLICY.probe_seconds)
    assert report.probes == {"acme": True} and report.resumed == ["acme"] and report.drained == {"acme": 4}
    assert "state" not in stack.record()
    assert stack.held.count("acme") == 0
    queued = [DeliveryMessage.from_body(q.raw) for q in world.queued(world.delivery_url)]
    assert [m.event_id for m in queued] == [m.event_id for m in later]  # oldest emitted first
    assert all(m.attempt == 0 and m.redrive > 0 for m in queued)  # a round of their own: the full schedule

    assert stack.dispatch(*world.take(world.delivery_url)) == ["delivered"] * 4
    # The dead letter from before the pause is redriven as any other.
    dead = world.take(world.dlq_url)
    assert stack.dispatch(*[m.next_round(m.redrive + 1) for m in dead]) == ["delivered"]

    arrived = server.received[up_from:]
    assert sorted(r.header("X-PA-Event-Id") for r in arrived) == sorted(
        m.event_id for m in [first, second, *later]
    )  # each exactly once
    for request in arrived:
        verify(stack.secret, request.headers, request.body)
        assert request.header("X-PA-Timestamp") in {m.emitted_at for m in [first, second, *later]}
    assert stack.sweep(POLICY.probe_seconds) == SweepReport()  # nothing left to do


def test_a_drain_repeated_after_a_crash_is_delivered_once(world, serve, stack_for):  # noqa: F811
    server = serve()
    stack = stack_for(server.url())
    held = deliveries(3)
    for m in held:
        assert stack.held.hold(HeldDelivery.of(m, START, "test"))
    assert not stack.held.hold(HeldDelivery.of(held[0], START, "test"))  # held once per round

    with pytest.raises(RuntimeError, match="crashed"):
        stack.crashing_sweep().run()
    assert stack.sweep(60).drained == {"acme": 3}  # drained again: six messages on the queue
    queued = world.take(world.delivery_url)
    assert len(queued) == 6
    outcomes = stack.dispatch(*queued)
    assert sorted(outcomes) == ["delivered"] * 3 + ["skipped"] * 3
    assert sorted(r.header("X-PA-Event-Id") for r in server.received) == sorted(m.event_id for m in held)


def test_a_probe_delivered_before_a_crash_is_not_sent_again(world, serve, stack_for):  # noqa: F811
    server = serve()
    stack = stack_for(server.url())
    oldest, newer = deliveries(2)
    for m in (oldest, newer):
        stack.held.hold(HeldDelivery.of(m, START, "test"))
    stack.health.pause("acme", "test", START)
    # The probe is delivered and logged, then the invocation dies before removing it from the hold.
    stack.clock.advance(POLICY.probe_seconds)
    with pytest.raises(RuntimeError, match="crashed"):
        stack.crashing_sweep().run()
    assert len(server.received) == 1 and stack.record()["state"] == "paused"
    report = stack.sweep(POLICY.probe_seconds)
    assert report.already_delivered == 1  # found delivered in a later round: removed unsent
    assert report.probes == {"acme": True}  # the probe went to the next one, which resumed the partner
    assert report.resumed == ["acme"]
    assert [r.header("X-PA-Event-Id") for r in server.received] == [oldest.event_id, newer.event_id]


def test_held_deliveries_past_the_retention_are_dead_lettered_with_their_reason(world, serve, stack_for):  # noqa: F811
    server = serve(default=Reply(503))
    stack = stack_for(server.url())
    old, recent = deliveries(2)
    stack.held.hold(HeldDelivery.of(old, START, "test"))
    stack.held.hold(HeldDelivery.of(recent, START + dt.timedelta(days=10), "test"))
    stack.health.pause("acme", "test", START)
    stack.health.probed("acme", START + dt.timedelta(days=15), "down")  # no probe in this sweep
    report = stack.sweep(15 * 86400)
    assert report.expired == 1
    (parked,) = world.queued(world.dlq_url)
    assert parked.body["eventId"] == old.event_id
    assert "14-day retention" in parked.body["lastError"]
    (entry,) = [e for e in world.entries(event_id=old.event_id)]
    assert entry["status"] == "failed" and entry["deadLettered"] is True and "retention" in entry["error"]
    assert [h.event_id for h in stack.held.oldest("acme", 10)] == [recent.event_id]
    assert server.received == []


def test_an_inactive_partner_keeps_its_held_deliveries_until_enabled(world, serve, stack_for):  # noqa: F811
    server = serve()
    stack = stack_for(server.url(), active=False)
    (held,) = deliveries(1)
    stack.held.hold(HeldDelivery.of(held, START, "test"))
    report = stack.sweep(60)
    assert report.drained == {} and stack.held.count("acme") == 1
    stack.db["partners"].update_one({"partnerId": "acme"}, {"$set": {"active": True}})
    assert stack.sweep(60).drained == {"acme": 1}


def test_a_failing_partner_below_the_threshold_is_dead_lettered_not_paused(world, serve, stack_for):  # noqa: F811
    server = serve(default=Reply(500))
    stack = stack_for(server.url())
    (only,) = deliveries(1)
    assert stack.dispatch_until_settled(only) == ["retry-scheduled", "dead-lettered"]
    assert "state" not in stack.record()
    assert stack.db[HELD_COLLECTION].count_documents({}) == 0


def test_a_delivered_attempt_between_dead_letters_resets_the_count(world, serve, stack_for):  # noqa: F811
    server = serve(Reply(500), Reply(500), Reply(200), default=Reply(500))
    stack = stack_for(server.url())
    one, two, three = deliveries(3)
    assert stack.dispatch_until_settled(one)[-1] == "dead-lettered"
    stack.clock.advance(1)
    assert stack.dispatch(two) == ["delivered"]
    stack.clock.advance(1)
    assert stack.dispatch_until_settled(three)[-1] == "dead-lettered"  # one since the delivery: below 2
    assert "state" not in stack.record()


def test_the_dispatcher_function_reports_the_pause_once_for_the_alarm_and_counts_held(
    world,  # noqa: F811
    serve,  # noqa: F811
    stack_for,
    lambda_context,
    capsys,
    monkeypatch,
):
    monkeypatch.setenv("STAGE", "prod")
    metrics.clear_metrics()
    server = serve(default=Reply(503))
    stack = stack_for(server.url())
    first, second, third = deliveries(3)
    stack.dispatch_until_settled(first)
    runtime = world.runtime(stack.dispatcher)
    # second's last failure pauses the partner; third, in the same batch as a later one, is held
    world.queue(world.delivery_url).send([OutgoingMessage(second.after_attempt("t", "HTTP 503").to_body())])
    handle_deliveries(world.sqs_event(world.delivery_url, world.receive(world.delivery_url)), lambda_context, runtime)
    world.queue(world.delivery_url).send([OutgoingMessage(third.to_body())])
    handle_deliveries(world.sqs_event(world.delivery_url, world.receive(world.delivery_url)), lambda_context, runtime)

    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    paused = [b for b in blobs if PAUSED_METRIC in b]
    assert len(paused) == 1  # once, though two batches held deliveries
    [directive] = paused[0]["_aws"]["CloudWatchMetrics"]
    assert sorted(directive["Dimensions"][0]) == ["service", STAGE_DIMENSION]  # what the alarm watches
    assert (paused[0][PAUSED_METRIC], paused[0][STAGE_DIMENSION]) == ([1.0], "prod")
    held = [b[HELD_METRIC] for b in blobs if b.get(PARTNER_DIMENSION) == "acme" and HELD_METRIC in b]
    assert held == [[1.0], [1.0]]
    metrics.clear_metrics()


def test_no_probe_starts_without_time_for_a_whole_attempt(world, serve, stack_for):  # noqa: F811
    server = serve()
    stack = stack_for(server.url())
    (held,) = deliveries(1)
    stack.held.hold(HeldDelivery.of(held, START, "test"))
    stack.health.pause("acme", "test", START)
    stack.clock.advance(POLICY.probe_seconds)
    report = stack.sweeper.run(remaining_seconds=stack.sweeper.attempt_budget_seconds)  # no margin left
    assert report.probes == {} and server.received == [] and stack.record()["state"] == "paused"
    assert stack.sweeper.run(remaining_seconds=60).probes == {"acme": True}  # still due: probed next time
