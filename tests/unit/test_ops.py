"""distiller_tools.ops: dead-letter redrive (moto SQS, stubbed clients) and the delivery-log listing."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import boto3
import mongomock
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.adapters.queues import SqsQueue
from distiller.core.clock import parse_instant
from distiller.deliver.log import DELIVERIES_COLLECTION, DeliveryAttempt, log_line
from distiller.deliver.message import DeliveryMessage
from distiller.ingest.sources import change_events_from_text
from distiller_tools.ops.deliveries import list_deliveries, list_logged_deliveries, read_log
from distiller_tools.ops.redrive import NotRedrivable, RedriveError, _move_task_unsupported, redrive, redrive_body
from tests.factories import oid, raw_insert

REGION = "us-east-2"
EMITTED_AT = "2025-03-14T15:09:26.535Z"


# -- SQS world -----------------------------------------------------------------------------------


class Queues:
    """The stack's queues as template.yaml names them, in moto."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.urls: dict[str, str] = {}
        for name, dlq in (
            ("ingest-dlq", None),
            ("delivery-dlq", None),
            ("ingest", "ingest-dlq"),
            ("delivery", "delivery-dlq"),
            ("retry", "delivery-dlq"),
        ):
            attributes = {}
            if dlq:
                arn = client.get_queue_attributes(QueueUrl=self.urls[dlq], AttributeNames=["QueueArn"])
                policy = {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": 5}
                attributes["RedrivePolicy"] = json.dumps(policy)
            self.urls[name] = client.create_queue(QueueName=f"trigger-distiller-test-{name}", Attributes=attributes)[
                "QueueUrl"
            ]

    def put(self, name: str, *bodies: str) -> None:
        for body in bodies:
            self.client.send_message(QueueUrl=self.urls[name], MessageBody=body)

    def drain(self, name: str) -> list[str]:
        """Every body now visible on the queue, deleting them."""
        bodies: list[str] = []
        while True:
            got = self.client.receive_message(QueueUrl=self.urls[name], MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return bodies
            for message in got:
                bodies.append(message["Body"])
                self.client.delete_message(QueueUrl=self.urls[name], ReceiptHandle=message["ReceiptHandle"])

    def total(self, name: str) -> int:
        """Messages on the queue, visible or not."""
        attributes = self.client.get_queue_attributes(
            QueueUrl=self.urls[name],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())


@pytest.fixture
def queues():
    with mock_aws():
        yield Queues(boto3.client("sqs", region_name=REGION))


def dead_letter(n: int, *, attempt: int = 4, partner: str = "acme") -> str:
    """A delivery as the Dispatcher dead-letters it: attempts exhausted, last error kept."""
    key = f"8263A1{n:06d}|{partner}|deal.completed|0"
    message = DeliveryMessage(
        partner_id=partner,
        event="deal.completed",
        event_id=f"{n:064x}",
        event_key=key,
        payload={"event": "deal.completed", "eventId": f"{n:064x}", "data": {"dealId": f"deal-{n}"}},
        emitted_at=EMITTED_AT,
        attempt=attempt,
        first_attempt_at="2025-03-14T15:09:27.000Z",
        last_error="HTTP 503",
    )
    return message.to_body()


class FlakyClient:
    """The moto client, with SendMessageBatch failing (all of it, or the named entries)."""

    def __init__(self, client: Any, *, fail_all: bool = False, fail_bodies: set[str] | None = None) -> None:
        self._client = client
        self.fail_all = fail_all
        self.fail_bodies = fail_bodies or set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def send_message_batch(self, **kwargs: Any) -> Any:
        if self.fail_all:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "try later"}}, "SendMessageBatch")
        failing = [e for e in kwargs["Entries"] if e["MessageBody"] in self.fail_bodies]
        kept = [e for e in kwargs["Entries"] if e["MessageBody"] not in self.fail_bodies]
        response = self._client.send_message_batch(QueueUrl=kwargs["QueueUrl"], Entries=kept) if kept else {}
        response["Failed"] = [
            {"Id": e["Id"], "Code": "InternalError", "Message": "boom", "SenderFault": False} for e in failing
        ]
        return response


class MoveTaskClient:
    """The moto client plus a working StartMessageMoveTask that records its calls."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.move_tasks: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def start_message_move_task(self, **kwargs: Any) -> dict[str, Any]:
        self.move_tasks.append(kwargs)
        return {"TaskHandle": "task-1"}


# -- redrive: delivery dead-letter queue ----------------------------------------------------------


def test_delivery_dead_letters_go_back_with_attempt_reset_and_the_same_event_id(queues):
    originals = [dead_letter(n) for n in (1, 2, 3)]
    queues.put("delivery-dlq", *originals)

    result = redrive(queues.client, queues.urls["delivery-dlq"], None, kind="delivery", wait_seconds=0)

    assert result.method == "receive-send-delete"
    assert "unchanged" in (result.fallback_reason or "")
    assert (result.moved, result.left, result.send_failed, result.complete) == (3, 0, 0, True)
    # the DLQ serves both delivery and retry: the one named like it wins
    assert result.destination_url == queues.urls["delivery"]
    back = sorted((json.loads(b) for b in queues.drain("delivery")), key=lambda d: d["eventId"])
    assert queues.drain("retry") == []
    assert queues.total("delivery-dlq") == 0
    for body, original in zip(back, sorted(map(json.loads, originals), key=lambda d: d["eventId"]), strict=True):
        assert body["attempt"] == 0
        assert body["lastError"] is None
        for kept in ("partnerId", "event", "eventId", "eventKey", "payload", "emittedAt", "firstAttemptAt"):
            assert body[kept] == original[kept], kept
        assert body["redrive"] == 1
        assert DeliveryMessage.from_body(json.dumps(body)).attempt == 0


def test_under_moto_the_move_task_is_missing_so_the_fallback_is_taken_and_reported(queues):
    queues.put("delivery-dlq", dead_letter(1))

    result = redrive(queues.client, queues.urls["delivery-dlq"], queues.urls["retry"], kind="raw", wait_seconds=0)

    assert result.method == "receive-send-delete"
    assert result.task_handle is None
    assert "not supported by this endpoint" in (result.fallback_reason or "")
    assert result.moved == 1
    assert queues.drain("retry") == [dead_letter(1)]  # raw: the body unchanged


def test_max_moves_at_most_that_many_and_leaves_the_rest(queues):
    queues.put("delivery-dlq", *(dead_letter(n) for n in range(1, 6)))

    result = redrive(queues.client, queues.urls["delivery-dlq"], None, kind="delivery", max_messages=2, wait_seconds=0)

    assert result.moved == 2
    assert len(queues.drain("delivery")) == 2
    assert len(queues.drain("delivery-dlq")) == 3


def test_a_send_that_fails_leaves_every_message_in_the_dead_letter_queue(queues):
    originals = [dead_letter(n) for n in (1, 2, 3)]
    queues.put("delivery-dlq", *originals)
    client = FlakyClient(queues.client, fail_all=True)

    result = redrive(client, queues.urls["delivery-dlq"], None, kind="delivery", wait_seconds=0)

    assert (result.moved, result.send_failed, result.complete) == (0, 3, False)
    assert result.stopped
    assert all("ServiceUnavailable" in p for p in result.problems)
    assert queues.drain("delivery") == []
    # nothing lost, and visible again at once (not after the receive's visibility timeout)
    assert sorted(queues.drain("delivery-dlq")) == sorted(originals)


def test_one_failed_entry_stays_while_the_others_move(queues):
    queues.put("delivery-dlq", dead_letter(1), dead_letter(2))
    failing = redrive_body(dead_letter(2), "delivery")
    client = FlakyClient(queues.client, fail_bodies={failing})

    result = redrive(client, queues.urls["delivery-dlq"], None, kind="delivery", wait_seconds=0)

    assert (result.moved, result.send_failed) == (1, 1)
    assert [json.loads(b)["eventId"] for b in queues.drain("delivery")] == [f"{1:064x}"]
    assert queues.drain("delivery-dlq") == [dead_letter(2)]


def test_a_body_that_is_not_a_delivery_stays_in_the_dead_letter_queue_and_is_counted(queues):
    queues.put("delivery-dlq", dead_letter(1), "not json at all", json.dumps({"partnerId": "acme"}))

    result = redrive(queues.client, queues.urls["delivery-dlq"], None, kind="delivery", wait_seconds=0)

    assert (result.moved, result.left, result.complete) == (1, 2, False)
    assert len(result.problems) == 2
    assert all("not a delivery message" in p for p in result.problems)
    assert len(queues.drain("delivery")) == 1
    assert sorted(queues.drain("delivery-dlq")) == sorted(["not json at all", json.dumps({"partnerId": "acme"})])


# -- redrive: ingest dead-letter queue ------------------------------------------------------------


def test_parked_ingest_records_go_back_to_the_ingest_queue_as_the_original_record(queues):
    change = raw_insert("deals", {"_id": oid(7), "guid": "g-7"}, token="82AB01")
    change["fullDocument"]["_id"] = {"$oid": str(oid(7))}
    change["documentKey"]["_id"] = {"$oid": str(oid(7))}
    sqs_record = {"messageId": "m-1", "body": json.dumps(change), "eventSource": "aws:sqs"}
    eventbridge = {"detail-type": "MongoDB Database Trigger for privateauto.deals", "detail": change}
    parking = SqsQueue(queues.client, queues.urls["ingest-dlq"])
    assert parking.park(sqs_record, "deal not visible yet", "Records[0] (messageId m-1)")
    assert parking.park(eventbridge, "lookup failed", "event")

    result = redrive(queues.client, queues.urls["ingest-dlq"], None, kind="ingest", wait_seconds=0)

    assert (result.moved, result.destination_url, result.complete) == (2, queues.urls["ingest"], True)
    back = queues.drain("ingest")
    assert sorted(map(json.loads, back), key=json.dumps) == sorted([sqs_record, eventbridge], key=json.dumps)
    for body in back:  # an accepted input shape again, holding the original change
        (event,) = change_events_from_text(body, "redriven")
        assert event.resume_token == "82AB01", event
    assert queues.total("ingest-dlq") == 0


def test_a_trimmed_oversize_change_from_the_relay_is_not_redriven():
    record = {"_id": {"_data": "82AB"}, "operationType": "update", "trimmed": {"size": 2_000_000}}
    body = json.dumps({"reason": "change too large for SQS", "origin": "relay", "record": record})
    with pytest.raises(NotRedrivable, match="replay its time range"):
        redrive_body(body, "ingest")


def test_an_ingest_body_that_is_not_a_parked_record_stays(queues):
    queues.put("ingest-dlq", json.dumps({"operationType": "insert"}), json.dumps({"reason": "r", "origin": "o"}))

    result = redrive(queues.client, queues.urls["ingest-dlq"], None, kind="ingest", wait_seconds=0)

    assert (result.moved, result.left) == (0, 2)
    assert queues.drain("ingest") == []
    assert len(queues.drain("ingest-dlq")) == 2


# -- redrive: StartMessageMoveTask ----------------------------------------------------------------


class StubMoveTaskClient:
    """Only what the move task path may call; receiving would be a test failure."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("get_queue_attributes", kwargs))
        name = kwargs["QueueUrl"].rsplit("/", 1)[-1]
        return {
            "Attributes": {"QueueArn": f"arn:aws:sqs:{REGION}:123456789012:{name}", "ApproximateNumberOfMessages": "7"}
        }

    def start_message_move_task(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("start_message_move_task", kwargs))
        return {"TaskHandle": "eyJ0YXNrSWQiOiIxIn0="}

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the move task path must not call {name}")


def test_where_the_endpoint_has_the_move_task_it_is_used_and_nothing_is_received():
    client = StubMoveTaskClient()
    dlq = f"https://sqs.{REGION}.amazonaws.com/123456789012/trigger-distiller-prod-delivery-dlq"

    result = redrive(client, dlq, None)

    assert result.method == "move-task"
    assert (result.task_handle, result.approximate_messages, result.destination_url) == (
        "eyJ0YXNrSWQiOiIxIn0=",
        7,
        None,
    )
    started = [kwargs for name, kwargs in client.calls if name == "start_message_move_task"]
    # no destination: SQS sends each message back to its original source queue
    assert started == [{"SourceArn": f"arn:aws:sqs:{REGION}:123456789012:trigger-distiller-prod-delivery-dlq"}]


def test_the_move_task_takes_the_destination_arn_when_one_is_named():
    client = StubMoveTaskClient()
    base = f"https://sqs.{REGION}.amazonaws.com/123456789012/"

    result = redrive(client, base + "x-dlq", base + "x-retry")

    assert result.method == "move-task"
    started = [kwargs for name, kwargs in client.calls if name == "start_message_move_task"]
    assert started[0]["DestinationArn"] == f"arn:aws:sqs:{REGION}:123456789012:x-retry"


@pytest.mark.parametrize(
    ("kind", "max_messages", "use_move_task"),
    [("delivery", None, True), ("ingest", None, True), ("raw", 3, True), ("raw", None, False)],
)
def test_the_move_task_is_not_used_where_it_cannot_do_the_job(queues, kind, max_messages, use_move_task):
    dlq = "delivery-dlq" if kind != "ingest" else "ingest-dlq"
    body = dead_letter(1) if kind != "ingest" else json.dumps({"reason": "r", "origin": "o", "record": {"a": 1}})
    queues.put(dlq, body)
    client = MoveTaskClient(queues.client)

    result = redrive(
        client,
        queues.urls[dlq],
        None,
        kind=kind,
        max_messages=max_messages,
        use_move_task=use_move_task,
        wait_seconds=0,
    )

    assert client.move_tasks == []
    assert (result.method, result.moved) == ("receive-send-delete", 1)
    assert result.fallback_reason


def test_a_move_task_refused_for_another_reason_is_an_error_not_a_fallback():
    class Refusing(StubMoveTaskClient):
        def start_message_move_task(self, **kwargs: Any) -> dict[str, Any]:
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
                "StartMessageMoveTask",
            )

    with pytest.raises(RedriveError, match="AccessDenied"):
        redrive(Refusing(), f"https://sqs.{REGION}.amazonaws.com/1/x-dlq", None)


def client_error(code: str, message: str = "", status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "StartMessageMoveTask",
    )


@pytest.mark.parametrize(
    ("exc", "unsupported"),
    [
        (NotImplementedError("The start_message_move_task action has not been implemented"), True),
        (client_error("InvalidAction", "The action StartMessageMoveTask is not valid"), True),
        (client_error("UnknownOperationException", ""), True),
        (client_error("AWS.SimpleQueueService.UnsupportedOperation", ""), True),
        (client_error("NotImplemented", "", 501), True),
        (client_error("InternalFailure", "StartMessageMoveTask is not implemented yet", 500), True),
        (client_error("500", "<!doctype html><title>500 Internal Server Error</title>", 500), True),
        (client_error("AccessDenied", "not authorized", 403), False),
        (client_error("InternalError", "We encountered an internal error", 500), False),
        (client_error("InvalidParameterValue", "Source queue must be configured as a Dead Letter Queue."), False),
        (ValueError("unrelated"), False),
    ],
)
def test_an_endpoint_without_the_move_task_is_told_apart_from_a_refusal(exc, unsupported):
    assert _move_task_unsupported(exc) is unsupported


# -- redrive: setup errors ------------------------------------------------------------------------


def test_the_dead_letter_queue_cannot_be_its_own_destination(queues):
    with pytest.raises(RedriveError, match="itself"):
        redrive(queues.client, queues.urls["delivery-dlq"], queues.urls["delivery-dlq"], kind="delivery")


def test_a_missing_destination_fails_before_anything_is_received(queues):
    queues.put("delivery-dlq", dead_letter(1))
    missing = queues.urls["delivery"] + "-gone"

    with pytest.raises(RedriveError, match="-gone"):
        redrive(queues.client, queues.urls["delivery-dlq"], missing, kind="delivery", wait_seconds=0)

    assert queues.drain("delivery-dlq") == [dead_letter(1)]


def test_a_queue_nothing_dead_letters_to_needs_a_destination(queues):
    lonely = queues.client.create_queue(QueueName="lonely-dlq")["QueueUrl"]
    with pytest.raises(RedriveError, match="no queue uses it"):
        redrive(queues.client, lonely, None, kind="raw", wait_seconds=0)


# -- redrive_body ---------------------------------------------------------------------------------


def test_redriving_a_delivery_twice_counts_the_redrives():
    once = redrive_body(dead_letter(1), "delivery")
    failed_again = json.loads(once) | {"attempt": 4, "lastError": "timeout"}
    twice = json.loads(redrive_body(json.dumps(failed_again), "delivery"))
    assert (twice["attempt"], twice["lastError"], twice["redrive"]) == (0, None, 2)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("{}", "delivery"),
        (json.dumps(json.loads(dead_letter(1)) | {"attempt": -1}), "delivery"),
        ("[]", "ingest"),
        (json.dumps({"reason": "r", "origin": "o", "record": None}), "ingest"),
    ],
)
def test_bodies_that_do_not_fit_the_kind_are_refused(body, kind):
    with pytest.raises(NotRedrivable):
        redrive_body(body, kind)


# -- the delivery log -----------------------------------------------------------------------------

T0 = dt.datetime(2025, 3, 14, 12, 0, tzinfo=dt.UTC)


def attempt(
    n: int, partner: str, status: str, event: str, minutes: int, *, event_id: str | None = None
) -> DeliveryAttempt:
    return DeliveryAttempt(
        partner_id=partner,
        event=event,
        event_id=event_id or f"{n:064x}",
        attempt=1,
        status=status,  # type: ignore[arg-type]
        url=f"https://{partner}.example/hooks",
        attempted_at=T0 + dt.timedelta(minutes=minutes),
        payload={"n": n},
        error=None if status == "delivered" else "HTTP 503",
    )


ATTEMPTS = [
    attempt(1, "acme", "failed", "deal.created", 0, event_id="e1"),
    attempt(2, "acme", "delivered", "deal.created", 1, event_id="e1"),
    attempt(3, "acme", "skipped", "deal.completed", 2, event_id="e3"),
    attempt(4, "carmart", "delivered", "deal.created", 3, event_id="e4"),
    attempt(5, "acme", "failed", "offer.created", 4, event_id="e5"),
    attempt(6, "acme", "delivered", "offer.created", 5, event_id="e5"),
]


@pytest.fixture
def collection():
    collection = mongomock.MongoClient(tz_aware=True)["privateauto"][DELIVERIES_COLLECTION]
    log = MongoDeliveryLog(collection)
    log.ensure_indexes(retention_days=36500)  # mongomock applies the TTL: keep 2025 attempts
    for a in ATTEMPTS:
        log.record(a)
    return collection


def log_file_lines(collection) -> list[str]:
    """What `distiller run --log` writes: log_line per attempt, oldest first, json.dumps(default=str)."""
    docs = collection.find({}, sort=[("attemptedAt", 1), ("_id", 1)])
    return [json.dumps(log_line(doc), default=str) + "\n" for doc in docs]


@pytest.fixture(params=["mongo", "log-file"])
def listing(request, collection):
    """list_deliveries over Mongo, or list_logged_deliveries over the --log lines of the same attempts."""
    if request.param == "mongo":
        return lambda partner, **filters: list_deliveries(collection, partner, **filters)
    attempts = read_log(log_file_lines(collection), "run.log")
    return lambda partner, **filters: list_logged_deliveries(attempts, partner, **filters)


def numbers(rows: list[dict[str, Any]]) -> list[int]:
    return [row["payload"]["n"] for row in rows]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [6, 5, 3, 2, 1]),
        ({"status": "delivered"}, [6, 2]),
        ({"status": "failed"}, [5, 1]),
        ({"status": "skipped"}, [3]),
        ({"event": "deal.created"}, [2, 1]),
        ({"event_id": "e5"}, [6, 5]),
        ({"since": T0 + dt.timedelta(minutes=2)}, [6, 5, 3]),  # inclusive
        ({"until": T0 + dt.timedelta(minutes=1)}, [2, 1]),  # inclusive
        ({"since": T0 + dt.timedelta(minutes=1), "until": T0 + dt.timedelta(minutes=4)}, [5, 3, 2]),
        ({"status": "delivered", "event": "offer.created"}, [6]),
        ({"limit": 2}, [6, 5]),
        ({"event": "user.created"}, []),
    ],
)
def test_each_filter_narrows_and_the_newest_comes_first(listing, filters, expected):
    assert numbers(listing("acme", **filters)) == expected


def test_another_partners_attempts_never_show(listing):
    rows = listing("carmart")
    assert numbers(rows) == [4]
    assert {row["partnerId"] for row in listing("acme")} == {"acme"}


def test_rows_are_plain_json_with_the_spec_fields(listing):
    (row,) = listing("carmart")
    assert isinstance(row["id"], str) and "_id" not in row
    assert row["attemptedAt"] == "2025-03-14T12:03:00.000Z"
    assert {
        "partnerId",
        "event",
        "status",
        "url",
        "statusCode",
        "attemptedAt",
        "responseBodyExcerpt",
        "error",
        "payload",
    } <= set(row)
    json.dumps(row)  # nothing that is not JSON


def test_offsets_are_compared_as_instants(listing):
    # 13:01+01:00 is 12:01Z
    assert numbers(listing("acme", until=parse_instant("2025-03-14T13:01:00+01:00"))) == [2, 1]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"status": "pending"}, "delivered, failed, skipped"),
        ({"since": T0 + dt.timedelta(hours=1), "until": T0}, "since is after until"),
        ({"limit": 0}, "limit"),
    ],
)
def test_bad_filters_are_refused(listing, filters, message):
    with pytest.raises(ValueError, match=message):
        listing("acme", **filters)


def test_a_bad_log_line_is_named_by_file_and_line():
    good = json.dumps({"partnerId": "acme", "attemptedAt": "2025-03-14T12:00:00.000Z"})
    with pytest.raises(ValueError, match=r"run\.log:2: not JSON"):
        read_log([good, "{oops"], "run.log")
    with pytest.raises(ValueError, match=r"run\.log:1: attemptedAt"):
        read_log([json.dumps({"partnerId": "acme", "attemptedAt": "yesterday"})], "run.log")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-14T15:09:26.535Z", dt.datetime(2025, 3, 14, 15, 9, 26, 535000, tzinfo=dt.UTC)),
        ("2025-03-14", dt.datetime(2025, 3, 14, tzinfo=dt.UTC)),
        ("2025-03-14T10:00:00-05:00", dt.datetime(2025, 3, 14, 15, tzinfo=dt.UTC)),
        ("2025-03-14T15:00:00", dt.datetime(2025, 3, 14, 15, tzinfo=dt.UTC)),
    ],
)
def test_parse_instant(text, expected):
    assert parse_instant(text) == expected


def test_parse_instant_refuses_what_is_not_iso():
    with pytest.raises(ValueError, match="not an ISO 8601"):
        parse_instant("14/03/2025")
