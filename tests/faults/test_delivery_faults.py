"""The delivery fault matrix: every fault ends in exactly one of delivered once, retried on
schedule, or dead-lettered with its reason and a delivery-log entry.

The Dispatcher function runs in-process against moto SQS queues configured as template.yaml
configures them (RedrivePolicy maxReceiveCount 5), a mongomock delivery log and loopback
partner endpoints that misbehave on cue. `EventSource` plays Lambda's SQS event source
mapping: it receives batches, invokes the handler, deletes what succeeded and lets the rest
come back. Time is moved, never slept through: queue delays elapse and the log's clock jumps
by a visibility timeout between receives; only the partner endpoints' own delays are real,
shortened by configuration (a 1 s attempt budget).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.adapters.payload_store import S3PayloadStore
from distiller.adapters.queues import OutgoingMessage
from distiller.core.clock import utc_now
from distiller.core.lookups import LookupFailure
from distiller.core.partners import Partner, PartnerRecordError, partner_from_record
from distiller.deliver.dispatch import FINISH_MARGIN_SECONDS, RetrySchedule
from distiller.deliver.message import DeliveryMessage
from tests.conftest import FakeLambdaContext, load_function
from tests.delivery_world import DISPATCHER_VISIBILITY_TIMEOUT, World, message
from tests.integration.loopback import LoopbackServer, Reply

pytestmark = pytest.mark.faults

MAX_RECEIVE_COUNT = 5
"""template.yaml: RedrivePolicy.maxReceiveCount of the delivery and retry queues."""
BUDGET = 1.0
"""The per-attempt budget for these tests (10 s deployed), so a timeout costs a second."""
SCHEDULE = (60, 300, 900)
FOREVER = threading.Event()  # never set: a partner that accepts and never answers


class Clock:
    """The delivery log's clock, moved by the event source as SQS time passes."""

    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Context(FakeLambdaContext):
    def __init__(self, remaining_seconds: float = 90.0) -> None:
        super().__init__()
        self.remaining_seconds = remaining_seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_seconds * 1000)


@dataclass
class EventSource:
    """Lambda's SQS event source mapping over the moto queues, played by hand."""

    world: World
    app: Any
    clock: Clock
    context: Context = field(default_factory=Context)
    receives: int = 0
    delays: list[int] = field(default_factory=list)
    """DelaySeconds of every message put on the retry queue, round by round."""

    def invoke(self, url: str, batch: int = 20) -> dict[str, Any] | None:
        received = self.world.receive(url, visibility_timeout=DISPATCHER_VISIBILITY_TIMEOUT)[:batch]
        if not received:
            return None
        self.receives += 1
        try:
            response = self.app.handler(self.world.sqs_event(url, received), self.context)
            failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
        except Exception:  # the invocation failed: every message comes back
            response, failed = None, {m["MessageId"] for m in received}
        for m in received:
            if m["MessageId"] in failed:  # the visibility timeout elapses: visible again
                self.world.sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                self.world.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if failed:
            self.clock.advance(DISPATCHER_VISIBILITY_TIMEOUT)
        return response

    def run(self, max_rounds: int = 60) -> None:
        """Invoke until the delivery and retry queues are empty (delays elapse between rounds)."""
        for _ in range(max_rounds):
            while self.invoke(self.world.delivery_url) is not None or self.invoke(self.world.retry_url) is not None:
                pass
            if not self.world.queued(self.world.retry_url) and not self.world.queued(self.world.delivery_url):
                return
            self.delays.extend(q.delay_seconds for q in self.world.queued(self.world.retry_url))
            self.world.fast_forward(self.world.retry_url)
            self.clock.advance(max(SCHEDULE))
        raise AssertionError("the queues did not drain")


@dataclass
class Tally:
    posts: Counter[str]
    delivered: Counter[str]
    dead: dict[str, dict[str, Any]]
    dead_entries: dict[str, list[dict[str, Any]]]
    made: Counter[str]
    """Attempts the log shows as made (delivered or failed): each is exactly one POST."""

    def delivered_once_one_post_per_attempt(self, event_id: str) -> bool:
        """Delivered once, and every POST is one logged attempt (never one attempt POSTed twice).

        On a starved CPU an answer can miss the 1 s budget: that attempt is logged as failed and
        retried, a second POST the log accounts for (at least once, as webhooks are)."""
        return self.posts[event_id] == self.made[event_id] and self.outcome(event_id) == "delivered"

    def outcome(self, event_id: str) -> str:
        terminal = ["delivered"] * self.delivered[event_id] + ["dead-lettered"] * (event_id in self.dead)
        assert len(terminal) == 1, f"{event_id}: expected exactly one outcome, got {terminal}"
        return terminal[0]


def tally(world: World, servers: list[LoopbackServer]) -> Tally:
    posts = Counter(r.header("X-PA-Event-Id") or "" for s in servers for r in s.received)
    entries = world.entries()
    delivered = Counter(e["eventId"] for e in entries if e["status"] == "delivered")
    dead = {q.body["eventId"]: q.body for q in world.queued(world.dlq_url)}
    assert len(dead) == len(world.queued(world.dlq_url)), "a delivery was dead-lettered twice"
    dead_entries = {i: [e for e in entries if e["eventId"] == i and e.get("deadLettered")] for i in dead}
    for event_id, body in dead.items():  # every dead letter says why, and the log shows it
        assert body.get("lastError"), f"dead letter without a reason: {body}"
        assert body["attempt"] >= 1
        assert len(dead_entries[event_id]) == 1, f"dead letter without exactly one log entry: {event_id}"
        assert dead_entries[event_id][0]["error"] == body["lastError"]
    made = Counter(e["eventId"] for e in entries if e["status"] in ("delivered", "failed"))
    return Tally(posts, delivered, dead, dead_entries, made)


@pytest.fixture
def harness(world: World, monkeypatch: pytest.MonkeyPatch):
    redrive = json.dumps(
        {
            "deadLetterTargetArn": world.sqs.get_queue_attributes(QueueUrl=world.dlq_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"],
            "maxReceiveCount": str(MAX_RECEIVE_COUNT),
        }
    )
    for url in (world.delivery_url, world.retry_url):
        world.sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": redrive})
    clock = Clock()
    world.log = MongoDeliveryLog(world.collection, clock=clock)
    world.log.ensure_indexes(retention_days=30)
    app = load_function("dispatcher")

    def use(**options: Any) -> EventSource:
        options.setdefault("sender", world.sender(timeout_seconds=BUDGET, **options.pop("sender_options", {})))
        options.setdefault("schedule", RetrySchedule(SCHEDULE))
        options.setdefault("attempt_budget_seconds", BUDGET)
        dispatcher = world.dispatcher(**options)
        runtime = world.runtime(dispatcher)
        runtime.max_receive_count = MAX_RECEIVE_COUNT
        monkeypatch.setattr(app, "_runtime", runtime)
        return EventSource(world, app, clock)

    return use


def queue(world: World, *messages: DeliveryMessage) -> None:
    assert world.queue(world.delivery_url).send([OutgoingMessage(m.to_body()) for m in messages]) == []


def fake_dns(table: dict[str, str]) -> Any:
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return [table[host]]

    return resolve


# -- one delivery per fault ----------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    replies: tuple[Reply, ...] = ()
    default: Reply = field(default_factory=Reply)
    url: str | None = None
    """The partner URL when not the loopback server (`{port}` is the loopback server's)."""
    dns: tuple[tuple[str, str], ...] = ()
    posts: int = 1
    """POSTs that reach the partner."""
    dead: str | None = None
    """None: delivered once. Else a phrase of the dead letter's reason."""
    attempts: int | None = None
    """Attempts made (defaults to `posts`)."""


RETRIES = len(SCHEDULE)
ALL = 1 + RETRIES

FAULTS = [
    pytest.param(Fault(), id="2xx"),
    pytest.param(Fault(default=Reply(204, b"")), id="204-empty-body"),
    pytest.param(Fault(replies=(Reply(429),), posts=2), id="429-then-200"),
    pytest.param(Fault(replies=(Reply(503), Reply(502), Reply(500)), posts=ALL), id="5xx-until-the-last-retry"),
    pytest.param(Fault(default=Reply(500), posts=ALL, dead="HTTP 500"), id="5xx-always"),
    pytest.param(Fault(default=Reply(410), posts=ALL, dead="HTTP 410"), id="4xx-always"),
    pytest.param(
        Fault(default=Reply(302, headers={"Location": "http://127.0.0.1:1/"}), posts=ALL, dead="redirect not followed"),
        id="3xx-not-followed",
    ),
    pytest.param(Fault(replies=(Reply(delay=BUDGET / 3),)), id="slow-inside-the-budget"),
    pytest.param(Fault(default=Reply(delay=BUDGET + 0.5), posts=ALL, dead="timeout"), id="slower-than-the-budget"),
    pytest.param(Fault(default=Reply(hang_until=FOREVER), posts=ALL, dead="timeout"), id="hangs-after-accept"),
    pytest.param(
        Fault(default=Reply(trickle_every=0.3, body=b"x" * 64), posts=ALL, dead="timeout"),
        id="trickles-past-the-budget",
    ),
    pytest.param(Fault(replies=(Reply(reset_mid_response=True),), posts=2), id="reset-mid-response-then-200"),
    pytest.param(
        Fault(default=Reply(reset_mid_response=True), posts=ALL, dead="connection error"),
        id="reset-mid-response-always",
    ),
    pytest.param(
        Fault(url="http://partner.invalid:{port}/hooks", posts=0, attempts=ALL, dead="DNS resolution failed"),
        id="dns-failure-retried-on-schedule",
    ),
    pytest.param(
        Fault(url="http://169.254.169.254/latest/meta-data/", posts=0, attempts=1, dead="metadata"),
        id="ssrf-refused-at-once",
    ),
    pytest.param(Fault(url="ftp://127.0.0.1/hooks", posts=0, attempts=1, dead="scheme"), id="scheme-refused-at-once"),
    pytest.param(
        Fault(url="http://bücher.example:{port}/hooks", dns=(("xn--bcher-kva.example", "127.0.0.1"),)),
        id="international-domain-name-encoded",
    ),
    pytest.param(
        Fault(url="http://b\u00fc.." + "x" * 70 + ".example/hooks", posts=0, attempts=1, dead="refused"),
        id="unencodable-domain-name-refused-at-once",
    ),
]


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_ends_delivered_once_retried_on_schedule_or_dead_lettered_with_reason(harness, world, serve, fault):
    server = serve(*fault.replies, default=fault.default)
    url = (fault.url or server.url()).replace("{port}", str(server.port))
    world.add_partner("acme-motors", url)
    source = harness(sender_options={"resolver": fake_dns(dict(fault.dns))} if fault.url else {})
    delivery = message("acme-motors")
    queue(world, delivery)

    source.run()

    result = tally(world, [server])
    assert result.posts[delivery.event_id] == fault.posts
    attempts = fault.attempts if fault.attempts is not None else fault.posts
    logged = [e for e in world.entries(event_id=delivery.event_id) if e["status"] != "skipped"]
    assert [e["attempt"] for e in logged] == list(range(1, attempts + 1))
    # Retries wait the schedule's delays, in order, and nothing else does.
    assert source.delays == list(SCHEDULE[: attempts - 1])
    if fault.dead is None:
        assert result.outcome(delivery.event_id) == "delivered"
        assert result.dead == {}
    else:
        assert result.outcome(delivery.event_id) == "dead-lettered"
        assert fault.dead in result.dead[delivery.event_id]["lastError"]
        assert result.dead[delivery.event_id]["attempt"] == attempts
    if fault.dns:  # the Host header and SNI carry the A-label form
        assert server.received[0].header("Host") == f"xn--bcher-kva.example:{server.port}"


# -- batches: slow partners, the invocation's clock, concurrency, outages --------------------------


def test_a_slow_partner_gets_each_of_a_burst_once_although_the_burst_outlasts_one_budget(harness, world, serve):
    """Waiting for one of the partner's connection slots never counts against an attempt's budget."""
    server = serve(default=Reply(delay=BUDGET * 0.6))
    world.add_partner("acme-motors", server.url())
    source = harness(sender_options={"per_host_connections": 2})
    burst = [message("acme-motors") for _ in range(10)]  # five waves of 0.6 s: three budgets
    queue(world, *burst)

    source.run()

    result = tally(world, [server])
    assert {m.event_id: result.posts[m.event_id] for m in burst} == {m.event_id: 1 for m in burst}
    assert all(result.outcome(m.event_id) == "delivered" for m in burst)
    assert source.delays == []  # nothing was retried


def test_deliveries_that_cannot_start_before_the_invocation_ends_go_back_unchanged(harness, world, serve):
    server = serve(default=Reply(delay=0.4))
    world.add_partner("acme-motors", server.url())
    source = harness(sender_options={"per_host_connections": 1})
    # Time for one whole attempt plus the finish margin, and 0.5 s to start others.
    source.context = Context(remaining_seconds=BUDGET + FINISH_MARGIN_SECONDS + 0.5)
    burst = [message("acme-motors") for _ in range(5)]
    queue(world, *burst)

    first = source.invoke(world.delivery_url)

    assert first == {"batchItemFailures": []}
    queued = [(DeliveryMessage.from_body(q.raw), q.delay_seconds) for q in world.queued(world.retry_url)]
    # On a starved machine an attempt that was made can outlast its budget and be retried (attempt 1,
    # with its delay): legitimately. The deferred ones are those no attempt was counted for.
    deferred = [(d, delay) for d, delay in queued if d.attempt == 0]
    assert 1 <= len(deferred) <= 4 and len(server.received) == 5 - len(deferred)
    assert all(d.last_error is None and delay == 0 for d, delay in deferred)  # back unchanged, at once
    assert all(d.attempt == 1 and d.last_error.startswith("timeout") for d, _ in queued if d.attempt != 0)
    source.run()
    result = tally(world, [server])
    assert all(result.delivered_once_one_post_per_attempt(m.event_id) for m in burst)


def test_the_same_batch_handled_twice_at_once_posts_each_attempt_once(harness, world, serve):
    server = serve(default=Reply(delay=0.2))
    world.add_partner("acme-motors", server.url())
    world.add_partner("lendco", server.url("/lendco"))
    source = harness()
    batch = [message("acme-motors") for _ in range(4)] + [message("lendco") for _ in range(4)]
    queue(world, *batch)
    received = world.receive(world.delivery_url)
    event = world.sqs_event(world.delivery_url, received)
    responses: list[Any] = []

    threads = [threading.Thread(target=lambda: responses.append(source.app.handler(event, source.context)))]
    threads.append(threading.Thread(target=lambda: responses.append(source.app.handler(event, source.context))))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    world.delete(world.delivery_url, received)
    source.run()  # the copies the other invocation was holding come back, and are skipped

    assert responses == [{"batchItemFailures": []}] * 2
    result = tally(world, [server])
    # Never one attempt POSTed by both invocations.
    assert all(result.delivered_once_one_post_per_attempt(m.event_id) for m in batch)


def test_a_database_outage_longer_than_max_receive_count_dead_letters_with_reason_and_log_entry(harness, world, serve):
    server = serve()
    world.add_partner("acme-motors", server.url())
    source = harness()
    outage = {"on": True}
    partners = source.app._runtime.dispatcher._partners

    def flaky() -> list[Partner]:
        if outage["on"]:
            raise LookupFailure("partners: connection refused")
        return partners()

    source.app._runtime.dispatcher._partners = flaky
    batch = [message("acme-motors") for _ in range(3)]
    queue(world, *batch)

    source.run()

    assert source.receives == MAX_RECEIVE_COUNT  # then parked by the handler, not moved by SQS
    result = tally(world, [server])
    for m in batch:
        assert result.outcome(m.event_id) == "dead-lettered"
        assert result.dead[m.event_id]["lastError"] == "last receive: partner records unavailable: " + (
            "partners: connection refused"
        )
    assert server.received == []


def test_a_delivery_log_outage_still_dead_letters_with_the_reason(harness, world, serve):
    """The one dead letter without a log entry: the log itself is what is down."""
    server = serve()
    world.add_partner("acme-motors", server.url())

    class Down(MongoDeliveryLog):
        def already_processed(self, *args: Any, **kwargs: Any) -> str | None:
            raise LookupFailure("webhook_deliveries: no servers")

        def record(self, *args: Any, **kwargs: Any) -> None:
            raise LookupFailure("webhook_deliveries: no servers")

    source = harness(log=Down(world.collection))
    delivery = message("acme-motors")
    queue(world, delivery)

    source.run()

    [dead] = world.queued(world.dlq_url)
    assert dead.body["eventId"] == delivery.event_id
    assert "delivery log unavailable" in dead.body["lastError"]
    assert world.entries() == [] and server.received == []


def test_a_partner_record_unusable_in_headers_fails_only_its_own_delivery(harness, world, serve):
    server = serve()
    world.add_partner("acme-motors", server.url())
    # A record cached before validation existed; loading it today is refused outright.
    bad_id = "evil\r\nX-Injected: 1"
    with pytest.raises(PartnerRecordError, match="header value"):
        partner_from_record({"partnerId": bad_id, "webhook": {"url": server.url()}})
    world.partners.append(Partner(partner_id=bad_id, webhook_url=server.url("/evil")))
    source = harness()
    good = [message("acme-motors") for _ in range(3)]
    bad = message(bad_id)
    queue(world, good[0], bad, *good[1:])

    source.run()

    result = tally(world, [server])
    assert all(result.outcome(m.event_id) == "delivered" and result.posts[m.event_id] == 1 for m in good)
    assert result.outcome(bad.event_id) == "dead-lettered"
    assert "header X-PA-Partner" in result.dead[bad.event_id]["lastError"]
    assert result.dead[bad.event_id]["attempt"] == 1 and server.received_at("/evil") == []


def test_a_claim_checked_payload_is_delivered_byte_for_byte_and_a_lost_one_is_dead_lettered(harness, world, serve):
    s3 = boto3.client("s3", region_name="us-east-2")
    s3.create_bucket(Bucket="claims", CreateBucketConfiguration={"LocationConstraint": "us-east-2"})
    store = S3PayloadStore(s3, "claims")
    server = serve()
    world.add_partner("acme-motors", server.url())
    source = harness(payloads=store)
    big = message("acme-motors")
    big = dataclasses.replace(big, payload={**big.payload, "documents": ["https://x/" + "a" * 300_000]})
    lost = message("acme-motors")
    lost = dataclasses.replace(lost, payload={**lost.payload, "documents": ["https://y/" + "b" * 300_000]})
    checked_big, checked_lost = big.claim_checked(store), lost.claim_checked(store)
    assert checked_big.payload_ref is not None and len(checked_big.to_body()) < 2048
    s3.delete_object(Bucket="claims", Key=checked_lost.payload_ref.key)
    queue(world, checked_big, checked_lost)

    source.run()

    result = tally(world, [server])
    assert result.outcome(big.event_id) == "delivered"
    [received] = server.received
    assert received.body == big.raw_body()
    assert result.outcome(lost.event_id) == "dead-lettered" and result.posts[lost.event_id] == 0
    assert "NoSuchKey" in result.dead[lost.event_id]["lastError"]
    assert result.dead[lost.event_id]["payloadRef"]["key"] == checked_lost.payload_ref.key
