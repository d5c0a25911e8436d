"""The Relay function invoked in-process with events/relay_schedule.json (as `sam local invoke` would),
against a moto ingest queue, mongomock checkpoints and a scripted change stream."""

import json
from pathlib import Path

import boto3
import mongomock
import pytest
from bson import Timestamp
from moto import mock_aws

from distiller.adapters.checkpoints import MongoCheckpointStore
from distiller.adapters.queues import SqsQueue
from distiller.relay.handler import SAFETY_MARGIN_SECONDS
from distiller.relay.loop import Relay
from distiller.relay.stream import CHECKPOINTS_COLLECTION, DEFAULT_COLLECTIONS, RelayError, StartAt
from distiller.runtime import RelayRuntime
from distiller.settings import RelaySettings, SettingsError
from tests.conftest import load_function
from tests.unit.test_relay import (
    BASE,
    ScriptedDatabase,
    ScriptedSource,
    at,
    data,
    deal_created,
    deal_sold,
    invalidate,
    oversize,
    token,
    tokens_of,
    user_registered,
)

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
def dlq_url(aws):
    sqs, _ = aws
    return sqs.create_queue(QueueName="ingest-dlq")["QueueUrl"]


@pytest.fixture
def db():
    return mongomock.MongoClient(tz_aware=True)["privateauto"]


@pytest.fixture
def source():
    return ScriptedSource([deal_created(1), deal_sold(2), user_registered(3)])


@pytest.fixture
def app(monkeypatch, aws, dlq_url, db, source):
    sqs, url = aws
    module = load_function("relay")
    relay = Relay(
        source,
        SqsQueue(sqs, url),
        MongoCheckpointStore(db[CHECKPOINTS_COLLECTION]),
        name="relay",
        max_await_time_ms=20,
        dead_letters=SqsQueue(sqs, dlq_url),
        start_at=StartAt(),  # a first deployment told RELAY_START_AT=now
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
        "parked": 0,
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
        lambda_context, "get_remaining_time_in_millis", lambda: int((SAFETY_MARGIN_SECONDS + 0.2) * 1000)
    )

    response = app.handler(json.loads(SCHEDULE.read_text()), lambda_context)

    assert response["stopped"] == "max-seconds" and response["sent"] == 3  # after ~0.2 s, not 50


def emitted_metrics(text: str) -> dict[str, float]:
    """The metric values in the EMF lines powertools printed on flush."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("{") and "_aws" in line:
            blob = json.loads(line)
            for metric in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                value = blob[metric["Name"]]
                values[metric["Name"]] = sum(value) if isinstance(value, list) else value
    return values


def test_an_oversize_change_is_parked_counted_and_passed(app, aws, dlq_url, db, source, lambda_context, capsys):
    sqs, url = aws
    source.script[1] = oversize(2)
    capsys.readouterr()

    response = app.handler(json.loads(SCHEDULE.read_text()), lambda_context)

    assert (response["read"], response["sent"], response["parked"]) == (3, 2, 1)
    assert response["checkpoint"] == data(3)[0]
    assert sorted(tokens_of(drain(sqs, url))) == sorted(data(1, 3))
    [parked] = [json.loads(b) for b in drain(sqs, dlq_url)]
    assert parked["reason"].startswith("change too large for SQS:") and parked["record"]["_id"] == token(2)
    assert "fullDocument" not in parked["record"]
    assert db[CHECKPOINTS_COLLECTION].find_one({"_id": "relay"})["token"] == token(3)
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["RelayParkedChanges"] == 1 and metrics["RelayedChanges"] == 2
    assert metrics["RelayUnsentChanges"] == 0


def runtime_from_env(monkeypatch, app, aws, dlq_url, database, **env) -> RelayRuntime:
    sqs, url = aws
    settings = RelaySettings.from_env({"INGEST_QUEUE_URL": url, "INGEST_DLQ_URL": dlq_url, **env})
    runtime = RelayRuntime.build(database, settings, sqs_client=sqs)
    runtime.relay.max_await_time_ms = 20
    runtime.max_seconds = 0.3
    monkeypatch.setattr(app, "_runtime", runtime)
    return runtime


def test_without_a_checkpoint_or_relay_start_at_the_invocation_fails(
    monkeypatch, app, aws, dlq_url, db, lambda_context
):
    sqs, url = aws
    database = ScriptedDatabase([deal_created(1)], db)
    runtime_from_env(monkeypatch, app, aws, dlq_url, database)

    with pytest.raises(RelayError, match="RELAY_START_AT"):
        app.handler(json.loads(SCHEDULE.read_text()), lambda_context)

    assert database.calls == [] and drain(sqs, url) == []
    assert db[CHECKPOINTS_COLLECTION].find_one({}) is None


@pytest.mark.parametrize(
    ("start_at", "position", "relayed"),
    [
        pytest.param("now", {}, (3,), id="now"),
        pytest.param("2026-04-25T12:00:38Z", {"start_at_operation_time": Timestamp(BASE + 1, 0)}, (1, 2, 3), id="time"),
        pytest.param(token(1)["_data"], {"resume_after": token(1)}, (2, 3), id="token"),
    ],
)
def test_relay_start_at_sets_where_a_new_deployment_starts(
    monkeypatch, app, aws, dlq_url, db, lambda_context, start_at, position, relayed
):
    sqs, url = aws
    database = ScriptedDatabase([deal_created(1), deal_sold(2), user_registered(3)], db, now=2)
    runtime_from_env(monkeypatch, app, aws, dlq_url, database, RELAY_START_AT=start_at, RELAY_NAME="relay")

    app.handler(json.loads(SCHEDULE.read_text()), lambda_context)

    for key in ("resume_after", "start_after", "start_at_operation_time"):
        assert database.calls[-1].get(key) == position.get(key), key
    assert sorted(tokens_of(drain(sqs, url))) == sorted(data(*relayed))
    # The next run resumes from the checkpoint: RELAY_START_AT no longer counts.
    database.script.append(deal_created(4))
    app.handler(json.loads(SCHEDULE.read_text()), lambda_context)
    assert database.calls[-1]["resume_after"] == token(3) and "start_at_operation_time" not in database.calls[-1]
    assert tokens_of(drain(sqs, url)) == data(4)


def test_settings_from_env():
    env = {"INGEST_QUEUE_URL": "https://sqs.us-east-2.amazonaws.com/1/ingest", "INGEST_DLQ_URL": "d"}
    settings = RelaySettings.from_env({**env, "RELAY_COLLECTIONS": " deals, users ,"})
    assert settings.collections == ("deals", "users") and settings.max_seconds == 50.0
    assert settings.ingest_dead_letter_queue_url == "d" and settings.start_at is None
    assert RelaySettings.from_env(env).collections == DEFAULT_COLLECTIONS
    assert RelaySettings.from_env({**env, "RELAY_START_AT": "now"}).start_at == StartAt()
    assert RelaySettings.from_env({**env, "RELAY_START_AT": "2026-04-25T12:00:38Z"}).start_at == StartAt(time=at(1))
    assert RelaySettings.from_env({**env, "RELAY_START_AT": "82AB"}).start_at == StartAt(token={"_data": "82AB"})
    with pytest.raises(SettingsError, match="INGEST_QUEUE_URL"):
        RelaySettings.from_env({})
    with pytest.raises(SettingsError, match="INGEST_DLQ_URL"):
        RelaySettings.from_env({"INGEST_QUEUE_URL": "u"})
    with pytest.raises(SettingsError, match="RELAY_START_AT: not a start position"):
        RelaySettings.from_env({**env, "RELAY_START_AT": "yesterday"})
    with pytest.raises(SettingsError, match="RELAY_MAX_SECONDS"):
        RelaySettings.from_env({**env, "RELAY_MAX_SECONDS": "soon"})
    with pytest.raises(SettingsError, match="RELAY_COLLECTIONS"):
        RelaySettings.from_env({**env, "RELAY_COLLECTIONS": " , "})


def test_runtime_build_watches_the_database_and_checkpoints_in_it(aws, dlq_url, db):
    sqs, url = aws
    start = StartAt(time=at(1))
    runtime = RelayRuntime.build(
        db,
        RelaySettings(
            ingest_queue_url=url,
            ingest_dead_letter_queue_url=dlq_url,
            collections=("deals",),
            max_seconds=12.0,
            name="r1",
            start_at=start,
        ),
        sqs_client=sqs,
    )

    assert runtime.max_seconds == 12.0 and runtime.relay.source is db
    assert runtime.relay.collections == ("deals",) and runtime.relay.queue.queue_url == url
    assert runtime.relay.dead_letters.queue_url == dlq_url and runtime.relay.start_at == start
    runtime.relay.checkpoints.save("r1", {"_data": "82AB"})
    assert db[CHECKPOINTS_COLLECTION].find_one({"_id": "r1"})["token"] == {"_data": "82AB"}
