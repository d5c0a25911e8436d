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
from distiller.core.clock import iso_utc
from distiller.deliver.attempts import RetrySchedule
from distiller.deliver.dispatch import Dispatcher
from distiller.deliver.handler import handle_deliveries, report_pause
from distiller.deliver.health import HELD_COLLECTION, PAUSED_METRIC, HeldDelivery, PausePolicy
from distiller.deliver.health_handler import handle_health_sweep
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.partner_metrics import (
    HELD_METRIC,
    PARTNER_DIMENSION,
    STAGE_DIMENSION,
    PartnerTally,
)
from distiller.deliver.signing import verify
from distiller.deliver.sweep import HealthSweep, SweepFailed, SweepReport
from distiller.observability import metrics
from distiller.runtime import HealthRuntime, held_deliveries
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

    def __init__(self, queues: Any, url: str, *, active: bool = True, on_pause: Any = None) -> None:
        self.world = queues
        self.db = queues.collection.database
        self.clock = Clock()
        self.secret = queues.add_partner("acme", url, active=active)
        self.db["partners"].insert_one({"partnerId": "acme", "active": active, "webhook": {"url": url}})
        self.partners = MongoLookups(self.db, ttl_seconds=0).partners
        self.held = held_deliveries(self.db)
        self.health = MongoPartnerHealth(self.db)
        self.paused: list[str] = []
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
            on_pause=on_pause or self.paused.append,
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
    return [replace(message("acme"), emitted_at=iso_utc(START - dt.timedelta(seconds=60 - n))) for n in range(count)]


def test_a_partner_down_then_up_receives_every_held_delivery_exactly_once_in_order(world, serve, stack_for):  # noqa: F811
    server = serve(default=Reply(503))
    stack = stack_for(server.url())
    first, second, *later = deliveries(6)

    # Down: the first delivery is dead-lettered after its two attempts; the second one's last
    # failure is the second consecutive dead letter, so the partner is paused and it is held.
    assert stack.dispatch_until_settled(first) == ["retry-scheduled", "dead-lettered"]
    assert stack.dispatch(second) == ["retry-scheduled"]
    assert stack.dispatch(*world.take(world.retry_url)) == ["held"]
    assert stack.paused == ["acme"]  # reported once, by the invocation that paused it
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

    # Up: the next probe takes the least-probed delivery (the oldest not probed yet), is delivered,
    # resumes the partner and drains the rest.
    server.default = Reply(200)
    up_from = len(server.received)
    report = stack.sweep(POLICY.probe_seconds)
    assert report.probes == {"acme": True} and report.resumed == ["acme"] and report.drained == {"acme": 4}
    assert server.received[up_from].header("X-PA-Event-Id") == later[0].event_id
    assert "state" not in stack.record()
    assert stack.held.count("acme") == 0
    queued = [DeliveryMessage.from_body(q.raw) for q in world.queued(world.delivery_url)]
    assert [m.event_id for m in queued] == [m.event_id for m in [second, *later[1:]]]  # oldest emitted first
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

    assert "crashed before removing" in stack.crashing_sweep().run().errors["acme"]
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
    assert "crashed before removing" in stack.crashing_sweep().run().errors["acme"]
    assert len(server.received) == 1 and stack.record()["state"] == "paused"
    report = stack.sweep(POLICY.probe_seconds)
    assert report.already_delivered == 1  # found delivered in a later round: removed unsent
    assert report.probes == {"acme": True}  # the probe went to the next one, which resumed the partner
    assert report.resumed == ["acme"]
    assert [r.header("X-PA-Event-Id") for r in server.received] == [oldest.event_id, newer.event_id]


def test_held_deliveries_past_the_retention_are_dead_lettered_with_their_reason(world, serve, stack_for):  # noqa: F811
    server = serve(default=Reply(503))
    stack = stack_for(server.url())
    (old,) = deliveries(1)
    recent = replace(message("acme"), emitted_at=iso_utc(START + dt.timedelta(days=10)))
    # Retention counts from emission: a delivery re-held yesterday is still as old as its emission.
    stack.held.hold(HeldDelivery.of(old, START + dt.timedelta(days=14), "test"))
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
    assert [h.event_id for h in stack.held.oldest("acme", 10, stack.clock())] == [recent.event_id]
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
    stack = stack_for(server.url(), on_pause=report_pause)  # as DispatcherRuntime.build wires it
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


def test_a_stale_cached_pause_is_checked_afresh_and_the_delivery_is_sent(world, serve, stack_for):  # noqa: F811
    server = serve()
    stack = stack_for(server.url())
    (one,) = deliveries(1)
    stale = Dispatcher(  # its partner list was read while the partner was paused; the record is resumed now
        partners=lambda: [replace(p, paused=True) for p in stack.partners()],
        secrets=world.secrets,
        sender=world.sender(),
        log=world.log,
        retry_queue=world.queue(world.retry_url),
        dead_letter_queue=world.queue(world.dlq_url),
        held=stack.held,
        health=stack.health,
    )
    try:
        assert stale.dispatch_all([one]) == ["delivered"]
    finally:
        stale.close()
    assert stack.held.count("acme") == 0 and len(server.received) == 1


def test_a_delivery_being_probed_is_left_by_a_drain(world, serve, stack_for):  # noqa: F811
    server = serve()
    stack = stack_for(server.url())
    probed, other = deliveries(2)
    for m in (probed, other):
        stack.held.hold(HeldDelivery.of(m, START, "test"))
    [candidate] = [h for h in stack.held.least_probed("acme", 10) if h.event_id == probed.event_id]
    assert stack.held.lease(candidate, START, START + dt.timedelta(minutes=2))
    assert not stack.held.lease(candidate, START, START + dt.timedelta(minutes=2))  # one probe at a time

    report = SweepReport()
    stack.sweeper.drain("acme", START, report)

    assert report.drained == {"acme": 1}
    assert [h.event_id for h in stack.held.least_probed("acme", 10)] == [probed.event_id]
    stack.held.probe_failed(candidate)  # the probe failed: counted, the lease ended
    [after] = stack.held.least_probed("acme", 10)
    assert after.probes == 1 and stack.held.oldest("acme", 10, START) == [after]


def test_once_held_a_failing_log_write_does_not_send_the_message_back(world, serve, stack_for):  # noqa: F811
    server = serve()
    stack = stack_for(server.url())
    stack.health.pause("acme", "test", START)
    (one,) = deliveries(1)

    class LogDown:
        def __getattr__(self, name: str) -> Any:
            return getattr(world.log, name)

        def record(self, attempt: Any) -> None:
            raise RuntimeError("delivery log down")

    dispatcher = Dispatcher(
        partners=stack.partners,
        secrets=world.secrets,
        sender=world.sender(),
        log=LogDown(),
        retry_queue=world.queue(world.retry_url),
        dead_letter_queue=world.queue(world.dlq_url),
        held=stack.held,
        health=stack.health,
    )
    try:
        # Not an exception (which would return the message to SQS): the held copy is the one copy.
        assert dispatcher.dispatch_all([one]) == ["held"]
        assert dispatcher.dispatch_all([one]) == ["held"]  # a redelivered copy: still held once
    finally:
        dispatcher.close()
    assert stack.held.count("acme") == 1 and server.received == []


def test_one_partners_failure_does_not_stop_the_sweep_for_the_others(world, serve, stack_for, lambda_context):  # noqa: F811
    server = serve()
    stack = stack_for(server.url())
    (ours,) = deliveries(1)
    stack.held.hold(HeldDelivery.of(ours, START, "test"))
    theirs = replace(message("broken"), emitted_at=ours.emitted_at)
    stack.db["partners"].insert_one({"partnerId": "broken", "active": True, "webhook": {"url": server.url()}})
    stack.held.hold(HeldDelivery.of(theirs, START, "test"))
    store = stack.held

    class BrokenForOne:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def oldest(self, partner_id: str, limit: int, now: dt.datetime) -> list[HeldDelivery]:
            if partner_id == "broken":
                raise RuntimeError("store timeout")
            return store.oldest(partner_id, limit, now)

    report = stack.health_sweep(BrokenForOne()).run()

    assert report.drained == {"acme": 1}
    assert "store timeout" in report.errors["broken"]
    # The function fails the invocation (its errors alarm), after sweeping the others.
    stack.held.hold(HeldDelivery.of(replace(ours, redrive=7), START, "test"))
    with pytest.raises(SweepFailed, match="broken: RuntimeError: store timeout"):
        handle_health_sweep({}, lambda_context, HealthRuntime(sweep=stack.health_sweep(BrokenForOne())))
    assert stack.held.count("acme") == 0
