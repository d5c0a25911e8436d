"""The health sweep function invoked in-process with events/health/schedule.json (as `sam local
invoke HealthFunction` would), over a `HealthRuntime` built as the Lambda builds it
(`HealthRuntime.build`) from local pieces: mongomock for the partner record, the held deliveries
and the delivery log, moto SQS and Secrets Manager, and a loopback partner endpoint.

A partner paused ten minutes ago has three deliveries held, stored out of emittedAt order. The
sweep probes the endpoint with the oldest one (signed as the spec's verification snippet checks),
resumes the partner when the probe is delivered, and puts the other two back on the delivery queue
oldest first with their original eventIds; when the probe fails, nothing moves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import mongomock
import pytest

from distiller.core.clock import iso_utc, utc_now
from distiller.core.lookups import PARTNERS_COLLECTION
from distiller.deliver.health import HELD_COLLECTION, HELD_REASON, PAUSED_STATE, RESUMED_METRIC, HeldDelivery
from distiller.deliver.log import DELIVERIES_COLLECTION
from distiller.deliver.message import DeliveryMessage
from distiller.runtime import HealthRuntime, held_deliveries
from distiller.settings import EndpointHealthSettings, HealthSweepSettings
from tests.conftest import load_function
from tests.delivery_world import World, message
from tests.integration.loopback import LoopbackServer, Reply
from tests.integration.test_dispatcher import signed_with

SCHEDULE = Path(__file__).resolve().parents[2] / "events" / "health" / "schedule.json"
PARTNER = "acme-motors"
SECRET = "whsec_acme_health"


@pytest.fixture
def database() -> Any:
    return mongomock.MongoClient(tz_aware=True)["privateauto"]


@pytest.fixture
def held_messages(database) -> list[DeliveryMessage]:
    """Three held deliveries, stored middle, newest, oldest; returned oldest emitted first."""
    base = utc_now() - dt.timedelta(hours=2)  # within the hold's retention, which counts from emission
    oldest, middle, newest = (
        dataclasses.replace(message(PARTNER), emitted_at=iso_utc(base + dt.timedelta(minutes=minutes)))
        for minutes in (0, 5, 10)
    )
    store = held_deliveries(database)
    held_at = utc_now() - dt.timedelta(hours=1)
    for held in (middle, newest, oldest):
        assert store.hold(HeldDelivery.of(held, held_at, HELD_REASON))
    return [oldest, middle, newest]


def paused_partner(database, url: str) -> None:
    """The partner record as the Dispatcher leaves it when it pauses the partner."""
    database[PARTNERS_COLLECTION].insert_one(
        {
            "partnerId": PARTNER,
            "active": True,
            "state": PAUSED_STATE,
            "webhook": {"url": url, "events": ["*"]},
            "health": {
                "pausedAt": utc_now() - dt.timedelta(minutes=10),
                "reason": "5 consecutive deliveries dead-lettered without one delivered",
                "lastProbeAt": None,
                "probeError": None,
            },
        }
    )


@pytest.fixture
def invoke(world: World, database, monkeypatch, lambda_context):
    """Install the runtime in the function's module and invoke its handler with the schedule sample."""
    world.secretsmanager.create_secret(Name=f"trigger-distiller/partners/{PARTNER}/webhook-secret", SecretString=SECRET)
    monkeypatch.setenv("STAGE", "dev")
    settings = HealthSweepSettings.from_env(
        {
            "DELIVERY_QUEUE_URL": world.delivery_url,
            "DELIVERY_DLQ_URL": world.dlq_url,
            "DELIVERY_TIMEOUT_SECONDS": "5",
            "ALLOW_PRIVATE_ENDPOINTS": "true",  # the partner endpoint is on 127.0.0.1
        }
    )
    app = load_function("health")
    monkeypatch.setattr(app, "_runtime", HealthRuntime.build(database, settings, EndpointHealthSettings(), world.sqs))

    def run() -> dict[str, Any]:
        return app.handler(json.loads(SCHEDULE.read_text()), lambda_context)

    return run


def test_the_schedule_sample_is_an_eventbridge_scheduled_event_for_the_health_function():
    event = json.loads(SCHEDULE.read_text())

    assert (event["version"], event["detail-type"], event["source"]) == ("0", "Scheduled Event", "aws.events")
    assert event["detail"] == {} and dt.datetime.fromisoformat(event["time"])
    [rule] = event["resources"]
    assert rule.startswith("arn:aws:events:") and "HealthFunction" in rule


def test_a_delivered_probe_resumes_the_partner_and_drains_the_rest_oldest_first(
    world: World, database, held_messages, serve, invoke, capsys
):
    oldest, middle, newest = held_messages
    server: LoopbackServer = serve(default=Reply(200, b'{"received":true}'))
    paused_partner(database, server.url())

    summary = invoke()

    # The probe: the oldest held delivery, once, signed with the partner's webhook secret.
    [probe] = server.received
    assert probe.header("X-PA-Event-Id") == oldest.event_id == json.loads(probe.body)["eventId"]
    assert probe.header("X-PA-Partner") == PARTNER
    assert signed_with(probe, SECRET) and not signed_with(probe, SECRET + "x")
    # The partner is resumed: no `state` left, the health sub-document says how.
    record = database[PARTNERS_COLLECTION].find_one({"partnerId": PARTNER})
    assert "state" not in record
    assert record["health"]["resumedBy"] == f"probe delivered {oldest.event_id}"
    # The rest is back on the delivery queue, oldest first, original eventIds, each a fresh round.
    queued = [DeliveryMessage.from_body(m["Body"]) for m in world.receive(world.delivery_url)]
    assert [m.event_id for m in queued] == [middle.event_id, newest.event_id]
    assert [m.emitted_at for m in queued] == [middle.emitted_at, newest.emitted_at]
    assert [m.payload for m in queued] == [middle.payload, newest.payload]
    assert all(m.attempt == 0 and m.redrive > 0 for m in queued)
    assert database[HELD_COLLECTION].count_documents({}) == 0
    assert world.queued(world.dlq_url) == []
    # The log holds the probe as a delivered attempt of a round of its own.
    [entry] = database[DELIVERIES_COLLECTION].find({"partnerId": PARTNER})
    assert (entry["eventId"], entry["status"]) == (oldest.event_id, "delivered")
    assert entry["redrive"] > 0 and entry["redrive"] not in {m.redrive for m in queued}
    # The handler's summary says all of it, and one PartnerResumed goes out for the stage.
    assert summary == {
        "probes": {PARTNER: True},
        "resumed": [PARTNER],
        "drained": {PARTNER: 2},
        "alreadyDelivered": 0,
        "expired": 0,
        "stillHeld": {},
        "errors": {},
    }
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if RESUMED_METRIC in line]
    [resumed] = [b for b in blobs if "_aws" in b]
    assert (resumed[RESUMED_METRIC], resumed["stage"], resumed["service"]) == ([1.0], "dev", "trigger-distiller")


def test_a_failed_probe_leaves_the_partner_paused_and_everything_held(
    world: World, database, held_messages, serve, invoke
):
    oldest, *_ = held_messages
    server: LoopbackServer = serve(default=Reply(503, b"maintenance"))
    paused_partner(database, server.url())

    summary = invoke()

    [probe] = server.received
    assert probe.header("X-PA-Event-Id") == oldest.event_id and signed_with(probe, SECRET)
    record = database[PARTNERS_COLLECTION].find_one({"partnerId": PARTNER})
    assert record["state"] == PAUSED_STATE
    assert record["health"]["lastProbeAt"] is not None and "503" in record["health"]["probeError"]
    assert world.queued(world.delivery_url) == [] and world.queued(world.dlq_url) == []
    assert database[HELD_COLLECTION].count_documents({}) == 3
    [entry] = database[DELIVERIES_COLLECTION].find({"partnerId": PARTNER})
    assert entry["status"] == "failed" and entry["error"].startswith("probe:")
    assert summary == {
        "probes": {PARTNER: False},
        "resumed": [],
        "drained": {},
        "alreadyDelivered": 0,
        "expired": 0,
        "stillHeld": {PARTNER: 3},
        "errors": {},
    }

    # The next minute's sweep does not probe again: the last probe is younger than HEALTH_PROBE_SECONDS.
    assert invoke()["probes"] == {} and len(server.received) == 1
