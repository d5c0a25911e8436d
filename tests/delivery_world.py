"""The dispatcher's world for tests: moto queues and secrets, a mongomock delivery log, partners,
loopback partner endpoints, and delivery messages shaped as the distiller queues them."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import mongomock
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws
from moto.sqs.models import sqs_backends

from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.adapters.queues import SqsQueue
from distiller.adapters.secrets import PartnerSecrets
from distiller.core.partners import Partner, partner_from_record
from distiller.deliver.dispatch import Dispatcher
from distiller.deliver.log import DELIVERIES_COLLECTION
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.sender import WebhookSender
from distiller.runtime import DispatcherRuntime
from tests.integration.loopback import LoopbackServer, Reply

REGION = "us-east-2"
DISPATCHER_VISIBILITY_TIMEOUT = 540
"""template.yaml: the delivery and retry queues' visibility timeout (6x the function's)."""
EMITTED_AT = "2025-03-14T15:09:26.535Z"

# -- messages ----------------------------------------------------------------------------------

_serial = itertools.count(1)


def message(partner_id: str, event: str = "deal.completed", *, attempt: int = 0) -> DeliveryMessage:
    """A delivery as the distiller queues it: payload carries eventId and eventKey at the top level."""
    n = next(_serial)
    key = f"8263A1{n:06d}|{partner_id}|{event}|0"
    event_id = hashlib.sha256(key.encode()).hexdigest()
    payload = {
        "event": event,
        "eventId": event_id,
        "eventKey": key,
        "entityType": "deal",
        "timestamp": EMITTED_AT,
        "data": {"dealId": f"deal-{n}", "amount": 18500, "vehicle": "Škoda Octavia — café edition"},
    }
    return DeliveryMessage(
        partner_id=partner_id,
        event=event,
        event_id=event_id,
        event_key=key,
        payload=payload,
        emitted_at=EMITTED_AT,
        attempt=attempt,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- the world: moto queues and secrets, mongomock log, partners --------------------------------


@dataclass(frozen=True)
class Queued:
    """A message as it sits in a moto queue (delayed ones included)."""

    raw: str
    delay_seconds: int

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class World:
    def __init__(self, sqs: Any, secretsmanager: Any) -> None:
        self.sqs = sqs
        self.secretsmanager = secretsmanager
        self.delivery_url = sqs.create_queue(QueueName="trigger-distiller-deliveries")["QueueUrl"]
        self.retry_url = sqs.create_queue(QueueName="trigger-distiller-retries")["QueueUrl"]
        self.dlq_url = sqs.create_queue(QueueName="trigger-distiller-delivery-dlq")["QueueUrl"]
        self.collection = mongomock.MongoClient(tz_aware=True)["privateauto"][DELIVERIES_COLLECTION]
        self.log = MongoDeliveryLog(self.collection)
        self.log.ensure_indexes(retention_days=30)
        self.secrets = PartnerSecrets(max_age_seconds=0)
        self.partners: list[Partner] = []
        self._senders: list[WebhookSender] = []

    # partners and their secrets

    def add_partner(self, partner_id: str, url: str | None, *, secret: str | None = None, active: bool = True) -> str:
        record = {"partnerId": partner_id, "active": active, "webhook": {"url": url, "events": ["*"]}}
        self.partners.append(partner_from_record(record))
        secret = secret or f"whsec_{partner_id}_A"
        self.secretsmanager.create_secret(Name=self.secrets.name_for(partner_id), SecretString=secret)
        return secret

    def rotate(self, partner_id: str, secret: str) -> None:
        self.secretsmanager.put_secret_value(SecretId=self.secrets.name_for(partner_id), SecretString=secret)

    # the dispatcher, built like DispatcherRuntime.build

    def sender(self, **options: Any) -> WebhookSender:
        options.setdefault("allow_private", True)
        options.setdefault("timeout_seconds", 5.0)
        sender = WebhookSender(**options)
        self._senders.append(sender)
        return sender

    def queue(self, url: str) -> SqsQueue:
        return SqsQueue(self.sqs, url)

    def dispatcher(self, *, sender: Any = None, log: Any = None, retry_queue: Any = None, **options: Any) -> Dispatcher:
        return Dispatcher(
            partners=lambda: list(self.partners),
            secrets=self.secrets,
            sender=sender or self.sender(),
            log=log or self.log,
            retry_queue=retry_queue or self.queue(self.retry_url),
            dead_letter_queue=self.queue(self.dlq_url),
            **options,
        )

    def runtime(self, dispatcher: Dispatcher) -> DispatcherRuntime:
        return DispatcherRuntime(dispatcher=dispatcher, dead_letters=self.queue(self.dlq_url))

    # what the tests read back

    def entries(self, *, partner_id: str | None = None, event_id: str | None = None) -> list[dict[str, Any]]:
        """Delivery log documents in insertion order, without `_id`."""
        query: dict[str, Any] = {}
        if partner_id:
            query["partnerId"] = partner_id
        if event_id:
            query["eventId"] = event_id
        return list(self.collection.find(query, {"_id": 0}))

    def _moto_queue(self, url: str) -> Any:
        account, name = url.rstrip("/").split("/")[-2:]
        return sqs_backends[account][REGION].get_queue(name)

    def queued(self, url: str) -> list[Queued]:
        """Every message on the queue, delayed or in flight, with the DelaySeconds it was sent with."""
        out = []
        for m in list(self._moto_queue(url)._messages):
            delay = round((m.delayed_until - m.sent_timestamp) / 1000) if m.delayed_until else 0
            out.append(Queued(m.body, delay))
        return out

    def fast_forward(self, url: str) -> None:
        """Let the queue's delays elapse now (the clock moves; nothing else changes)."""
        for m in self._moto_queue(url)._messages:
            m.delayed_until = 0

    def receive(self, url: str, *, visibility_timeout: int = 30) -> list[dict[str, Any]]:
        """Receive everything visible through the SQS API (no deletion), each message once."""
        received: dict[str, dict[str, Any]] = {}
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=visibility_timeout,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            fresh = [m for m in batch if m["MessageId"] not in received]
            if not fresh:  # empty, or (visibility 0) the same messages again
                return list(received.values())
            received.update((m["MessageId"], m) for m in fresh)

    def delete(self, url: str, messages: list[dict[str, Any]]) -> None:
        for m in messages:
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def take(self, url: str) -> list[DeliveryMessage]:
        """Let the delays elapse, receive every message, delete it, and parse it back."""
        self.fast_forward(url)
        received = self.receive(url)
        self.delete(url, received)
        return [DeliveryMessage.from_body(m["Body"]) for m in received]

    def sqs_event(self, url: str, received: list[dict[str, Any]]) -> dict[str, Any]:
        """The event Lambda's SQS event source mapping hands the function for these messages."""
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": REGION,
                }
                for m in received
            ]
        }

    def close(self) -> None:
        for sender in self._senders:
            sender.close()


@pytest.fixture
def world(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        parameters.clear_caches()  # the powertools provider (and its boto3 client) is per test
        w = World(boto3.client("sqs", region_name=REGION), boto3.client("secretsmanager", region_name=REGION))
        try:
            yield w
        finally:
            w.close()
            parameters.clear_caches()


@pytest.fixture
def serve():
    """Start loopback servers for the test; all are stopped (and hangs released) afterwards."""
    started: list[LoopbackServer] = []

    def start(*replies: Reply, default: Reply | None = None) -> LoopbackServer:
        server = LoopbackServer(replies, default).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
