"""SqsQueue over a real boto3 SQS client backed by moto: batching, delays, failures, parking."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from distiller.adapters.queues import MAX_BATCH_BYTES, OutgoingMessage, SqsQueue

REGION = "us-east-2"
KIB = 1024


class SpyClient:
    """Passes everything through to the real client, recording SendMessageBatch calls.

    `fail_calls` maps a 0-based call number to an exception to raise instead of calling SQS.
    """

    def __init__(self, client: Any, fail_calls: dict[int, Exception] | None = None) -> None:
        self._client = client
        self.batches: list[list[dict[str, Any]]] = []
        self.fail_calls = fail_calls or {}

    def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        call = len(self.batches)
        self.batches.append(kwargs["Entries"])
        if call in self.fail_calls:
            raise self.fail_calls[call]
        return self._client.send_message_batch(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def sqs() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


@pytest.fixture
def queue_url(sqs: Any) -> str:
    return sqs.create_queue(QueueName="deliveries")["QueueUrl"]


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        batch = response.get("Messages", [])
        if not batch:
            return messages
        messages.extend(batch)
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        )


def client_error(code: str = "AWS.SimpleQueueService.NonExistentQueue") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "boom"}}, "SendMessageBatch")


# --- batching ------------------------------------------------------------------------------


def test_25_small_messages_make_3_batches_and_all_arrive(sqs: Any, queue_url: str) -> None:
    spy = SpyClient(sqs)
    bodies = [json.dumps({"n": i}) for i in range(25)]
    failed = SqsQueue(spy, queue_url).send([OutgoingMessage(b) for b in bodies])
    assert failed == []
    assert [len(b) for b in spy.batches] == [10, 10, 5]
    # Ids are the caller's indices, in order, so failures can be mapped back.
    assert [e["Id"] for batch in spy.batches for e in batch] == [str(i) for i in range(25)]
    assert sorted(m["Body"] for m in receive_all(sqs, queue_url)) == sorted(bodies)


def test_exactly_10_messages_make_one_batch(sqs: Any, queue_url: str) -> None:
    spy = SpyClient(sqs)
    assert SqsQueue(spy, queue_url).send([OutgoingMessage(str(i)) for i in range(10)]) == []
    assert [len(b) for b in spy.batches] == [10]


def test_no_messages_no_calls(sqs: Any, queue_url: str) -> None:
    spy = SpyClient(sqs)
    assert SqsQueue(spy, queue_url).send([]) == []
    assert spy.batches == []


def test_large_messages_split_to_1_mib_batches(sqs: Any, queue_url: str) -> None:
    spy = SpyClient(sqs)
    bodies = [chr(ord("a") + i) * (300 * KIB) for i in range(5)]
    failed = SqsQueue(spy, queue_url).send([OutgoingMessage(b) for b in bodies])
    assert failed == []
    assert [len(b) for b in spy.batches] == [3, 2]
    for batch in spy.batches:
        assert sum(len(e["MessageBody"].encode()) for e in batch) <= MAX_BATCH_BYTES
    received = receive_all(sqs, queue_url)
    assert sorted(m["Body"] for m in received) == sorted(bodies)


def test_batch_size_counts_utf8_bytes_not_characters(sqs: Any, queue_url: str) -> None:
    spy = SpyClient(sqs)
    # 200 Ki characters of a 2-byte character = 400 KiB each; only 2 fit in 1 MiB (3 chars-wise).
    bodies = ["é" * (200 * KIB) for _ in range(3)]
    assert SqsQueue(spy, queue_url).send([OutgoingMessage(b) for b in bodies]) == []
    assert [len(b) for b in spy.batches] == [2, 1]
    for batch in spy.batches:
        assert sum(len(e["MessageBody"].encode()) for e in batch) <= MAX_BATCH_BYTES


def test_batch_of_exactly_1_mib_is_not_split(sqs: Any, queue_url: str) -> None:
    spy = SpyClient(sqs)
    bodies = ["x" * (MAX_BATCH_BYTES // 4)] * 4
    assert SqsQueue(spy, queue_url).send([OutgoingMessage(b) for b in bodies]) == []
    assert [len(b) for b in spy.batches] == [4]


def test_mixed_sizes_respect_both_limits(sqs: Any, queue_url: str) -> None:
    spy = SpyClient(sqs)
    bodies = ["s"] * 12 + ["L" * (600 * KIB)] * 2 + ["s"] * 3
    assert SqsQueue(spy, queue_url).send([OutgoingMessage(b) for b in bodies]) == []
    for batch in spy.batches:
        assert len(batch) <= 10
        assert sum(len(e["MessageBody"].encode()) for e in batch) <= MAX_BATCH_BYTES
    assert sorted(int(e["Id"]) for batch in spy.batches for e in batch) == list(range(len(bodies)))
    assert len(receive_all(sqs, queue_url)) == len(bodies)


# --- DelaySeconds --------------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "sent"), [(0, 0), (60, 60), (900, 900), (901, 900), (5000, 900), (-5, 0)])
def test_delay_seconds_passed_and_clamped(sqs: Any, queue_url: str, requested: int, sent: int) -> None:
    spy = SpyClient(sqs)
    assert SqsQueue(spy, queue_url).send([OutgoingMessage("m", requested)]) == []
    assert spy.batches[0][0]["DelaySeconds"] == sent


def test_delayed_message_is_not_visible_immediately(sqs: Any, queue_url: str) -> None:
    queue = SqsQueue(sqs, queue_url)
    assert queue.send([OutgoingMessage("later", 300), OutgoingMessage("now", 0)]) == []
    assert [m["Body"] for m in receive_all(sqs, queue_url)] == ["now"]


def test_delay_is_per_message(sqs: Any, queue_url: str) -> None:
    spy = SpyClient(sqs)
    SqsQueue(spy, queue_url).send([OutgoingMessage("a", 60), OutgoingMessage("b", 300), OutgoingMessage("c")])
    assert [e["DelaySeconds"] for e in spy.batches[0]] == [60, 300, 0]


# --- failures ------------------------------------------------------------------------------


def test_failing_batch_call_returns_exactly_its_indices(sqs: Any, queue_url: str) -> None:
    spy = SpyClient(sqs, fail_calls={1: client_error()})
    bodies = [f"m{i}" for i in range(25)]
    failed = SqsQueue(spy, queue_url).send([OutgoingMessage(b) for b in bodies])
    assert failed == list(range(10, 20))
    assert len(spy.batches) == 3, "a failing batch must not stop the following ones"
    assert sorted(m["Body"] for m in receive_all(sqs, queue_url)) == sorted(bodies[:10] + bodies[20:])


def test_every_batch_failing_returns_every_index(sqs: Any, queue_url: str) -> None:
    spy = SpyClient(sqs, fail_calls={0: client_error(), 1: client_error("ThrottlingException")})
    assert SqsQueue(spy, queue_url).send([OutgoingMessage(str(i)) for i in range(12)]) == list(range(12))


def test_missing_queue_reports_all_failed(sqs: Any) -> None:
    url = f"https://sqs.{REGION}.amazonaws.com/123456789012/does-not-exist"
    assert SqsQueue(sqs, url).send([OutgoingMessage("a"), OutgoingMessage("b")]) == [0, 1]


def test_oversized_single_message_fails_alone(sqs: Any, queue_url: str) -> None:
    spy = SpyClient(sqs)
    bodies = ["ok-0", "x" * (MAX_BATCH_BYTES + 1), "ok-2"]
    failed = SqsQueue(spy, queue_url).send([OutgoingMessage(b) for b in bodies])
    assert failed == [1]
    assert sorted(m["Body"] for m in receive_all(sqs, queue_url)) == ["ok-0", "ok-2"]


class PartialFailureClient:
    """Answers SendMessageBatch with some entries in "Failed", as SQS does for per-entry errors."""

    def __init__(self, failing_ids: set[str]) -> None:
        self.failing_ids = failing_ids
        self.calls = 0

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        return {
            "Successful": [{"Id": e["Id"]} for e in Entries if e["Id"] not in self.failing_ids],
            "Failed": [
                {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "x"}
                for e in Entries
                if e["Id"] in self.failing_ids
            ],
        }


def test_failed_entries_return_exactly_their_indices() -> None:
    client = PartialFailureClient({"3", "14", "17"})
    failed = SqsQueue(client, "https://queue").send([OutgoingMessage(str(i)) for i in range(20)])
    assert failed == [3, 14, 17]
    assert client.calls == 2


def test_failed_entries_and_failed_call_combined_sorted() -> None:
    class Mixed(PartialFailureClient):
        def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            if self.calls == 0:
                self.calls += 1
                raise client_error()
            return super().send_message_batch(QueueUrl, Entries)

    failed = SqsQueue(Mixed({"12"}), "https://queue").send([OutgoingMessage(str(i)) for i in range(15)])
    assert failed == [*range(10), 12]


# --- park ----------------------------------------------------------------------------------


def test_park_puts_reason_origin_record(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="distiller-dlq")["QueueUrl"]
    record = {"eventID": "abc", "detail": {"operationType": "insert", "n": [1, 2]}}
    assert SqsQueue(sqs, url).park(record, "unparseable change event", "ingest") is True
    received = receive_all(sqs, url)
    assert len(received) == 1
    assert json.loads(received[0]["Body"]) == {
        "reason": "unparseable change event",
        "origin": "ingest",
        "record": record,
    }


def test_park_stringifies_non_json_values(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="distiller-dlq")["QueueUrl"]
    when = dt.datetime(2025, 3, 14, 15, 9, 26, tzinfo=dt.UTC)
    assert SqsQueue(sqs, url).park({"at": when}, "bad", "dispatch") is True
    body = json.loads(receive_all(sqs, url)[0]["Body"])
    assert body["record"] == {"at": str(when)}


def test_park_returns_false_when_send_fails(sqs: Any) -> None:
    url = f"https://sqs.{REGION}.amazonaws.com/123456789012/gone"
    assert SqsQueue(sqs, url).park({"x": 1}, "bad", "ingest") is False


def test_park_is_immediate(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="distiller-dlq")["QueueUrl"]
    spy = SpyClient(sqs)
    SqsQueue(spy, url).park("raw text record", "why", "where")
    assert spy.batches[0][0]["DelaySeconds"] == 0
    assert json.loads(spy.batches[0][0]["MessageBody"])["record"] == "raw text record"
