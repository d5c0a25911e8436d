"""The Distiller function invoked in-process with the very files in events/ (as `sam local invoke` would),
against moto SQS queues."""

import copy
import dataclasses
import json
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from distiller.adapters.lookups import MongoLookups
from distiller.adapters.payload_store import S3PayloadStore
from distiller.adapters.queues import SqsQueue
from distiller.adapters.sqs_batch import RetryLater
from distiller.core.lookups import LookupFailure
from distiller.deliver.claim_check import INLINE_LIMIT_BYTES
from distiller.deliver.message import DeliveryMessage
from distiller.ingest import batch as ingest_module
from distiller.runtime import DistillerRuntime
from distiller_tools.world import in_memory_database, load_partners, load_world
from tests.conftest import load_function
from tests.integration.test_sample_events import NOT_SAMPLES, OTHER_FUNCTIONS

EVENTS = Path(__file__).resolve().parents[2] / "events"
SAMPLES = sorted(
    p for p in EVENTS.glob("*.json") if p.name not in NOT_SAMPLES and not p.name.startswith(OTHER_FUNCTIONS)
)


def drain(sqs, url):
    bodies = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return bodies
        for m in got:
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


@pytest.fixture
def aws():
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-2")
        delivery = sqs.create_queue(QueueName="delivery")["QueueUrl"]
        dlq = sqs.create_queue(QueueName="ingest-dlq")["QueueUrl"]
        yield sqs, delivery, dlq


@pytest.fixture
def app(monkeypatch, aws):
    sqs, delivery, dlq = aws
    module = load_function("distiller")
    lookups = MongoLookups(
        in_memory_database(load_partners(EVENTS / "partners.json"), load_world(EVENTS / "world.json"))
    )
    runtime = DistillerRuntime(lookups, SqsQueue(sqs, delivery), SqsQueue(sqs, dlq))
    monkeypatch.setattr(module, "_runtime", runtime)
    return module


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_every_sample_event_queues_its_deliveries(app, aws, lambda_context, sample):
    sqs, delivery, dlq = aws
    event = json.loads(sample.read_text())

    response = app.handler(event, lambda_context)

    queued = [DeliveryMessage.from_body(b) for b in drain(sqs, delivery)]
    assert queued, f"{sample.name} queued no deliveries"
    if "Records" in event:
        assert response == {"batchItemFailures": []}
    else:
        assert response["parked"] == [] and response["deliveries"] == len(queued)
    assert drain(sqs, dlq) == []
    for message in queued:
        # Extended JSON arrives undecoded in a Lambda event; the handler decodes it.
        assert "$numberInt" not in message.to_body() and "$oid" not in message.to_body()
        assert message.attempt == 0 and message.emitted_at.endswith("Z")


def test_lambda_and_cli_agree_on_every_sample(app, aws, lambda_context, capsys, tmp_path):
    """The handler (parsed event) and the CLI (text) produce the same deliveries for the same input."""
    from distiller_tools.cli import main

    sqs, delivery, _ = aws
    for sample in SAMPLES:
        app.handler(json.loads(sample.read_text()), lambda_context)
        queued = [DeliveryMessage.from_body(b) for b in drain(sqs, delivery)]
        path = tmp_path / f"{sample.stem}.jsonl"
        path.write_text(json.dumps(json.loads(sample.read_text())) + "\n")
        capsys.readouterr()
        argv = ["distill", "--partners", str(EVENTS / "partners.json"), "--world", str(EVENTS / "world.json")]
        assert main([*argv, str(path)]) == 0
        cli = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        key = lambda d: (d["partnerId"], d["eventId"])  # noqa: E731
        assert sorted(cli, key=key) == sorted(
            (
                {
                    "partnerId": m.partner_id,
                    "event": m.event,
                    "eventId": m.event_id,
                    "eventKey": m.event_key,
                    "payload": m.payload,
                }
                for m in queued
            ),
            key=key,
        ), sample.name


def test_docdb_bad_records_are_parked_with_their_reason_and_the_rest_queued(app, aws, lambda_context):
    sqs, delivery, dlq = aws
    event = json.loads((EVENTS / "docdb_batch.json").read_text())
    good = app.handler(copy.deepcopy(event), lambda_context)["deliveries"]
    drain(sqs, delivery)
    event["events"].insert(0, {"event": {"operationType": "insert", "_id": {"_data": "82AB"}}})
    event["events"].insert(
        2,
        {
            "event": {
                "_id": {"_data": "82AC"},
                "operationType": "insert",
                "ns": {"coll": "deals"},
                "fullDocument": {"_id": {"$oid": "zz"}},
            }
        },
    )

    response = app.handler(event, lambda_context)

    assert response["deliveries"] == good == len(drain(sqs, delivery))
    assert [p["origin"] for p in response["parked"]] == ["events[0]", "events[2]"]
    parked = [json.loads(b) for b in drain(sqs, dlq)]
    assert [p["origin"] for p in parked] == ["events[0]", "events[2]"]
    assert "ns.coll" in parked[0]["reason"] and "invalid Extended JSON" in parked[1]["reason"]
    # a parked record is itself a DocumentDB batch: it can be redriven as it is
    assert parked[0]["record"]["eventSource"] == "aws:docdb" and len(parked[0]["record"]["events"]) == 1


def test_sqs_poison_record_is_parked_and_not_reported_as_failure(app, aws, lambda_context):
    sqs, delivery, dlq = aws
    event = json.loads((EVENTS / "sqs_ingest_batch.json").read_text())
    event["Records"][0]["body"] = "{not json"

    response = app.handler(event, lambda_context)

    assert response == {"batchItemFailures": []}
    [parked] = [json.loads(b) for b in drain(sqs, dlq)]
    assert parked["origin"] == "Records[0]" and "not valid JSON" in parked["reason"]
    assert parked["record"]["body"] == "{not json"
    assert drain(sqs, delivery)


def test_sqs_records_whose_deliveries_cannot_be_queued_are_reported_for_retry(app, aws, lambda_context, monkeypatch):
    sqs, _, _ = aws
    event = json.loads((EVENTS / "sqs_ingest_batch.json").read_text())
    delete = {
        "_id": {"_data": "82DEAD"},
        "operationType": "delete",
        "ns": {"coll": "deals"},
        "documentKey": {"_id": "x"},
    }
    event["Records"].append({**event["Records"][0], "messageId": "m-delete", "body": json.dumps(delete)})
    runtime = app._runtime
    monkeypatch.setattr(
        runtime, "delivery_queue", SqsQueue(sqs, "https://sqs.us-east-2.amazonaws.com/123456789012/missing")
    )

    response = app.handler(event, lambda_context)

    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    expected = {r["messageId"] for r in event["Records"][:-1]}
    assert failed == expected  # the delete produced nothing to queue, so it is not retried


def test_eventbridge_send_failure_fails_the_invocation_so_it_is_retried(app, aws, lambda_context, monkeypatch):
    sqs, _, _ = aws
    monkeypatch.setattr(app._runtime, "delivery_queue", SqsQueue(sqs, "https://sqs.us-east-2.amazonaws.com/1/missing"))

    with pytest.raises(RetryLater):
        app.handler(json.loads((EVENTS / "eventbridge_atlas_plain.json").read_text()), lambda_context)


EVENTBRIDGE_SAMPLES = ["eventbridge_atlas_plain.json", "eventbridge_atlas_ejson.json"]


def via_ingest_queue(*events: dict) -> dict:
    """The SQS batch the Distiller receives when the Atlas rule sends `events` to the ingest queue."""
    [shape, *_] = json.loads((EVENTS / "sqs_ingest_batch.json").read_text())["Records"]
    return {
        "Records": [
            {**shape, "messageId": f"m-eventbridge-{i}", "body": json.dumps(event, separators=(",", ":"))}
            for i, event in enumerate(events)
        ]
    }


def delivered(sqs, url) -> list[tuple]:
    """The queued deliveries, without emittedAt (the time of each run)."""
    messages = [DeliveryMessage.from_body(b) for b in drain(sqs, url)]
    return sorted((m.partner_id, m.event, m.event_id, m.event_key, json.dumps(m.payload)) for m in messages)


@pytest.mark.parametrize("sample", EVENTBRIDGE_SAMPLES)
def test_an_eventbridge_event_via_the_ingest_queue_is_distilled_like_the_direct_event(app, aws, lambda_context, sample):
    sqs, delivery, dlq = aws
    event = json.loads((EVENTS / sample).read_text())
    app.handler(copy.deepcopy(event), lambda_context)
    direct = delivered(sqs, delivery)

    response = app.handler(via_ingest_queue(event), lambda_context)

    assert response == {"batchItemFailures": []}
    assert delivered(sqs, delivery) == direct and direct
    assert drain(sqs, dlq) == []


def test_an_eventbridge_event_via_the_ingest_queue_that_cannot_be_queued_is_retried_by_sqs(
    app, aws, lambda_context, monkeypatch
):
    """The rule no longer invokes the function: a failure is a batch item failure (SQS retries, then
    redrives to the ingest dead-letter queue), not an invocation error that async Lambda drops."""
    sqs, _, dlq = aws
    events = [json.loads((EVENTS / s).read_text()) for s in EVENTBRIDGE_SAMPLES]
    # a delete queues nothing, so it succeeds and the batch answers per record
    delete = {
        "_id": {"_data": "82DEAD"},
        "operationType": "delete",
        "ns": {"coll": "deals"},
        "documentKey": {"_id": "x"},
    }
    monkeypatch.setattr(app._runtime, "delivery_queue", SqsQueue(sqs, "https://sqs.us-east-2.amazonaws.com/1/missing"))

    response = app.handler(via_ingest_queue(*events, delete), lambda_context)

    assert response == {
        "batchItemFailures": [{"itemIdentifier": "m-eventbridge-0"}, {"itemIdentifier": "m-eventbridge-1"}]
    }
    assert drain(sqs, dlq) == []


def test_database_failure_fails_the_whole_batch(app, lambda_context, monkeypatch):
    def unavailable(*args, **kwargs):
        raise LookupFailure("partners: no servers")

    monkeypatch.setattr(app._runtime.lookups, "partners", unavailable)

    with pytest.raises(LookupFailure):
        app.handler(json.loads((EVENTS / "docdb_batch.json").read_text()), lambda_context)


def test_missing_setting_fails_loudly_at_first_use(monkeypatch, lambda_context):
    module = load_function("distiller")
    monkeypatch.setattr(module, "_runtime", None)
    monkeypatch.delenv("MONGODB_URI_SECRET", raising=False)

    with pytest.raises(Exception, match="MONGODB_URI_SECRET"):
        module.handler(json.loads((EVENTS / "change_stream_insert.json").read_text()), lambda_context)


ORPHAN_SIGNATURE = {
    "_id": {"_data": "82D0C0"},
    "operationType": "update",
    "ns": {"db": "privateauto", "coll": "documents"},
    "documentKey": {"_id": {"$oid": "66240a11c3d9e400000000ff"}},
    "updateDescription": {"updatedFields": {"manualSignatures.0.signedAt": {"$date": "2026-04-22T15:00:00Z"}}},
    "fullDocument": {
        "_id": {"$oid": "66240a11c3d9e400000000ff"},
        "dealId": {"$oid": "66240a11c3d9e400000000fe"},
        "docClassification": "poa",
        "manualSignatures": [{"signerRole": "buyer", "signedAt": {"$date": "2026-04-22T15:00:00Z"}}],
    },
}


def orphan_record(*, receive_count: int = 1, age_seconds: float = 5.0) -> dict:
    """An ingest-queue record of a signature change whose deal is not (yet) in the database."""
    sent = int((time.time() - age_seconds) * 1000)
    record = json.loads((EVENTS / "sqs_ingest_batch.json").read_text())["Records"][0]
    attributes = {**record["attributes"], "ApproximateReceiveCount": str(receive_count), "SentTimestamp": str(sent)}
    return {**record, "messageId": "m-orphan", "body": json.dumps(ORPHAN_SIGNATURE), "attributes": attributes}


def test_sqs_document_whose_deal_is_missing_is_retried_not_parked(app, aws, lambda_context):
    sqs, _, dlq = aws
    event = json.loads((EVENTS / "sqs_ingest_batch.json").read_text())
    event["Records"].append(orphan_record())

    response = app.handler(event, lambda_context)

    assert response == {"batchItemFailures": [{"itemIdentifier": "m-orphan"}]}
    assert drain(sqs, dlq) == []


@pytest.mark.parametrize(
    ("receive_count", "age_seconds", "gave_up"),
    [
        pytest.param(4, 60.0, False, id="young-and-receives-left"),
        pytest.param(5, 60.0, True, id="last-receive"),
        pytest.param(1, 3600.0, True, id="older-than-the-max-age"),
    ],
)
def test_sqs_document_whose_deal_never_appears_is_parked_with_its_reason_once_retries_run_out(
    app, aws, lambda_context, receive_count, age_seconds, gave_up
):
    sqs, _, dlq = aws
    event = {"Records": [orphan_record(receive_count=receive_count, age_seconds=age_seconds)]}

    response = app.handler(event, lambda_context) if gave_up else None
    if not gave_up:
        with pytest.raises(Exception, match="All records failed"):
            app.handler(event, lambda_context)
        assert drain(sqs, dlq) == []
        return

    assert response == {"batchItemFailures": []}
    [parked] = [json.loads(b) for b in drain(sqs, dlq)]
    assert parked["origin"] == "Records[0]"
    assert parked["record"]["messageId"] == "m-orphan"
    assert "deal" in parked["reason"] and "gave up after" in parked["reason"]
    assert f"{receive_count} receive(s)" in parked["reason"]


def test_docdb_document_whose_deal_is_missing_is_parked_at_once_so_the_stream_never_stalls(app, aws, lambda_context):
    sqs, delivery, dlq = aws
    good = json.loads((EVENTS / "docdb_batch.json").read_text())
    event = {**good, "events": [{"event": ORPHAN_SIGNATURE}, *good["events"]]}

    response = app.handler(event, lambda_context)

    [parked] = [json.loads(b) for b in drain(sqs, dlq)]
    assert parked["origin"] == "events[0]"
    assert "parked at once" in parked["reason"] and "DocumentDB" in parked["reason"]
    assert parked["record"]["events"] == [{"event": ORPHAN_SIGNATURE}]
    assert response["parked"] == [{"origin": "events[0]", "reason": parked["reason"]}]
    assert response["deliveries"] == len(drain(sqs, delivery)) > 0


def test_sqs_database_outage_is_retried_then_parked_on_the_last_receive(app, aws, lambda_context, monkeypatch):
    sqs, _, dlq = aws

    def unavailable(*args, **kwargs):
        raise LookupFailure("partners: no servers")

    monkeypatch.setattr(app._runtime.lookups, "partners", unavailable)
    event = json.loads((EVENTS / "sqs_ingest_batch.json").read_text())
    ids = [r["messageId"] for r in event["Records"]]
    event["Records"][-1]["attributes"]["ApproximateReceiveCount"] = "5"

    response = app.handler(event, lambda_context)

    assert response == {"batchItemFailures": [{"itemIdentifier": i} for i in ids[:-1]]}
    [parked] = [json.loads(b) for b in drain(sqs, dlq)]
    assert parked["record"]["messageId"] == ids[-1]
    assert parked["reason"].startswith("database unavailable: partners: no servers (gave up after")


def test_a_delivery_too_large_for_sqs_travels_by_claim_check_and_without_a_store_is_parked_at_once(
    app, aws, lambda_context, monkeypatch
):
    sqs, delivery, dlq = aws
    s3 = boto3.client("s3", region_name="us-east-2")
    s3.create_bucket(Bucket="claims", CreateBucketConfiguration={"LocationConstraint": "us-east-2"})
    event = json.loads((EVENTS / "sqs_ingest_batch.json").read_text())
    app.handler(event, lambda_context)
    expected = sorted(DeliveryMessage.from_body(b).event_id for b in drain(sqs, delivery))
    assert expected
    real = ingest_module.DeliveryMessage.from_delivery

    def padded(delivery_, emitted_at):  # a document event with thousands of signed links, in effect
        message = real(delivery_, emitted_at)
        return dataclasses.replace(message, payload={**message.payload, "padding": "x" * (INLINE_LIMIT_BYTES + 1)})

    monkeypatch.setattr(ingest_module.DeliveryMessage, "from_delivery", staticmethod(padded))

    # Without a claim-check bucket: never queueable, so parked at once with the reason (not retried).
    response = app.handler(event, lambda_context)
    assert response == {"batchItemFailures": []}
    parked = [json.loads(b) for b in drain(sqs, dlq)]
    assert parked and all("no claim-check bucket is configured" in p["reason"] for p in parked)
    assert drain(sqs, delivery) == []

    # With one: every delivery is queued as a small pointer, and the payload is in S3 byte for byte.
    monkeypatch.setattr(app._runtime, "payloads", S3PayloadStore(s3, "claims"))
    response = app.handler(event, lambda_context)
    assert response == {"batchItemFailures": []}
    assert drain(sqs, dlq) == []
    bodies = drain(sqs, delivery)
    assert sorted(DeliveryMessage.from_body(b).event_id for b in bodies) == expected
    for body in bodies:
        assert len(body) < 4096
        message = DeliveryMessage.from_body(body)
        assert message.payload_ref is not None and message.payload == {}
        loaded = message.with_payload(S3PayloadStore(s3, "claims"))
        assert loaded.payload["padding"] == "x" * (INLINE_LIMIT_BYTES + 1)
        assert loaded.payload["eventId"] == loaded.event_id
