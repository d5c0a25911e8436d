"""The Relay function invoked in-process with events/relay_schedule.json (as `sam local invoke` would),
against a moto ingest queue, mongomock checkpoints and a scripted change stream."""

import json
from pathlib import Path

import boto3
import mongomock
import pytest
from moto import mock_aws

from distiller.queues import SqsQueue
from distiller.relay import (
    CHECKPOINTS_COLLECTION,
    DEFAULT_COLLECTIONS,
    MongoCheckpointStore,
    Relay,
    RelayError,
    RelayRuntime,
    RelaySettings,
)
from distiller.settings import SettingsError
from tests.conftest import load_function
from tests.unit.test_relay import ScriptedSource, data, deal_created, deal_sold, invalidate, tokens_of, user_registered

SCHEDULE = Path(__file__).resolve().parents[2] / "events" / "relay_schedule.json"


def drain(sqs, url):
    bodies = []
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for m in got:
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return bodies


@pytest.fixture
def aws():
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-2")
        yield sqs, sqs.create_queue(QueueName="ingest")["QueueUrl"]


@pytest.fixture
def db():
    return mongomock.MongoClient(tz_aware=True)["privateauto"]


@pytest.fixture
def source():
    return ScriptedSource([deal_created(1), deal_sold(2), user_registered(3)])


@pytest.fixture
def app(monkeypatch, aws, db, source):
    sqs, url = aws
    module = load_function("relay")
    relay = Relay(
        source,
        SqsQueue(sqs, url),
        MongoCheckpointStore(db[CHECKPOINTS_COLLECTION]),
        name="relay",
        max_await_time_ms=20,
    )
    monkeypatch.setattr(module, "_runtime", RelayRuntime(relay=relay, max_seconds=0.3))
    return module


def test_the_schedule_sample_is_an_eventbridge_scheduled_event():
    event = json.loads(SCHEDULE.read_text())
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["resources"][0].startswith("arn:aws:events:")


def test_a_scheduled_invocation_relays_the_stream_and_returns_counts(app, aws, db, source, lambda_context):
    sqs, url = aws

    response = app.handler(json.loads(SCHEDULE.read_text()), lambda_context)

    assert response == {
        "read": 3,
        "sent": 3,
        "failed": 0,
        "resumedFrom": None,
        "checkpoint": data(3)[0],
        "stopped": "max-seconds",
    }
    assert sorted(tokens_of(drain(sqs, url))) == sorted(data(1, 2, 3))
    assert db[CHECKPOINTS_COLLECTION].find_one({"_id": "relay"})["token"] == {"_data": data(3)[0]}


def test_the_next_invocation_resumes_from_the_checkpoint(app, aws, source, lambda_context):
    sqs, url = aws
    event = json.loads(SCHEDULE.read_text())
    app.handler(event, lambda_context)
    drain(sqs, url)
    source.script.append(deal_created(4))  # written between the two runs

    response = app.handler(event, lambda_context)

    assert source.calls[-1]["resume_after"] == {"_data": data(3)[0]}
    assert (response["read"], response["resumedFrom"], response["checkpoint"]) == (1, data(3)[0], data(4)[0])
    assert tokens_of(drain(sqs, url)) == data(4)


def test_a_lost_stream_fails_the_invocation(app, aws, db, source, lambda_context):
    sqs, url = aws
    source.script[2:2] = [invalidate(9)]

    with pytest.raises(RelayError, match="distiller replay --after-token"):
        app.handler(json.loads(SCHEDULE.read_text()), lambda_context)

    assert sorted(tokens_of(drain(sqs, url))) == sorted(data(1, 2))
    assert db[CHECKPOINTS_COLLECTION].find_one({"_id": "relay"})["token"] == {"_data": data(2)[0]}


def test_the_run_never_outlasts_the_invocation(app, lambda_context, monkeypatch):
    runtime = app.get_runtime()
    monkeypatch.setattr(runtime, "max_seconds", 50.0)
    monkeypatch.setattr(
        lambda_context, "get_remaining_time_in_millis", lambda: int((app.SAFETY_MARGIN_SECONDS + 0.2) * 1000)
    )

    response = app.handler(json.loads(SCHEDULE.read_text()), lambda_context)

    assert response["stopped"] == "max-seconds" and response["sent"] == 3  # after ~0.2 s, not 50


def test_settings_from_env():
    settings = RelaySettings.from_env(
        {"INGEST_QUEUE_URL": "https://sqs.us-east-2.amazonaws.com/1/ingest", "RELAY_COLLECTIONS": " deals, users ,"}
    )
    assert settings.collections == ("deals", "users") and settings.max_seconds == 50.0
    assert RelaySettings.from_env({"INGEST_QUEUE_URL": "u"}).collections == DEFAULT_COLLECTIONS
    with pytest.raises(SettingsError, match="INGEST_QUEUE_URL"):
        RelaySettings.from_env({})
    with pytest.raises(SettingsError, match="RELAY_MAX_SECONDS"):
        RelaySettings.from_env({"INGEST_QUEUE_URL": "u", "RELAY_MAX_SECONDS": "soon"})
    with pytest.raises(SettingsError, match="RELAY_COLLECTIONS"):
        RelaySettings.from_env({"INGEST_QUEUE_URL": "u", "RELAY_COLLECTIONS": " , "})


def test_runtime_build_watches_the_database_and_checkpoints_in_it(aws, db):
    sqs, url = aws
    runtime = RelayRuntime.build(db, RelaySettings(url, ("deals",), 12.0, "r1"), sqs_client=sqs)

    assert runtime.max_seconds == 12.0 and runtime.relay.source is db
    assert runtime.relay.collections == ("deals",) and runtime.relay.queue.queue_url == url
    runtime.relay.checkpoints.save("r1", {"_data": "82AB"})
    assert db[CHECKPOINTS_COLLECTION].find_one({"_id": "r1"})["token"] == {"_data": "82AB"}
