"""The Dispatcher against real loopback HTTP servers, moto SQS + Secrets Manager and a mongomock log.

Built as the Lambda builds it (runtime.DispatcherRuntime.build), only with local pieces:
partners are `Partner` records, secrets are read from (moto) Secrets Manager through
`PartnerSecrets` with no cache so a rotation shows at once, the sender is the real
`WebhookSender` (allowed to call 127.0.0.1), the retry and dead-letter queues are moto SQS
queues, and the delivery log is `MongoDeliveryLog` over mongomock.

Every case asserts three things: what the partner's server received, the delivery log
documents, and what sits on the retry and dead-letter queues. Signatures are checked with
hmac/hashlib exactly as the spec's "Verifying Signatures" snippet does, never with
distiller.deliver.signing. Nothing asserts on elapsed time: waits are generous loops on a condition.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import socket
import threading
from collections import Counter
from typing import Any

import pytest
import urllib3.util.connection
from aws_lambda_powertools.utilities import parameters

from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.adapters.queues import OutgoingMessage
from distiller.adapters.secrets import PartnerSecrets
from distiller.core.clock import iso_utc, utc_now
from distiller.core.lookups import LookupFailure
from distiller.core.partners import partner_from_record
from distiller.deliver.dispatch import RetrySchedule
from distiller.deliver.log import DELIVERIES_COLLECTION, DeliveryAttempt
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.sender import SendResult, WebhookSender
from tests.conftest import load_function
from tests.delivery_world import DISPATCHER_VISIBILITY_TIMEOUT, EMITTED_AT, message, wait_until
from tests.integration.loopback import Received, Reply, free_port

# The spec's "Webhooks" table, name -> value (None: checked separately).
SPEC_HEADERS: dict[str, str | None] = {
    "Content-Type": "application/json",
    "X-PA-Event": None,
    "X-PA-Timestamp": None,
    "X-PA-Signature": None,
    "X-PA-Partner": None,
    "X-PA-Event-Id": None,
    "User-Agent": "PrivateAuto-Webhooks/1.0",
}
# What HTTP itself adds to any POST; everything else a partner receives must be in the spec table.
TRANSPORT_HEADERS = {"host", "content-length", "accept-encoding", "connection"}


# -- the spec's verification, independently of distiller.deliver.signing ------------------------------


def spec_signature(secret: str, timestamp: str, raw_body: bytes) -> str:
    """'sha256=' + HMAC-SHA256(secret, `${timestamp}.${body}`) hex, as in the spec's Node snippet."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + raw_body, hashlib.sha256).hexdigest()


def signed_with(request: Received, secret: str) -> bool:
    received = request.header("X-PA-Signature") or ""
    expected = spec_signature(secret, request.header("X-PA-Timestamp") or "", request.body)
    return hmac.compare_digest(received.encode(), expected.encode())


def without_time(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry without what depends on the clock: when it was attempted and how long the POST took."""
    assert entry["attemptedAt"].tzinfo is not None
    assert isinstance(entry.get("latencyMs", 0), int) and entry.get("latencyMs", 0) >= 0
    return {k: v for k, v in entry.items() if k not in ("attemptedAt", "latencyMs")}


# -- one delivery ------------------------------------------------------------------------------


def test_success_posts_once_with_exactly_the_spec_headers_and_a_verifiable_signature(world, serve):
    server = serve(Reply(200, b'{"received":true}'))
    secret = world.add_partner("acme-motors", server.url())
    msg = message("acme-motors")

    outcomes = world.dispatcher().dispatch_all([msg])

    assert outcomes == ["delivered"]
    [request] = server.received
    assert (request.method, request.path) == ("POST", "/hooks")
    names = [name.lower() for name, _ in request.header_items]
    assert len(names) == len(set(names)), f"a header was sent twice: {names}"
    assert set(names) - TRANSPORT_HEADERS == {name.lower() for name in SPEC_HEADERS}
    assert request.header("Content-Type") == "application/json"
    assert request.header("User-Agent") == "PrivateAuto-Webhooks/1.0"
    assert request.header("X-PA-Event") == "deal.completed"
    assert request.header("X-PA-Partner") == "acme-motors"
    assert request.header("X-PA-Timestamp") == EMITTED_AT
    body = json.loads(request.body)
    assert body == msg.payload
    assert request.header("X-PA-Event-Id") == body["eventId"] == msg.event_id
    assert body["eventKey"] == msg.event_key
    assert int(request.header("Content-Length")) == len(request.body)
    signature = request.header("X-PA-Signature")
    assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64
    assert signed_with(request, secret)
    assert not signed_with(request, secret + "x")

    [entry] = world.entries()
    assert without_time(entry) == {
        "partnerId": "acme-motors",
        "event": "deal.completed",
        "eventId": msg.event_id,
        "attempt": 1,
        "status": "delivered",
        "url": server.url(),
        "statusCode": 200,
        "responseBodyExcerpt": '{"received":true}',
        "error": None,
        "deadLettered": False,
        "payload": msg.payload,
    }
    assert world.queued(world.retry_url) == []
    assert world.queued(world.dlq_url) == []


def test_a_500_goes_to_the_retry_queue_with_the_first_delay_then_is_delivered_at_attempt_2(world, serve):
    server = serve(Reply(500, b'{"error":"database down"}'), Reply(200, b"thanks"))
    world.add_partner("acme-motors", server.url())
    msg = message("acme-motors")
    dispatcher = world.dispatcher()

    assert dispatcher.dispatch_all([msg]) == ["retry-scheduled"]

    [first] = world.entries()
    assert without_time(first) == {
        "partnerId": "acme-motors",
        "event": "deal.completed",
        "eventId": msg.event_id,
        "attempt": 1,
        "status": "failed",
        "url": server.url(),
        "statusCode": 500,
        "responseBodyExcerpt": '{"error":"database down"}',
        "error": "HTTP 500",
        "deadLettered": False,
        "payload": msg.payload,
    }
    [queued] = world.queued(world.retry_url)
    assert queued.delay_seconds == dispatcher.schedule.delays[0] == 60
    assert queued.body == {
        "partnerId": "acme-motors",
        "event": "deal.completed",
        "eventId": msg.event_id,
        "eventKey": msg.event_key,
        "payload": msg.payload,
        "emittedAt": EMITTED_AT,
        "attempt": 1,
        "firstAttemptAt": iso_utc(first["attemptedAt"]),
        "lastError": "HTTP 500",
    }
    assert world.queued(world.dlq_url) == []

    [retry] = world.take(world.retry_url)
    assert retry == DeliveryMessage.from_body(queued.raw)
    assert dispatcher.dispatch_all([retry]) == ["delivered"]

    entries = world.entries()
    assert [(e["attempt"], e["status"], e["statusCode"]) for e in entries] == [
        (1, "failed", 500),
        (2, "delivered", 200),
    ]
    assert entries[1]["responseBodyExcerpt"] == "thanks"
    first_post, second_post = server.received
    assert second_post.body == first_post.body  # the same bytes, so the same eventId
    for name in ("X-PA-Event-Id", "X-PA-Timestamp", "X-PA-Signature"):
        assert second_post.header(name) == first_post.header(name)
    assert world.queued(world.retry_url) == []
    assert world.queued(world.dlq_url) == []


def test_an_endpoint_slower_than_the_timeout_fails_with_timeout_and_is_retried(world, serve):
    server = serve(default=Reply(200, delay=5.0))
    world.add_partner("acme-motors", server.url())
    dispatcher = world.dispatcher(sender=world.sender(timeout_seconds=0.5))

    assert dispatcher.dispatch_all([message("acme-motors")]) == ["retry-scheduled"]

    assert server.wait_for(1) and len(server.received) == 1  # the POST arrived; the answer did not in time
    [entry] = world.entries()
    assert entry["status"] == "failed"
    assert entry["statusCode"] is None
    assert entry["error"].startswith("timeout")
    [queued] = world.queued(world.retry_url)
    assert queued.body["attempt"] == 1
    assert queued.body["lastError"] == entry["error"]


def test_connection_refused_fails_with_connection_error_and_is_retried(world):
    url = f"http://127.0.0.1:{free_port()}/hooks"
    world.add_partner("acme-motors", url)

    assert world.dispatcher().dispatch_all([message("acme-motors")]) == ["retry-scheduled"]

    [entry] = world.entries()
    assert (entry["status"], entry["statusCode"], entry["url"]) == ("failed", None, url)
    assert entry["error"].startswith("connection error")
    [queued] = world.queued(world.retry_url)
    assert queued.body["lastError"] == entry["error"]
    assert world.queued(world.dlq_url) == []


def test_a_redirect_is_not_followed(world, serve):
    server = serve()
    elsewhere = server.url("/elsewhere")
    server.then(Reply(302, b"", headers={"Location": elsewhere}))
    world.add_partner("acme-motors", server.url())

    assert world.dispatcher().dispatch_all([message("acme-motors")]) == ["retry-scheduled"]

    assert [r.path for r in server.received] == ["/hooks"]
    assert server.received_at("/elsewhere") == []
    [entry] = world.entries()
    assert entry["status"] == "failed"
    assert entry["statusCode"] == 302
    assert entry["error"] == f"redirect not followed (HTTP 302 to {elsewhere!r})"
    [queued] = world.queued(world.retry_url)
    assert queued.body["lastError"] == entry["error"]


def test_dead_lettered_after_the_last_retry(world, serve):
    server = serve(default=Reply(500, b"still down"))
    world.add_partner("acme-motors", server.url())
    msg = message("acme-motors")
    dispatcher = world.dispatcher(schedule=RetrySchedule((1, 1, 1)))

    outcomes = [dispatcher.dispatch_all([msg])]
    for made in (1, 2, 3):
        [queued] = world.queued(world.retry_url)
        assert (queued.delay_seconds, queued.body["attempt"], queued.body["lastError"]) == (1, made, "HTTP 500")
        retries = world.take(world.retry_url)
        assert len(retries) == 1
        outcomes.append(dispatcher.dispatch_all(retries))

    assert outcomes == [["retry-scheduled"]] * 3 + [["dead-lettered"]]
    assert len(server.received) == 4
    entries = world.entries()
    assert [(e["attempt"], e["status"], e["deadLettered"]) for e in entries] == [
        (1, "failed", False),
        (2, "failed", False),
        (3, "failed", False),
        (4, "failed", True),
    ]
    assert [e for e in entries if e["deadLettered"]] == [entries[3]]
    assert world.queued(world.retry_url) == []
    [dead] = world.queued(world.dlq_url)
    assert dead.body["eventId"] == msg.event_id
    assert dead.body["attempt"] == 4
    assert dead.body["lastError"] == "HTTP 500"
    assert dead.body["firstAttemptAt"] == iso_utc(entries[0]["attemptedAt"])
    assert dead.body["payload"] == msg.payload


def test_a_response_trickled_past_the_timeout_is_a_timeout(world, serve):
    """The budget is for the whole answer, not per read: a partner dribbling bytes cannot hold a worker."""
    pad = {f"X-Pad-{i}": "y" * 16 for i in range(8)}
    server = serve(default=Reply(200, b'{"ok":true}', headers=pad, trickle_every=0.1, trickle_bytes=4))
    world.add_partner("acme-motors", server.url())
    dispatcher = world.dispatcher(sender=world.sender(timeout_seconds=1.0))

    outcomes = dispatcher.dispatch_all([message("acme-motors")])

    # The response takes ~75 writes 0.1 s apart (each well within the 1 s budget, all far beyond it).
    [entry] = world.entries()
    assert outcomes == ["retry-scheduled"], (entry["status"], entry["error"])
    assert entry["status"] == "failed"
    assert entry["error"].startswith("timeout")


def unjam(sender: WebhookSender) -> None:
    """Give every connection pool a free slot, so a worker stuck waiting for one can finish (cleanup)."""
    for pool in list(sender._pools.values()):
        for _ in range(sender.per_host_connections):
            pool.pool.put(None)


def test_responses_larger_than_the_excerpt_do_not_exhaust_the_connection_pool(world, serve):
    """A partner answering with more than the excerpt's 4 KiB (an HTML page, a verbose ack) must keep working."""
    verbose = b'{"ack":"' + b"x" * 6000 + b'"}'
    server = serve(default=Reply(200, verbose))
    world.add_partner("acme-motors", server.url())
    sender = world.sender(per_host_connections=4)
    dispatcher = world.dispatcher(sender=sender)
    batch = [message("acme-motors") for _ in range(6)]  # more than the 4 connections per host
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(outcomes=dispatcher.dispatch_all(batch)), daemon=True)

    worker.start()
    try:
        arrived = server.wait_for(6, timeout=20)
        assert arrived, f"only {len(server.received)} of 6 POSTs were made: the others wait for a pool slot forever"
        worker.join(timeout=30)
        assert not worker.is_alive()
    finally:
        if worker.is_alive():
            unjam(sender)
            worker.join(timeout=30)

    assert result["outcomes"] == ["delivered"] * 6
    entries = world.entries()
    assert [e["status"] for e in entries] == ["delivered"] * 6
    assert all(e["responseBodyExcerpt"] == verbose[:1024].decode() for e in entries)


def test_a_partner_without_a_secret_is_retried_without_a_post(world, serve):
    server = serve()
    world.partners.append(partner_from_record({"partnerId": "lendco", "webhook": {"url": server.url()}}))

    assert world.dispatcher().dispatch_all([message("lendco")]) == ["retry-scheduled"]

    assert server.received == []
    [entry] = world.entries()
    assert (entry["status"], entry["statusCode"], entry["deadLettered"]) == ("failed", None, False)
    assert entry["error"] == f"secret {world.secrets.name_for('lendco')} could not be read"
    [queued] = world.queued(world.retry_url)
    assert queued.body["lastError"] == entry["error"]


def test_an_unknown_partner_is_dead_lettered_at_once(world):
    assert world.dispatcher().dispatch_all([message("nobody-motors")]) == ["dead-lettered"]

    [entry] = world.entries()
    assert (entry["status"], entry["deadLettered"], entry["error"]) == ("failed", True, "partner not found")
    assert world.queued(world.retry_url) == []
    [dead] = world.queued(world.dlq_url)
    assert (dead.body["partnerId"], dead.body["lastError"]) == ("nobody-motors", "partner not found")


@pytest.mark.parametrize("where", ["private", "loopback"])
def test_a_refused_endpoint_is_dead_lettered_at_once_without_any_connection(world, serve, monkeypatch, where):
    server = serve()
    url = "https://10.0.0.1/x" if where == "private" else f"https://127.0.0.1:{server.port}/hooks"
    world.add_partner("acme-motors", url)
    connects: list[Any] = []

    def no_connection(*args: Any, **kwargs: Any) -> Any:
        connects.append(args)
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    monkeypatch.setattr(socket.socket, "connect", no_connection)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", no_connection)
    dispatcher = world.dispatcher(sender=world.sender(allow_private=False))

    assert dispatcher.dispatch_all([message("acme-motors")]) == ["dead-lettered"]

    assert connects == []
    assert server.received == []
    reason = "10.0.0.1 is private (10.0.0.0/8)" if where == "private" else "127.0.0.1 is loopback (127.0.0.0/8)"
    [entry] = world.entries()
    assert (entry["status"], entry["deadLettered"], entry["attempt"], entry["statusCode"]) == ("failed", True, 1, None)
    assert entry["error"].startswith("endpoint refused:")
    assert reason in entry["error"]
    assert world.queued(world.retry_url) == []
    [dead] = world.queued(world.dlq_url)
    assert (dead.body["attempt"], dead.body["lastError"]) == (1, entry["error"])


def test_a_secret_rotated_between_attempts_signs_the_retry(world, serve):
    server = serve(Reply(500), Reply(200))
    secret_a = world.add_partner("acme-motors", server.url(), secret="whsec_before_rotation")
    secret_b = "whsec_after_rotation"
    dispatcher = world.dispatcher()

    assert dispatcher.dispatch_all([message("acme-motors")]) == ["retry-scheduled"]
    world.rotate("acme-motors", secret_b)
    assert dispatcher.dispatch_all(world.take(world.retry_url)) == ["delivered"]

    first, second = server.received
    assert signed_with(first, secret_a) and not signed_with(first, secret_b)
    assert signed_with(second, secret_b) and not signed_with(second, secret_a)
    assert [(e["attempt"], e["status"]) for e in world.entries()] == [(1, "failed"), (2, "delivered")]


def test_a_cached_secret_is_read_afresh_after_the_partner_refuses_its_signature(world, serve):
    """Secrets are cached (an hour by default); a 401 or 403 makes the next attempt read the secret again."""
    server = serve(Reply(500), Reply(401), Reply(200))
    world.secrets = PartnerSecrets(max_age_seconds=300)
    secret_a = world.add_partner("rotating-motors", server.url(), secret="whsec_before_rotation")
    secret_b = "whsec_after_rotation"
    dispatcher = world.dispatcher()
    try:
        assert dispatcher.dispatch_all([message("rotating-motors")]) == ["retry-scheduled"]
        world.rotate("rotating-motors", secret_b)
        assert dispatcher.dispatch_all(world.take(world.retry_url)) == ["retry-scheduled"]
        assert dispatcher.dispatch_all(world.take(world.retry_url)) == ["delivered"]
    finally:
        parameters.clear_caches()  # the cache is per process: no later test may see this one's secrets

    first, second, third = server.received
    assert signed_with(first, secret_a) and signed_with(second, secret_a)  # still cached after a 500
    assert signed_with(third, secret_b) and not signed_with(third, secret_a)  # read afresh after the 401
    assert [(e["attempt"], e["status"], e["statusCode"]) for e in world.entries()] == [
        (1, "failed", 500),
        (2, "failed", 401),
        (3, "delivered", 200),
    ]


# -- duplicates and skips ----------------------------------------------------------------------


def test_a_message_delivered_again_by_sqs_in_a_later_batch_is_not_reposted(world, serve):
    server = serve()
    world.add_partner("acme-motors", server.url())
    msg = message("acme-motors")
    dispatcher = world.dispatcher()

    assert dispatcher.dispatch_all([msg]) == ["delivered"]
    assert dispatcher.dispatch_all([msg]) == ["skipped"]

    assert len(server.received) == 1
    delivered, skipped = world.entries()
    assert (delivered["status"], delivered["attempt"]) == ("delivered", 1)
    assert skipped["status"] == "skipped"
    assert skipped["error"].startswith("already delivered")
    assert world.queued(world.retry_url) == [] and world.queued(world.dlq_url) == []


def test_the_same_message_twice_in_one_batch_is_posted_once(world, serve):
    server = serve()
    world.add_partner("acme-motors", server.url())
    msg = message("acme-motors")

    outcomes = world.dispatcher().dispatch_all([msg, msg])

    assert outcomes == ["delivered", "skipped"]
    assert len(server.received) == 1
    statuses = sorted((e["status"], e["error"]) for e in world.entries())
    assert statuses == [("delivered", None), ("skipped", "duplicate message in the same batch")]


def test_an_inactive_partner_is_skipped_without_a_post(world, serve):
    server = serve()
    world.add_partner("oldroad-motors", server.url(), active=False)

    assert world.dispatcher().dispatch_all([message("oldroad-motors")]) == ["skipped"]

    assert server.received == []
    [entry] = world.entries()
    assert (entry["status"], entry["error"], entry["statusCode"]) == ("skipped", "partner is inactive", None)
    assert world.queued(world.retry_url) == [] and world.queued(world.dlq_url) == []


# -- batches -----------------------------------------------------------------------------------


def test_a_hanging_endpoint_does_not_stall_the_rest_of_the_batch(world, serve):
    release = threading.Event()
    hanging = serve(default=Reply(200, hang_until=release))
    normal = serve()
    world.add_partner("slow-motors", hanging.url())
    world.add_partner("acme-motors", normal.url())
    dispatcher = world.dispatcher(sender=world.sender(timeout_seconds=120))
    batch = [message("slow-motors")] + [message("acme-motors") for _ in range(5)]
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(outcomes=dispatcher.dispatch_all(batch)), daemon=True)

    worker.start()
    try:
        assert hanging.wait_for(1), "the hanging endpoint never got its POST"
        assert normal.wait_for(5), f"only {len(normal.received)} of 5 normal deliveries arrived"
        assert wait_until(lambda: len(world.entries(partner_id="acme-motors")) == 5)
        # ... all while the hanging delivery is still waiting for its answer.
        assert not release.is_set()
        assert hanging.answered == 0
        assert worker.is_alive()
        assert world.entries(partner_id="slow-motors") == []
        assert {e["status"] for e in world.entries(partner_id="acme-motors")} == {"delivered"}
    finally:
        release.set()
    worker.join(timeout=60)

    assert not worker.is_alive()
    assert result["outcomes"] == ["delivered"] * 6
    assert len(normal.received) == 5 and len(hanging.received) == 1
    assert [e["status"] for e in world.entries(partner_id="slow-motors")] == ["delivered"]


class Crash(BaseException):
    """The Lambda process dying mid-batch: not an Exception, so nothing in the code may absorb it."""


class CrashingSender:
    """POSTs through the real sender; the N-th POST reaches the partner, then the process dies.

    Once dead, no later POST is made (they raise Crash too).
    """

    def __init__(self, inner: WebhookSender, crash_on: int) -> None:
        self.inner = inner
        self.crash_on = crash_on
        self.calls = 0
        self.posted: list[str] = []
        """eventIds whose POST went out (the crashed one included)."""
        self.crashed_event_id: str | None = None
        self._lock = threading.Lock()
        self._dead = False

    def post(self, url: str, headers: dict[str, str], body: bytes, **options: Any) -> SendResult:
        with self._lock:
            self.calls += 1
            n, dead = self.calls, self._dead
            if n >= self.crash_on:
                self._dead = True
        if dead:
            raise Crash("the process is gone")
        result = self.inner.post(url, headers, body, **options)
        with self._lock:
            self.posted.append(headers["X-PA-Event-Id"])
        if n == self.crash_on:
            self.crashed_event_id = headers["X-PA-Event-Id"]
            raise Crash(f"died after POST #{n}, before recording it")
        return result


@pytest.mark.parametrize("workers", [1, 16], ids=["sequential", "concurrent"])
def test_a_crash_mid_batch_then_a_replay_delivers_everything_exactly_once(
    world, serve, monkeypatch, lambda_context, workers
):
    ok = serve()
    down = serve(default=Reply(503, b"maintenance"))
    world.add_partner("acme-motors", ok.url("/acme"))
    world.add_partner("lendco", ok.url("/lendco"))
    world.add_partner("bayside-auto", down.url())
    world.add_partner("walled-garden", "ftp://127.0.0.1/hooks")  # refused even with allow_private
    messages = [
        message("acme-motors"),
        message("lendco"),
        message("acme-motors"),
        message("bayside-auto", attempt=3),  # the last attempt: dead-lettered, not retried
        message("acme-motors"),
        message("walled-garden"),
        message("lendco"),
        message("bayside-auto", attempt=3),
        message("acme-motors"),
    ]
    delivered_ids = {m.event_id for m in messages if m.partner_id in ("acme-motors", "lendco")}
    dead_ids = {m.event_id for m in messages} - delivered_ids
    assert world.queue(world.delivery_url).send([OutgoingMessage(m.to_body()) for m in messages]) == []
    # VisibilityTimeout 0: what a crashed invocation leaves unacknowledged is visible again at once.
    received = world.receive(world.delivery_url, visibility_timeout=0)
    assert len(received) == len(messages)
    event = world.sqs_event(world.delivery_url, received)

    app = load_function("dispatcher")
    sender = world.sender()
    crashing = CrashingSender(sender, crash_on=3)
    monkeypatch.setattr(app, "_runtime", world.runtime(world.dispatcher(sender=crashing, max_workers=workers)))
    with pytest.raises(Crash):
        app.handler(event, lambda_context)

    assert crashing.crashed_event_id in crashing.posted
    if workers == 1:
        assert len(crashing.posted) == crashing.crash_on  # nothing went out after the crash
    before_replay = Counter(r.header("X-PA-Event-Id") for server in (ok, down) for r in server.received)
    assert sum(before_replay.values()) == len([e for e in crashing.posted if e != messages[5].event_id])
    # The invocation failed: the event source deletes nothing, the whole batch comes back.
    replay = world.receive(world.delivery_url)
    assert sorted(m["MessageId"] for m in replay) == sorted(m["MessageId"] for m in received)

    # It comes back after the visibility timeout, which outlasts the crashed invocation's claims.
    later = utc_now() + dt.timedelta(seconds=DISPATCHER_VISIBILITY_TIMEOUT)
    monkeypatch.setattr(world.log, "_clock", lambda: later)
    monkeypatch.setattr(app, "_runtime", world.runtime(world.dispatcher(sender=sender, max_workers=workers)))
    response = app.handler(world.sqs_event(world.delivery_url, replay), lambda_context)

    assert response == {"batchItemFailures": []}
    world.delete(world.delivery_url, replay)
    assert world.queued(world.delivery_url) == []

    posts = Counter(r.header("X-PA-Event-Id") for server in (ok, down) for r in server.received)
    for m in messages:
        entries = world.entries(event_id=m.event_id)
        terminal = [e for e in entries if e["status"] == "delivered" or (e["status"] == "failed" and e["deadLettered"])]
        assert len(terminal) == 1, (m.partner_id, entries)
        assert posts[m.event_id] <= 2, m.partner_id
        if m.event_id in delivered_ids:
            assert [e["status"] for e in entries].count("delivered") == 1
            assert posts[m.event_id] >= 1
        else:
            assert terminal[0]["status"] == "failed"
    # Only the delivery whose POST was cut off before it was recorded went out twice.
    twice = {event_id for event_id, count in posts.items() if count == 2}
    assert twice <= {crashing.crashed_event_id}
    if crashing.crashed_event_id != messages[5].event_id:  # the refused one never reaches a server
        assert twice == {crashing.crashed_event_id}
    # Each dead-lettered delivery is on the dead-letter queue exactly once; nothing is retried.
    assert sorted(q.body["eventId"] for q in world.queued(world.dlq_url)) == sorted(dead_ids)
    assert world.queued(world.retry_url) == []


# -- the handler's partial batch response ------------------------------------------------------


class LogFailingFor(MongoDeliveryLog):
    """The delivery log, unavailable for writes about one partner."""

    def __init__(self, collection: Any, partner_id: str) -> None:
        super().__init__(collection)
        self.partner_id = partner_id

    def record(self, attempt: DeliveryAttempt) -> None:
        if attempt.partner_id == self.partner_id:
            raise LookupFailure(f"{DELIVERIES_COLLECTION}: connection reset")
        super().record(attempt)


def test_the_handler_reports_exactly_the_messages_whose_queue_or_log_step_failed(
    world, serve, lambda_context, monkeypatch
):
    ok = serve()
    failing = serve(default=Reply(500))
    world.add_partner("acme-motors", ok.url("/acme"))
    world.add_partner("lendco", ok.url("/lendco"))
    world.add_partner("bayside-auto", failing.url())
    world.add_partner("oldroad-motors", ok.url("/oldroad"), active=False)
    gone = world.sqs.create_queue(QueueName="trigger-distiller-gone")["QueueUrl"]
    world.sqs.delete_queue(QueueUrl=gone)

    delivered = message("acme-motors")
    needs_retry = message("bayside-auto")  # the retry queue is unavailable
    unlogged = message("lendco")  # POSTed, but the log write fails
    inactive = message("oldroad-motors")
    not_json = "this is not json"
    no_event_id = json.dumps({k: v for k, v in json.loads(delivered.to_body()).items() if k != "eventId"})
    bodies = [delivered.to_body(), not_json, needs_retry.to_body(), unlogged.to_body(), no_event_id, inactive.to_body()]
    assert world.queue(world.delivery_url).send([OutgoingMessage(b) for b in bodies]) == []
    received = world.receive(world.delivery_url)
    id_of = {m["Body"]: m["MessageId"] for m in received}

    app = load_function("dispatcher")
    dispatcher = world.dispatcher(
        retry_queue=world.queue(gone), log=LogFailingFor(world.collection, "lendco"), max_workers=4
    )
    monkeypatch.setattr(app, "_runtime", world.runtime(dispatcher))
    response = app.handler(world.sqs_event(world.delivery_url, received), lambda_context)

    failures = sorted(item["itemIdentifier"] for item in response["batchItemFailures"])
    assert failures == sorted([id_of[needs_retry.to_body()], id_of[unlogged.to_body()]])
    assert set(response) == {"batchItemFailures"}

    parked = {q.body["origin"]: q.body for q in world.queued(world.dlq_url)}
    assert set(parked) == {id_of[not_json], id_of[no_event_id]}
    assert parked[id_of[not_json]]["record"] == not_json
    assert parked[id_of[not_json]]["reason"].startswith("not a delivery message: body: not JSON")
    assert parked[id_of[no_event_id]] == {
        "reason": "not a delivery message: eventId: required string",
        "origin": id_of[no_event_id],
        "record": no_event_id,
    }

    by_partner = {p: [e["status"] for e in world.entries(partner_id=p)] for p in ("acme-motors", "oldroad-motors")}
    assert by_partner == {"acme-motors": ["delivered"], "oldroad-motors": ["skipped"]}
    # The failed steps left no log entry, so SQS's redelivery makes the attempt again.
    assert world.entries(partner_id="bayside-auto") == []
    assert world.entries(partner_id="lendco") == []
    assert len(failing.received) == 1
    assert [r.path for r in ok.received].count("/lendco") == 1
    assert ok.received_at("/oldroad") == []
    assert world.queued(world.retry_url) == []

    # Redelivered (after the visibility timeout) with the infrastructure back: both complete.
    later = utc_now() + dt.timedelta(seconds=DISPATCHER_VISIBILITY_TIMEOUT)
    monkeypatch.setattr(world.log, "_clock", lambda: later)
    monkeypatch.setattr(app, "_runtime", world.runtime(world.dispatcher()))
    again = [m for m in received if m["MessageId"] in failures]
    response = app.handler(world.sqs_event(world.delivery_url, again), lambda_context)
    assert response == {"batchItemFailures": []}
    assert [e["status"] for e in world.entries(partner_id="bayside-auto")] == ["failed"]
    assert [e["status"] for e in world.entries(partner_id="lendco")] == ["delivered"]
    [queued] = world.queued(world.retry_url)
    assert (queued.body["eventId"], queued.body["attempt"]) == (needs_retry.event_id, 1)
