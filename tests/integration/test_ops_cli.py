"""`distiller dlq redrive` and `distiller deliveries`, through argparse, as the CLI runs them.

The parser is built the way cli.py builds it (`add_subparsers(dest="command")`, then
`ops.register`), and a command runs as `args.run(args, stdin, stdout, stderr)`. SQS is moto
in-process; the delivery log is mongomock or a `distiller run --log` file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from dataclasses import replace
from typing import Any

import boto3
import mongomock
import pytest
from moto import mock_aws

from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.adapters.lookups import MongoLookups
from distiller.adapters.payload_store import S3PayloadStore
from distiller.adapters.queues import OutgoingMessage, SqsQueue
from distiller.core.partners import Partner
from distiller.core.pipeline import distill
from distiller.deliver.dispatch import Dispatcher, RetrySchedule
from distiller.deliver.log import DELIVERIES_COLLECTION, DeliveryAttempt
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.sender import SendResult
from distiller.ingest.sources import change_events_from_text
from distiller_tools import ops
from distiller_tools.ops import cli as ops_cli
from distiller_tools.ops import redrive as ops_redrive
from tests.factories import partner
from tests.unit.test_relay import ScriptedDatabase, at, deal_created, deal_sold, replay_args, user_registered

REGION = "us-east-2"
EMITTED_AT = "2025-03-14T15:09:26.535Z"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distiller")
    ops.register(parser.add_subparsers(dest="command"))
    return parser


def cli(argv: list[str]) -> tuple[int, str, str]:
    args = parser().parse_args(argv)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = args.run(args, io.StringIO(), stdout, stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """argparse refuses the command line: exit status 2, and the message on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# -- dlq redrive ----------------------------------------------------------------------------------


class Stack:
    """The template's queues in moto: ingest/delivery/retry and their dead-letter queues."""

    def __init__(self) -> None:
        self.sqs = boto3.client("sqs", region_name=REGION)
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
                arn = self.sqs.get_queue_attributes(QueueUrl=self.urls[dlq], AttributeNames=["QueueArn"])
                policy = {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": 5}
                attributes["RedrivePolicy"] = json.dumps(policy)
            url = self.sqs.create_queue(QueueName=f"trigger-distiller-test-{name}", Attributes=attributes)["QueueUrl"]
            self.urls[name] = url

    def put(self, name: str, *bodies: str) -> None:
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.urls[name], MessageBody=body)

    def drain(self, name: str) -> list[str]:
        bodies: list[str] = []
        while got := self.sqs.receive_message(QueueUrl=self.urls[name], MaxNumberOfMessages=10).get("Messages", []):
            for message in got:
                bodies.append(message["Body"])
                self.sqs.delete_message(QueueUrl=self.urls[name], ReceiptHandle=message["ReceiptHandle"])
        return bodies


@pytest.fixture
def stack(monkeypatch):
    monkeypatch.setattr(ops_redrive, "RECEIVE_WAIT_SECONDS", 0)
    with mock_aws():
        yield Stack()


def delivery(n: int, *, attempt: int = 4) -> DeliveryMessage:
    return DeliveryMessage(
        partner_id="acme",
        event="deal.completed",
        event_id=f"{n:064x}",
        event_key=f"8263A1{n:06d}|acme|deal.completed|0",
        payload={"event": "deal.completed", "eventId": f"{n:064x}", "data": {"dealId": f"deal-{n}"}},
        emitted_at=EMITTED_AT,
        attempt=attempt,
        first_attempt_at="2025-03-14T15:09:27.000Z" if attempt else None,
        last_error="HTTP 503" if attempt else None,
    )


def test_redrive_infers_the_delivery_kind_from_the_queue_name_and_resets_attempts(stack):
    stack.put("delivery-dlq", *(delivery(n).to_body() for n in (1, 2)))

    code, out, err = cli(["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"]])

    assert code == 0, err
    (line,) = out.splitlines()
    result = json.loads(line)
    assert (result["kind"], result["method"], result["moved"], result["left"]) == (
        "delivery",
        "receive-send-delete",
        2,
        0,
    )
    assert result["destinationUrl"] == stack.urls["delivery"]
    assert "moved 2 delivery message(s)" in err
    back = [DeliveryMessage.from_body(b) for b in stack.drain("delivery")]
    assert sorted(m.event_id for m in back) == [f"{1:064x}", f"{2:064x}"]
    assert {(m.attempt, m.last_error, m.emitted_at) for m in back} == {(0, None, EMITTED_AT)}
    assert stack.drain("delivery-dlq") == []


def test_redrive_of_the_ingest_dead_letter_queue_sends_the_parked_record_back(stack):
    record = {"messageId": "m-9", "body": json.dumps({"operationType": "insert"}), "eventSource": "aws:sqs"}
    assert SqsQueue(stack.sqs, stack.urls["ingest-dlq"]).park(record, "bad", "Records[0]")

    code, out, err = cli(["dlq", "redrive", "--queue-url", stack.urls["ingest-dlq"], "--to", stack.urls["ingest"]])

    assert code == 0, err
    assert json.loads(out)["kind"] == "ingest"
    assert [json.loads(b) for b in stack.drain("ingest")] == [record]


def test_redrive_max_limits_the_count(stack):
    stack.put("delivery-dlq", *(delivery(n).to_body() for n in range(1, 5)))

    code, out, _ = cli(["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], "--max", "3"])

    assert (code, json.loads(out)["moved"]) == (0, 3)
    assert len(stack.drain("delivery")) == 3
    assert len(stack.drain("delivery-dlq")) == 1


def test_redrive_that_leaves_messages_behind_exits_1_and_says_which(stack):
    stack.put("delivery-dlq", delivery(1).to_body(), "garbage")

    code, out, err = cli(["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"]])

    assert code == 1
    assert (json.loads(out)["moved"], json.loads(out)["left"]) == (1, 1)
    assert "not a delivery message" in err
    assert "1 not redrivable, left in the dead-letter queue" in err
    assert stack.drain("delivery-dlq") == ["garbage"]


def test_redrive_of_a_queue_whose_kind_cannot_be_told_is_a_usage_error(stack):
    other = stack.sqs.create_queue(QueueName="something-else")["QueueUrl"]

    code, out, err = cli(["dlq", "redrive", "--queue-url", other])

    assert (code, out) == (2, "")
    assert "pass --kind delivery|ingest|raw" in err


def test_redrive_to_a_queue_that_does_not_exist_is_a_usage_error_and_moves_nothing(stack):
    stack.put("delivery-dlq", delivery(1).to_body())

    code, _, err = cli(
        ["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], "--to", stack.urls["delivery"] + "-nope"]
    )

    assert code == 2
    assert "-nope" in err
    assert len(stack.drain("delivery-dlq")) == 1


def test_redrive_max_must_be_positive(capsys):
    err = usage_error(["dlq", "redrive", "--queue-url", "https://x/1/q-dlq", "--max", "0"], capsys)
    assert "argument --max" in err


class WithMoveTask:
    def __init__(self, client: Any) -> None:
        self._client = client
        self.started: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def start_message_move_task(self, **kwargs: Any) -> dict[str, Any]:
        self.started.append(kwargs)
        return {"TaskHandle": "handle-42"}


def test_raw_redrive_uses_the_move_task_where_it_exists_and_no_move_task_forces_the_fallback(stack, monkeypatch):
    client = WithMoveTask(stack.sqs)
    monkeypatch.setattr(ops_cli, "sqs_client", lambda url, endpoint: client)
    stack.put("delivery-dlq", delivery(1).to_body())
    argv = ["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], "--kind", "raw"]

    code, out, err = cli(argv)

    assert code == 0, err
    assert (json.loads(out)["method"], json.loads(out)["taskHandle"]) == ("move-task", "handle-42")
    assert "task handle handle-42" in err
    assert len(client.started) == 1
    assert stack.drain("retry") + stack.drain("delivery") == []  # the (stubbed) task moved nothing yet

    code, out, err = cli([*argv, "--no-move-task"])

    assert code == 0, err
    assert json.loads(out)["method"] == "receive-send-delete"
    assert len(client.started) == 1
    assert stack.drain("delivery") == [delivery(1).to_body()]  # raw: unchanged


# -- filtered redrive -------------------------------------------------------------------------------

MIXED = [
    ("acme", "deal.created"),
    ("acme", "deal.created"),
    ("acme", "deal.completed"),
    ("acme", "offer.created"),
    ("carmart", "deal.created"),
    ("carmart", "deal.created"),
    ("carmart", "offer.created"),
]


def delivery_for(n: int, partner_id: str, event: str) -> DeliveryMessage:
    return replace(delivery(n), partner_id=partner_id, event=event, event_key=f"8263A1{n:06d}|{partner_id}|{event}|0")


def put_mixed(stack: Stack) -> None:
    stack.put("delivery-dlq", *(delivery_for(n, p, e).to_body() for n, (p, e) in enumerate(MIXED, start=1)))


def partner_events(bodies: list[str]) -> list[tuple[str, str]]:
    return sorted((m.partner_id, m.event) for m in map(DeliveryMessage.from_body, bodies))


def put_an_hour_ago(stack: Stack, monkeypatch, name: str, *bodies: str) -> None:
    """Messages whose SentTimestamp is an hour back (moto stamps sends with `unix_time_millis`)."""
    import moto.sqs.models as moto_sqs

    real = moto_sqs.unix_time_millis
    monkeypatch.setattr(moto_sqs, "unix_time_millis", lambda *a: real(*a) - 3_600_000)
    stack.put(name, *bodies)
    monkeypatch.setattr(moto_sqs, "unix_time_millis", real)


def test_a_filtered_redrive_moves_exactly_the_matching_deliveries_and_leaves_the_rest_visible(stack):
    put_mixed(stack)

    code, out, err = cli(
        ["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], "--partner", "acme", "--event", "deal.*"]
    )

    assert code == 0, err
    result = json.loads(out)
    assert (result["method"], result["moved"], result["matched"], result["notMatching"]) == (
        "receive-send-delete",
        3,
        3,
        4,
    )
    assert result["byPartnerEvent"] == [
        {"partner": "acme", "event": "deal.completed", "messages": 1},
        {"partner": "acme", "event": "deal.created", "messages": 2},
    ]
    assert "4 not matching (partner acme, event deal.*), left as they were" in err
    assert partner_events(stack.drain("delivery")) == [
        ("acme", "deal.completed"),
        ("acme", "deal.created"),
        ("acme", "deal.created"),
    ]
    # the others are still there, and visible at once (not after the receive's 60 s)
    assert partner_events(stack.drain("delivery-dlq")) == [
        ("acme", "offer.created"),
        ("carmart", "deal.created"),
        ("carmart", "deal.created"),
        ("carmart", "offer.created"),
    ]


def test_a_pass_that_outlasts_the_hold_stops_with_exit_1_and_loses_nothing(stack, monkeypatch):
    """Messages left behind are hidden while the pass reads on; one that comes back anyway means
    the pass may not have read the whole queue: it says so and exits 1, it does not report success."""
    from distiller_tools.ops import redrive as redrive_module

    monkeypatch.setattr(redrive_module, "HOLD_SECONDS", 0)  # a hold that has already run out
    put_mixed(stack)

    code, out, err = cli(["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], "--partner", "nobody"])

    assert code == 1, err
    assert "came back before the pass ended" in err
    assert json.loads(out)["moved"] == 0
    assert len(stack.drain("delivery-dlq")) == 7  # nothing moved, nothing lost


def test_a_dry_run_counts_per_partner_and_event_and_moves_nothing(stack):
    put_mixed(stack)

    argv = ["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], "--event", "deal.*", "--dry-run"]

    code, out, err = cli(argv)

    assert code == 0, err
    result = json.loads(out)
    assert (result["dryRun"], result["moved"], result["matched"], result["notMatching"]) == (True, 0, 5, 2)
    assert "redrive: acme deal.created: 2 would move" in err
    assert "redrive: carmart deal.created: 2 would move" in err
    assert "dry run: 5 delivery message(s) would move" in err and "nothing moved" in err
    assert stack.drain("delivery") == []
    assert partner_events(stack.drain("delivery-dlq")) == sorted(MIXED)  # all of them, visible, unchanged


def test_an_unfiltered_dry_run_counts_everything(stack):
    put_mixed(stack)

    code, out, _ = cli(["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], "--dry-run"])

    assert code == 0
    assert (json.loads(out)["matched"], json.loads(out)["moved"]) == (7, 0)
    assert len(stack.drain("delivery-dlq")) == 7


def test_since_and_until_pick_dead_letters_by_their_sent_timestamp(stack, monkeypatch):
    put_an_hour_ago(stack, monkeypatch, "delivery-dlq", delivery_for(1, "acme", "deal.created").to_body())
    stack.put("delivery-dlq", delivery_for(2, "acme", "deal.created").to_body())
    half_an_hour_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)).isoformat()

    code, out, err = cli(["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], "--since", half_an_hour_ago])

    assert code == 0, err
    assert (json.loads(out)["moved"], json.loads(out)["notMatching"]) == (1, 1)
    assert [m.event_id for m in map(DeliveryMessage.from_body, stack.drain("delivery"))] == [f"{2:064x}"]

    code, out, err = cli(["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], "--until", half_an_hour_ago])

    assert (code, json.loads(out)["moved"]) == (0, 1)
    assert [m.event_id for m in map(DeliveryMessage.from_body, stack.drain("delivery"))] == [f"{1:064x}"]


def test_an_ingest_redrive_takes_a_time_range_but_refuses_partner_and_event(stack):
    ingest_dlq = SqsQueue(stack.sqs, stack.urls["ingest-dlq"])
    assert ingest_dlq.park({"operationType": "insert", "n": 1}, "bad", "Records[0]")
    argv = ["dlq", "redrive", "--queue-url", stack.urls["ingest-dlq"]]

    for flag, value in (("--partner", "acme"), ("--event", "deal.*")):
        code, out, err = cli([*argv, flag, value])
        assert (code, out) == (2, "")
        assert "parked ingest records have no partner or event" in err

    assert stack.drain("ingest") == []
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    code, out, err = cli([*argv, "--since", future])
    assert (code, json.loads(out)["moved"], json.loads(out)["notMatching"]) == (0, 0, 1)
    code, out, err = cli([*argv, "--until", future])
    assert (code, json.loads(out)["moved"]) == (0, 1)
    assert [json.loads(b) for b in stack.drain("ingest")] == [{"operationType": "insert", "n": 1}]


def test_a_filtered_raw_redrive_never_uses_the_move_task(stack, monkeypatch):
    client = WithMoveTask(stack.sqs)
    monkeypatch.setattr(ops_cli, "sqs_client", lambda url, endpoint: client)
    stack.put("delivery-dlq", delivery(1).to_body())
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    argv = ["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], "--kind", "raw", "--since", past]

    code, out, err = cli(argv)

    assert code == 0, err
    assert client.started == []
    assert "cannot filter" in json.loads(out)["fallbackReason"]
    assert stack.drain("delivery") == [delivery(1).to_body()]


def test_partner_and_event_on_a_raw_redrive_need_the_delivery_kind(stack):
    argv = ["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], "--kind", "raw", "--partner", "acme"]
    code, out, err = cli(argv)
    assert (code, out) == (2, "") and "--partner/--event need --kind delivery" in err


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--event", "deal.nope"], "--event: 'deal.nope' is not a catalog event"),
        (["--partner", "no spaces"], "partner id 'no spaces'"),
        (["--since", "2026-04-21T12:00:00Z", "--until", "2026-04-21T11:00:00Z"], "is before --since"),
    ],
)
def test_bad_redrive_filters_exit_2_and_move_nothing(stack, flags, complaint):
    put_mixed(stack)

    code, out, err = cli(["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], *flags])

    assert (code, out) == (2, "")
    assert complaint in err
    assert len(stack.drain("delivery-dlq")) == len(MIXED) and stack.drain("delivery") == []


def test_max_counts_only_matching_messages(stack):
    put_mixed(stack)

    argv = ["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"], "--partner", "carmart", "--max", "2"]

    code, out, _ = cli(argv)

    assert (code, json.loads(out)["moved"]) == (0, 2)
    assert {p for p, _ in partner_events(stack.drain("delivery"))} == {"carmart"}
    assert len(stack.drain("delivery-dlq")) == len(MIXED) - 2


def test_endpoint_url_and_region_reach_the_client():
    client = ops_redrive.sqs_client("https://sqs.eu-west-1.amazonaws.com/123456789012/q-dlq", "http://127.0.0.1:4566")
    assert client.meta.endpoint_url == "http://127.0.0.1:4566"
    assert client.meta.region_name == "eu-west-1"


def test_endpoint_url_is_passed_through_from_the_command_line(stack, monkeypatch):
    seen: list[tuple[str, str | None]] = []

    def fake_client(url: str, endpoint: str | None) -> Any:
        seen.append((url, endpoint))
        return stack.sqs

    monkeypatch.setattr(ops_cli, "sqs_client", fake_client)
    dlq = stack.urls["delivery-dlq"]
    code, _, err = cli(["dlq", "redrive", "--queue-url", dlq, "--endpoint-url", "http://127.0.0.1:9"])
    assert code == 0, err
    assert seen == [(dlq, "http://127.0.0.1:9")]


# -- a redriven delivery meets the Dispatcher -----------------------------------------------------


class Sender:
    def __init__(self, delivered: bool) -> None:
        self.delivered = delivered
        self.posts: list[bytes] = []

    def post(self, url: str, headers: dict[str, str], body: bytes, **options: Any) -> SendResult:
        self.posts.append(body)
        if self.delivered:
            return SendResult(True, status_code=200)
        return SendResult(False, status_code=503, error="HTTP 503")


class Secrets:
    def webhook_secret(self, partner_id: str) -> str:
        return "whsec_test"


class Captured:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send(self, messages: list[OutgoingMessage]) -> list[int]:
        self.bodies.extend(m.body for m in messages)
        return []


def test_a_redriven_delivery_is_posted_again_by_the_dispatcher(stack):
    log = MongoDeliveryLog(mongomock.MongoClient(tz_aware=True)["privateauto"][DELIVERIES_COLLECTION])
    partners = [Partner("acme", webhook_url="https://acme.example/hooks")]
    retries = Captured()

    def dispatcher(sender: Sender) -> Dispatcher:
        return Dispatcher(
            partners=lambda: partners,
            secrets=Secrets(),
            sender=sender,
            log=log,
            retry_queue=retries,
            dead_letter_queue=SqsQueue(stack.sqs, stack.urls["delivery-dlq"]),
            schedule=RetrySchedule((0, 0, 0)),
        )

    failing = dispatcher(Sender(delivered=False))
    message = delivery(1, attempt=0)
    outcomes = []
    for _ in range(4):  # first POST and three retries, then the dead-letter queue
        outcomes.append(failing.dispatch_all([message])[0])
        if retries.bodies:
            message = DeliveryMessage.from_body(retries.bodies.pop())
    assert outcomes == ["retry-scheduled"] * 3 + ["dead-lettered"]

    code, _, err = cli(["dlq", "redrive", "--queue-url", stack.urls["delivery-dlq"]])
    assert code == 0, err
    (body,) = stack.drain("delivery")

    sender = Sender(delivered=True)
    assert dispatcher(sender).dispatch_all([DeliveryMessage.from_body(body)]) == ["delivered"]
    assert len(sender.posts) == 1


# -- deliveries -----------------------------------------------------------------------------------

T0 = dt.datetime(2025, 3, 14, 12, 0, tzinfo=dt.UTC)


def logged(n: int, partner: str, status: str, event: str, minutes: int) -> DeliveryAttempt:
    return DeliveryAttempt(
        partner_id=partner,
        event=event,
        event_id=f"e{n}",
        attempt=1,
        status=status,  # type: ignore[arg-type]
        url=f"https://{partner}.example/hooks",
        attempted_at=T0 + dt.timedelta(minutes=minutes),
        payload={"n": n},
    )


ATTEMPTS = [
    logged(1, "acme", "failed", "deal.created", 0),
    logged(2, "acme", "delivered", "deal.created", 1),
    logged(3, "acme", "skipped", "deal.completed", 2),
    logged(4, "carmart", "delivered", "deal.created", 3),
    logged(5, "acme", "delivered", "offer.created", 4),
]


@pytest.fixture
def collection():
    collection = mongomock.MongoClient(tz_aware=True)["privateauto"][DELIVERIES_COLLECTION]
    for a in ATTEMPTS:
        MongoDeliveryLog(collection).record(a)
    return collection


def numbers(out: str) -> list[int]:
    return [json.loads(line)["payload"]["n"] for line in out.splitlines()]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([], [5, 3, 2, 1]),
        (["--status", "delivered"], [5, 2]),
        (["--event", "deal.created"], [2, 1]),
        (["--event-id", "e3"], [3]),
        (["--since", "2025-03-14T12:01:00Z"], [5, 3, 2]),
        (["--until", "2025-03-14T12:01:00Z"], [2, 1]),
        (["--since", "2025-03-14T13:01:00+01:00", "--until", "2025-03-14T12:02:00"], [3, 2]),
        (["--limit", "1"], [5]),
    ],
)
def test_deliveries_filters_narrow_and_print_newest_first(source, filters, expected):
    code, out, err = cli(["deliveries", "--partner", "acme", *source, *filters])

    assert code == 0, err
    assert numbers(out) == expected
    assert all(json.loads(line)["partnerId"] == "acme" for line in out.splitlines())
    assert f"deliveries: {len(expected)} attempt(s) for partner acme" in err
    assert len(err.splitlines()) == 1


def test_deliveries_summary_counts_statuses_and_warns_at_the_limit(source):
    code, _, err = cli(["deliveries", "--partner", "acme", *source])
    assert code == 0
    assert "(2 delivered, 1 failed, 1 skipped)" in err
    assert "limit" not in err

    _, _, err = cli(["deliveries", "--partner", "acme", *source, "--limit", "2"])
    assert "limit 2 reached" in err


def test_deliveries_lines_are_the_spec_shape(source):
    _, out, _ = cli(["deliveries", "--partner", "carmart", *source])
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["attemptedAt"] == "2025-03-14T12:03:00.000Z"
    assert isinstance(row["id"], str)
    assert (row["status"], row["event"], row["eventId"]) == ("delivered", "deal.created", "e4")


def test_deliveries_with_nothing_to_show_is_still_a_success(source):
    code, out, err = cli(["deliveries", "--partner", "nobody", *source])
    assert (code, out) == (0, "")
    assert "0 attempt(s)" in err


def test_deliveries_unknown_status_is_a_usage_error(log_file, capsys):
    err = usage_error(["deliveries", "--partner", "acme", "--log", str(log_file), "--status", "pending"], capsys)
    assert "argument --status: invalid choice: 'pending'" in err


@pytest.mark.parametrize("flag", ["--since", "--until"])
def test_deliveries_bad_date_is_a_usage_error(log_file, capsys, flag):
    err = usage_error(["deliveries", "--partner", "acme", "--log", str(log_file), flag, "14/03/2025"], capsys)
    assert f"argument {flag}" in err
    assert "not an ISO 8601 date" in err


def test_deliveries_needs_exactly_one_source(log_file, capsys):
    err = usage_error(["deliveries", "--partner", "acme"], capsys)
    assert "--mongo-uri" in err and "--log" in err
    err = usage_error(["deliveries", "--partner", "acme", "--log", str(log_file), "--mongo-uri", "mongodb://x"], capsys)
    assert "not allowed with" in err


def test_deliveries_since_after_until_exits_2(log_file):
    code, out, err = cli(
        ["deliveries", "--partner", "acme", "--log", str(log_file), "--since", "2025-03-15", "--until", "2025-03-14"]
    )
    assert (code, out) == (2, "")
    assert "since is after until" in err


def test_deliveries_unreadable_or_malformed_log_exits_2(tmp_path):
    code, _, err = cli(["deliveries", "--partner", "acme", "--log", str(tmp_path / "missing.log")])
    assert code == 2
    assert "missing.log: cannot read" in err

    bad = tmp_path / "bad.log"
    bad.write_text('{"partnerId": "acme", "attemptedAt": "2025-03-14T12:00:00Z"}\nnot json\n')
    code, out, err = cli(["deliveries", "--partner", "acme", "--log", str(bad)])
    assert (code, out) == (2, "")
    assert "bad.log:2: not JSON" in err


def test_deliveries_mongo_uri_and_database_reach_the_connection(collection, monkeypatch):
    opened: list[tuple[str, str]] = []

    def open_collection(uri: str, database: str) -> Any:
        opened.append((uri, database))
        return collection

    monkeypatch.setattr(ops_cli, "_open_collection", open_collection)
    cli(["deliveries", "--partner", "acme", "--mongo-uri", "mongodb://db.example:27017"])
    cli(["deliveries", "--partner", "acme", "--mongo-uri", "mongodb://db.example:27017", "--database", "staging"])
    assert opened == [("mongodb://db.example:27017", "privateauto"), ("mongodb://db.example:27017", "staging")]


def test_open_collection_is_the_delivery_log_collection(monkeypatch):
    import pymongo

    monkeypatch.setattr(pymongo, "MongoClient", mongomock.MongoClient)
    collection = ops_cli._open_collection("mongodb://db.example:27017", "privateauto")
    assert (collection.database.name, collection.name) == ("privateauto", DELIVERIES_COLLECTION)


def test_deliveries_database_failure_exits_2(monkeypatch):
    from pymongo.errors import ServerSelectionTimeoutError

    class Unreachable:
        def find(self, *args: Any, **kwargs: Any) -> Any:
            raise ServerSelectionTimeoutError("db.example:27017: timed out")

    monkeypatch.setattr(ops_cli, "_open_collection", lambda uri, database: Unreachable())
    code, out, err = cli(["deliveries", "--partner", "acme", "--mongo-uri", "mongodb://db.example", "--database", "x"])
    assert (code, out) == (2, "")
    assert "database: db.example:27017: timed out" in err


# -- filtered replay ------------------------------------------------------------------------------


@pytest.fixture
def replay_world():
    """Two partners in mongomock and a scripted change stream of their deals and users (tests.unit.test_relay)."""
    database = mongomock.MongoClient(tz_aware=True)["privateauto"]
    database["partners"].insert_many(
        [
            partner("carmart", webhookScope="appSource", appSource="carmart"),
            partner("acme", webhookScope="appSource"),
        ]
    )
    script = [deal_created(1), user_registered(2), deal_created(3, app="acme"), deal_sold(4)]
    return ScriptedDatabase(script, database)


def replay_cli(source: Any, *argv: str) -> tuple[int, str, str]:
    args = replay_args("--since", "2026-04-25T12:00:00Z", *argv)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = args.run(args, io.StringIO(), stdout, stderr, open_database=lambda uri, name: source, now=lambda: at(1000))
    return code, stdout.getvalue(), stderr.getvalue()


def original_deliveries(source: Any) -> set[tuple[str, str, str]]:
    """(partner, event, eventId) the Distiller makes of the replayed changes (the unfiltered replay's lines)."""
    code, out, _ = replay_cli(source)
    assert code == 0
    items = [item for n, line in enumerate(out.splitlines()) for item in change_events_from_text(line, f"l{n}")]
    outcomes = distill(items, MongoLookups(source.db))
    return {(d.partner_id, d.event, d.event_id) for o in outcomes for d in o.deliveries}


def test_a_replay_by_partner_and_event_prints_only_the_matching_deliveries_with_their_original_event_ids(
    replay_world,
):
    expected = {d for d in original_deliveries(replay_world) if d[0] == "acme" and d[1].startswith("deal.")}
    assert len(expected) == 3  # acme's deal.created, deal.completed, deal.payment_acknowledged

    code, out, err = replay_cli(replay_world, "--partner", "acme", "--event", "deal.*")

    assert code == 0, err
    sent = [DeliveryMessage.from_body(line) for line in out.splitlines()]
    assert {(m.partner_id, m.event, m.event_id) for m in sent} == expected
    assert {m.redrive for m in sent} == {int(at(1000).timestamp())}  # a new round: POSTed even if delivered before
    assert "sent 3 delivery(ies) (partner acme, event deal.*) to stdout from 4 change(s)" in err
    assert "2 other delivery(ies) not matching" in err


def test_a_replay_by_event_goes_to_the_delivery_queue(replay_world, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="trigger-distiller-test-delivery")["QueueUrl"]

        code, out, err = replay_cli(replay_world, "--event", "deal.created", "--delivery-queue-url", url)

        assert (code, out) == (0, ""), err
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted((m.partner_id, m.event) for m in (DeliveryMessage.from_body(g["Body"]) for g in got)) == [
        ("acme", "deal.created"),
        ("carmart", "deal.created"),
    ]


def test_a_replay_dry_run_counts_per_partner_and_event_and_sends_nothing(replay_world):
    code, out, err = replay_cli(replay_world, "--partner", "carmart", "--dry-run")

    assert (code, out) == (0, ""), err
    assert "replay: carmart deal.created: 1 would be sent" in err
    assert "replay: carmart user.registered: 1 would be sent" in err
    assert "acme" not in err.split("dry run:")[0]
    assert "dry run: 2 delivery(ies) (partner carmart) would be sent" in err


def test_a_plain_replay_dry_run_prints_no_changes_and_counts_what_they_would_deliver(replay_world):
    code, out, err = replay_cli(replay_world, "--dry-run")

    assert (code, out) == (0, ""), err
    assert "dry run: 4 change(s) would be replayed to stdout, making 5 delivery(ies)" in err


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--partner", "acme", "--queue-url", "https://sqs.us-east-2.amazonaws.com/1/q"], "--delivery-queue-url"),
        (["--event", "deal.nope"], "--event: 'deal.nope' is not a catalog event"),
        (["--partner", "a b"], "partner id 'a b'"),
    ],
)
def test_bad_replay_filters_exit_2_before_reading_the_stream(replay_world, argv, complaint):
    code, out, err = replay_cli(replay_world, *argv)

    assert (code, out) == (2, "")
    assert complaint in err
    assert replay_world.calls == []


def test_a_replay_claim_checks_payloads_too_large_for_a_message_with_the_stacks_bucket(replay_world, monkeypatch):
    monkeypatch.setattr("distiller.deliver.message.INLINE_LIMIT_BYTES", 64)  # every payload is "too large"
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="trigger-distiller-test-delivery")["QueueUrl"]
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="claims", CreateBucketConfiguration={"LocationConstraint": REGION})

        code, _, err = replay_cli(replay_world, "--event", "deal.created", "--delivery-queue-url", url)
        assert code != 0 and "no claim-check bucket is configured" in err  # reported, not sent
        assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)

        args = ("--event", "deal.created", "--delivery-queue-url", url, "--claim-check-bucket", "claims")
        code, _, err = replay_cli(replay_world, *args)

        assert code == 0, err
        got = [
            DeliveryMessage.from_body(m["Body"])
            for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        ]
        assert len(got) == 2 and all(m.payload_ref is not None and m.payload == {} for m in got)
        loaded = [m.with_payload(S3PayloadStore(s3, "claims")) for m in got]
        assert {m.payload["eventId"] for m in loaded} == {m.event_id for m in got}
