"""The Dispatcher function invoked in-process with events/dispatcher_sqs_batch.json, as `sam local invoke` would."""

import json
from pathlib import Path

import mongomock
import pytest

from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.core.partners import partner_from_record
from distiller.deliver.dispatch import Dispatcher
from distiller.deliver.log import DELIVERIES_COLLECTION
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.sender import SendResult
from distiller.deliver.signing import verify
from distiller.runtime import DispatcherRuntime
from tests.conftest import load_function

EVENTS = Path(__file__).resolve().parents[2] / "events"
SECRET = "sample-secret"


class RecordingSender:
    def __init__(self) -> None:
        self.posts = []

    def post(self, url, headers, body, **options):
        verify(SECRET, headers, body)
        self.posts.append((url, headers, body))
        return SendResult(True, 200, "ok")


class Secrets:
    def webhook_secret(self, partner_id):
        return SECRET


class Queue:
    def __init__(self) -> None:
        self.sent = []

    def send(self, messages):
        self.sent.extend(messages)
        return []

    def park(self, record, reason, origin):
        self.sent.append((record, reason, origin))
        return True


@pytest.fixture
def dispatcher_app(monkeypatch):
    module = load_function("dispatcher")
    partners = [partner_from_record(p) for p in json.loads((EVENTS / "partners.json").read_text())]
    database = mongomock.MongoClient(tz_aware=True)["privateauto"]
    sender, retry, dead = RecordingSender(), Queue(), Queue()
    dispatcher = Dispatcher(
        partners=lambda: partners,
        secrets=Secrets(),
        sender=sender,
        log=MongoDeliveryLog(database[DELIVERIES_COLLECTION]),
        retry_queue=retry,
        dead_letter_queue=dead,
    )
    monkeypatch.setattr(module, "_runtime", DispatcherRuntime(dispatcher=dispatcher, dead_letters=dead))
    return module, sender, database, retry, dead


def test_sample_batch_is_delivered_signed_and_logged(dispatcher_app, lambda_context):
    module, sender, database, retry, dead = dispatcher_app
    event = json.loads((EVENTS / "dispatcher_sqs_batch.json").read_text())
    messages = [DeliveryMessage.from_body(r["body"]) for r in event["Records"]]

    response = module.handler(event, lambda_context)

    assert response == {"batchItemFailures": []}
    assert sorted(h["X-PA-Event-Id"] for _, h, _ in sender.posts) == sorted(m.event_id for m in messages)
    sent = sorted(json.dumps(json.loads(body), sort_keys=True) for _, _, body in sender.posts)
    assert sent == sorted(json.dumps(m.payload, sort_keys=True) for m in messages)
    logged = list(database[DELIVERIES_COLLECTION].find({}, {"_id": 0, "status": 1, "eventId": 1}))
    assert sorted(d["eventId"] for d in logged) == sorted(m.event_id for m in messages)
    assert {d["status"] for d in logged} == {"delivered"}
    assert retry.sent == [] and dead.sent == []

    # the same batch again (an SQS redelivery) is not re-POSTed
    module.handler(event, lambda_context)
    assert len(sender.posts) == len(messages)
