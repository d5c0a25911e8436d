"""`distiller partners enable` on a partner paused by endpoint health: it resumes at once, and its
held deliveries go back on the delivery queue now (`--drain-now`) or by the health sweep; and
`distiller explain` on the paused partner.

The pause and the hold are written by the stack's own adapters (`MongoPartnerHealth.pause`,
`MongoHeldDeliveries.hold`) on mongomock; the delivery queue is moto's SQS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import mongomock
import pytest
from moto import mock_aws

from distiller.adapters.endpoint_health import MongoHeldDeliveries, MongoPartnerHealth
from distiller.deliver.health import HELD_COLLECTION, HELD_REASON, HeldDelivery
from distiller.deliver.log import DELIVERIES_COLLECTION, DeliveryAttempt
from distiller.deliver.message import DeliveryMessage
from distiller.runtime import HealthRuntime
from distiller.settings import EndpointHealthSettings, HealthSweepSettings
from distiller_tools import ops
from distiller_tools.ops import explain as ops_explain
from distiller_tools.partners.cli import Dependencies, main
from tests.factories import oid

REGION = "us-east-2"
URL = "https://hooks.partner.example/privateauto"
PAUSED_AT = dt.datetime(2026, 4, 21, 9, 30, tzinfo=dt.UTC)
NOW = PAUSED_AT + dt.timedelta(hours=2)
REASON = "5 consecutive deliveries dead-lettered without one delivered"
MONGO = ["--mongo-uri", "mongodb://db.example:27017", "--region", REGION]


@dataclass
class Stack:
    deps: Dependencies
    db: Any
    sqs: Any
    queue_url: str
    held: MongoHeldDeliveries

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        code = main(argv, stdout, stderr, self.deps)
        return code, stdout.getvalue(), stderr.getvalue()

    def queued(self) -> list[dict[str, Any]]:
        bodies: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return bodies
            bodies += [json.loads(m["Body"]) for m in got]
            for m in got:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])


def held_message(n: int, *, attempt: int = 3) -> DeliveryMessage:
    """The n-th delivery the Dispatcher held at its last failed attempt (emitted n minutes in)."""
    return DeliveryMessage(
        partner_id="acme",
        event="deal.created",
        event_id=f"evt-{n}",
        event_key=f"deals:1:acme:deal.created:{n}",
        payload={"id": f"deal-{n}", "entityType": "deals"},
        emitted_at=f"2026-04-21T09:{30 + n:02d}:00.000Z",
        attempt=attempt,
        first_attempt_at="2026-04-21T09:00:00.000Z",
        last_error="HTTP 503",
    )


@pytest.fixture
def stack(monkeypatch) -> Iterator[Stack]:
    """`acme` paused by the stack, with three deliveries held, emitted 1, 2 and 3 minutes in."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        db = mongomock.MongoClient(tz_aware=True)["privateauto"]
        db["partners"].insert_one({"partnerId": "acme", "active": True, "webhook": {"url": URL, "events": ["*"]}})
        assert MongoPartnerHealth(db).pause("acme", REASON, PAUSED_AT)
        held = MongoHeldDeliveries(db[HELD_COLLECTION])
        for n in (3, 1, 2):  # held out of order: the drain goes by emittedAt
            assert held.hold(HeldDelivery.of(held_message(n), PAUSED_AT + dt.timedelta(minutes=n), HELD_REASON))
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = sqs.create_queue(QueueName="delivery")["QueueUrl"]
        deps = Dependencies(
            mongo_collection=lambda uri, name: db["partners"],
            secrets_client=lambda region: boto3.client("secretsmanager", region_name=REGION),
            sqs_client=lambda region: boto3.client("sqs", region_name=region or REGION),
            clock=lambda: NOW,
        )
        yield Stack(deps, db, sqs, queue_url, held)


def stored(stack: Stack) -> dict[str, Any]:
    return stack.db["partners"].find_one({"partnerId": "acme"}, {"_id": 0})


def test_enable_drain_now_resumes_and_queues_the_held_deliveries_oldest_first(stack):
    code, out, err = stack.run(["enable", "acme", "--drain-now", "--delivery-queue-url", stack.queue_url, *MONGO])

    assert code == 0, err
    record = stored(stack)
    assert "state" not in record and record["active"] is True
    assert record["health"]["resumedBy"] == "partners enable"
    assert record["health"]["resumedAt"] == NOW and record["health"]["reason"] == REASON  # the why is kept
    assert json.loads(out)["partnerId"] == "acme"  # stdout: the record as stored
    queued = stack.queued()
    assert [m["eventId"] for m in queued] == ["evt-1", "evt-2", "evt-3"]
    assert all(m["attempt"] == 0 and m["lastError"] is None for m in queued)  # a fresh retry schedule
    assert all(m["redrive"] > 0 for m in queued)  # a resume round of its own, not the held one
    assert stack.db[HELD_COLLECTION].count_documents({}) == 0
    assert "'acme' resumed (was paused since 2026-04-21T09:30:00.000Z: " + REASON in err
    assert "drained 3 held deliveries of 'acme' onto the delivery queue" in err
    assert err.rstrip().endswith("evt-1, evt-2, evt-3")


def test_enable_without_drain_now_resumes_leaves_them_held_and_says_how_many(stack):
    code, _, err = stack.run(["enable", "acme", *MONGO])

    assert code == 0, err
    assert "state" not in stored(stack)
    assert stack.held.count("acme") == 3 and stack.queued() == []
    assert "3 deliveries held for 'acme': the health sweep (HealthFunction, every minute) drains them" in err
    assert "--drain-now --delivery-queue-url URL" in err

    # The sweep, next minute, finds them held for a partner no longer paused and drains them.
    settings = HealthSweepSettings.from_env({"DELIVERY_QUEUE_URL": stack.queue_url, "DELIVERY_DLQ_URL": "unused"})
    report = HealthRuntime.build(stack.db, settings, EndpointHealthSettings(), stack.sqs).sweep.run()
    assert report.drained == {"acme": 3}
    assert [m["eventId"] for m in stack.queued()] == ["evt-1", "evt-2", "evt-3"]


def test_enabling_an_active_unpaused_partner_changes_nothing_and_says_so(stack):
    stack.db["partners"].update_one({"partnerId": "acme"}, {"$unset": {"state": "", "health": ""}})
    stack.db[HELD_COLLECTION].delete_many({})
    before = stored(stack)

    code, out, err = stack.run(["enable", "acme", *MONGO])

    assert code == 0, err
    assert stored(stack) == before and json.loads(out) == before
    assert "'acme' is already active and not paused: nothing changed" in err
    assert "no deliveries held for 'acme'" in err


def test_a_drain_skips_what_the_log_shows_delivered_in_its_round(stack):
    # evt-2 reached the partner meanwhile (a probe's round, after the one it was held in)
    stack.db[DELIVERIES_COLLECTION].insert_one(
        {"partnerId": "acme", "eventId": "evt-2", "status": "delivered", "redrive": 10, "attemptedAt": NOW}
    )
    code, _, err = stack.run(["enable", "acme", "--drain-now", "--delivery-queue-url", stack.queue_url, *MONGO])

    assert code == 0, err
    assert [m["eventId"] for m in stack.queued()] == ["evt-1", "evt-3"]
    assert "1 already delivered (by a probe or replay): removed unsent" in err
    assert stack.held.count("acme") == 0


def test_a_queue_that_takes_nothing_leaves_them_held_and_exits_1(stack):
    missing = stack.queue_url.rsplit("/", 1)[0] + "/no-such-queue"
    code, _, err = stack.run(["enable", "acme", "--drain-now", "--delivery-queue-url", missing, *MONGO])

    assert code == 1
    assert "state" not in stored(stack)  # resumed all the same: the sweep drains within a minute
    assert stack.held.count("acme") == 3
    assert "3 still held for 'acme': the health sweep" in err and "took none: check the URL" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--drain-now", *MONGO], "--drain-now needs --delivery-queue-url URL"),
        (["--delivery-queue-url", "https://sqs.example/q", *MONGO], "--delivery-queue-url: only with --drain-now"),
        (
            ["--drain-now", "--delivery-queue-url", "https://sqs.example/q", "--partners-file", "p.json"],
            "--drain-now: the partners file keeps no held deliveries",
        ),
    ],
)
def test_drain_options_are_checked_before_anything_changes(stack, argv, message):
    before = stored(stack)
    code, out, err = stack.run(["enable", "acme", *argv])
    assert (code, out) == (2, "")
    assert message in err
    assert stored(stack) == before and stack.held.count("acme") == 3


# -- `distiller explain` on a paused partner -------------------------------------------------------


def explain_text(stack: Stack, monkeypatch: pytest.MonkeyPatch, *argv: str) -> str:
    monkeypatch.setattr(ops_explain, "_open_database", lambda uri, database: stack.db)
    parser = argparse.ArgumentParser(prog="distiller")
    ops.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["explain", "--mongo-uri", "mongodb://db.test", "--partner", "acme", *argv])
    stdout, stderr = io.StringIO(), io.StringIO()
    assert args.run(args, io.StringIO(), stdout, stderr) == 0, stderr.getvalue()
    return stdout.getvalue()


def test_explain_says_the_partner_is_paused_and_shows_held_entries_as_held(stack, monkeypatch):
    deal = str(oid(1))
    stack.db["deals"].insert_one({"_id": oid(1), "appSource": "acme"})
    logged = [
        ("evt-9", "failed", PAUSED_AT - dt.timedelta(minutes=1), {"status_code": 503, "error": "HTTP 503"}),
        ("evt-10", "held", PAUSED_AT + dt.timedelta(minutes=5), {"error": HELD_REASON}),
    ]
    for event_id, status, at, extra in logged:
        stack.db[DELIVERIES_COLLECTION].insert_one(
            DeliveryAttempt(
                partner_id="acme",
                event="deal.created",
                event_id=event_id,
                attempt=4,
                status=status,  # type: ignore[arg-type]
                url=URL,
                attempted_at=at,
                payload={"id": deal, "entityType": "deals"},
                dead_lettered=status == "failed",
                **extra,
            ).to_document()
        )

    out = explain_text(stack, monkeypatch, "--deal", deal)

    lines = out.splitlines()
    assert lines[1] == (
        f"PAUSED: paused since 2026-04-21T09:30:00.000Z: {REASON}; not probed yet; deliveries are held, not sent "
        "(3 held; `distiller partners enable acme` resumes at once)"
    )
    assert "deal.created                     held while the partner is paused (subscribed by '*')" in out
    held_line = next(line for line in lines if "evt-10" in line)
    assert held_line.split()[:4] == ["2026-04-21T09:35:00.000Z", "held", "deal.created", "evt-10"]
    assert held_line.endswith(f"evt-10  not sent: {HELD_REASON}")
    assert "error:" not in held_line and "status" not in held_line and "attempt" not in held_line
    assert "failed (dead-lettered) deal.created" in next(line for line in lines if "evt-9" in line)

    partner = json.loads(explain_text(stack, monkeypatch, "--event-id", "evt-10", "--json"))["partner"]
    assert (partner["paused"], partner["heldDeliveries"]) == (True, 3)
    assert partner["pause"].startswith(f"paused since 2026-04-21T09:30:00.000Z: {REASON}")

    stack.run(["enable", "acme", *MONGO])
    out = explain_text(stack, monkeypatch, "--deal", deal)
    assert "PAUSED" not in out and "held: 3 deliveries, not paused: the health sweep drains them" in out
    assert "delivered (subscribed by '*')" in out
