"""The change-stream relay and `distiller replay`, against a scripted change stream.

mongomock has no `watch()`, so `ScriptedSource` plays the server: a scripted oplog of change
documents in the real change-stream shape (or errors to raise), honouring `resume_after`,
`start_after`, `start_at_operation_time` and the `$match` on `ns.coll`. SQS is moto; the
checkpoints live in mongomock.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import io
import json
import logging
import time

import boto3
import mongomock
import pytest
from bson import Timestamp
from moto import mock_aws
from pymongo.errors import AutoReconnect, OperationFailure

from distiller.adapters.checkpoints import MongoCheckpointStore
from distiller.adapters.lookups import MongoLookups
from distiller.adapters.queues import MAX_BATCH_BYTES, OutgoingMessage, SqsQueue
from distiller.core.model import ChangeEvent
from distiller.core.pipeline import deliveries_of, distill
from distiller.ingest.sources import change_events_from_text
from distiller.relay.loop import Relay
from distiller.relay.replay import replay
from distiller.relay.stream import (
    CHECKPOINTS_COLLECTION,
    DEFAULT_COLLECTIONS,
    DEFAULT_RELAY_NAME,
    MAX_FIELD_NAMES_BYTES,
    RelayError,
    RelaySendError,
    StartAt,
    parse_start_at,
    serialise,
    trimmed_record,
)
from distiller_tools.cli import main as cli_main
from distiller_tools.relay_cli import STDOUT_RELAY_NAME, register
from distiller_tools.world import in_memory_database
from tests.factories import oid, partner, raw_insert, raw_update

# --- the scripted change stream -----------------------------------------------------------------

BASE = 1777118437  # 2026-04-25T12:00:37Z


def token(n: int) -> dict[str, str]:
    """A resume token in Mongo's v1 hex keystring shape: 82 + cluster time (seconds, increment) + ..."""
    return {"_data": f"82{BASE + n:08X}{1:08X}2B042C0100296E5A1004{n:032X}46645F69640064{n:024X}0004"}


def at(n: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(BASE + n, dt.UTC)


def stamped(n: int, raw: dict) -> dict:
    """A factory change made real: token n, clusterTime and wallTime n seconds after BASE."""
    raw["_id"] = token(n)
    raw["clusterTime"] = Timestamp(BASE + n, 1)
    raw["wallTime"] = at(n)
    return raw


def deal_created(n: int, app: str = "carmart") -> dict:
    return stamped(n, raw_insert("deals", {"_id": oid(n), "guid": f"g-{n}", "appSource": app}))


def user_registered(n: int) -> dict:
    return stamped(n, raw_insert("users", {"_id": oid(n), "appRegisteredFrom": "carmart", "email": f"u{n}@x.example"}))


def deal_sold(n: int) -> dict:
    return stamped(
        n,
        raw_update(
            "deals",
            {"dealState.closingStatus": "acknowledged", "status": "sold"},
            {"appSource": "acme", "status": "sold"},
            before={"appSource": "acme", "status": "active"},
            document_id=oid(n),
        ),
    )


def unwatched(n: int) -> dict:
    return stamped(n, raw_insert("partners", {"_id": oid(n), "partnerId": "not-a-source-collection"}))


def oversize(n: int) -> dict:
    """A deal insert whose body is over the SQS message limit (a 1 MiB note in the document)."""
    big = deal_created(n)
    big["fullDocument"]["notes"] = "x" * MAX_BATCH_BYTES
    return big


def invalidate(n: int) -> dict:
    return {"_id": token(n), "operationType": "invalidate", "clusterTime": Timestamp(BASE + n, 1), "wallTime": at(n)}


def lost(code: int = 286) -> OperationFailure:
    return OperationFailure(
        "Resume of change stream was not possible, as the resume point may no longer be in the oplog.",
        code=code,
        details={"errmsg": "Resume of change stream was not possible", "code": code, "codeName": "x"},
    )


class ScriptedStream:
    """A `ChangeStream`: `try_next()` over the scripted entries, raising the scripted errors."""

    def __init__(self, entries: list, position: dict | None, idle_token: dict | None, max_await_ms: int) -> None:
        self._entries = entries
        self._next = 0
        self._idle_token = idle_token
        self._max_await = min(max_await_ms or 0, 50) / 1000
        self.resume_token = position
        self.alive = True
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True
        self.alive = False
        return False

    def __iter__(self):
        return self

    def __next__(self):
        change = self.try_next()
        if change is None:
            raise StopIteration
        return change

    def try_next(self):
        if self._next >= len(self._entries):
            time.sleep(self._max_await)  # the server waits maxAwaitTimeMS for new changes
            if self._idle_token is not None:
                self.resume_token = self._idle_token  # postBatchResumeToken moved past filtered changes
            return None
        entry = self._entries[self._next]
        self._next += 1
        if isinstance(entry, BaseException):
            raise entry
        self.resume_token = entry["_id"]
        if entry["operationType"] == "invalidate":
            self.alive = False
        return copy.deepcopy(entry)


class ScriptedSource:
    """pymongo `Database.watch` stand-in over a scripted oplog. `now` is where "the current time" is."""

    def __init__(self, script: list, *, now: int = 0, watch_error: BaseException | None = None, idle_token=None):
        self.script = script
        self.now = now
        self.watch_error = watch_error
        self.idle_token = idle_token
        self.calls: list[dict] = []
        self.streams: list[ScriptedStream] = []

    def watch(self, **kwargs) -> ScriptedStream:
        self.calls.append(kwargs)
        if self.watch_error is not None:
            raise self.watch_error
        position = kwargs.get("resume_after") or kwargs.get("start_after")
        changes = [(i, e) for i, e in enumerate(self.script) if isinstance(e, dict)]
        if position is not None:
            found = [i for i, e in changes if e["_id"] == position]
            if not found:
                raise lost(286)  # not in the oplog (any more)
            if kwargs.get("resume_after") and self.script[found[0]]["operationType"] == "invalidate":
                raise lost(260)  # resumeAfter cannot pass an invalidate; startAfter can
            start = found[0] + 1
        elif kwargs.get("start_at_operation_time") is not None:
            ts = kwargs["start_at_operation_time"]
            start = next((i for i, e in changes if e["clusterTime"] >= ts), len(self.script))
        else:
            start = self.now
        wanted = set(kwargs["pipeline"][0]["$match"]["ns.coll"]["$in"])
        entries = [
            e
            for e in self.script[start:]
            if not isinstance(e, dict) or e["operationType"] == "invalidate" or e["ns"]["coll"] in wanted
        ]
        stream = ScriptedStream(entries, position, self.idle_token, kwargs.get("max_await_time_ms", 0))
        self.streams.append(stream)
        return stream


class ScriptedDatabase(ScriptedSource):
    """A pymongo `Database` stand-in for `distiller relay`: the scripted stream, mongomock collections."""

    def __init__(self, script: list, db, **kwargs) -> None:
        super().__init__(script, **kwargs)
        self.db = db

    def __getitem__(self, name: str):
        return self.db[name]


# --- fixtures and helpers ---------------------------------------------------------------------


class RecordingQueue:
    """The real `SqsQueue` (moto), remembering each `send` call's bodies: the order the relay sent in."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    def send(self, messages):
        self.calls.append([m.body for m in messages])
        return self.inner.send(messages)

    @property
    def bodies(self) -> list[str]:
        return [b for call in self.calls for b in call]


class RefusingFrom:
    """A queue that accepts the first `accept` messages overall, then refuses everything."""

    def __init__(self, inner, accept: int) -> None:
        self.inner = inner
        self.left = accept

    def send(self, messages):
        ok, self.left = messages[: max(self.left, 0)], self.left - len(messages)
        failed = self.inner.send(ok)
        return sorted([*failed, *range(len(ok), len(messages))])


class RefusingDeadLetters:
    """A dead-letter queue that refuses every record (SQS down), remembering what it was offered."""

    def __init__(self) -> None:
        self.offered: list[tuple] = []

    def park(self, record, reason, origin) -> bool:
        self.offered.append((record, reason, origin))
        return False


class RecordingStore:
    """A checkpoint store that remembers every token saved, in order."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.saved: list[str] = []

    def load(self, name):
        return self.inner.load(name)

    def save(self, name, token, change_time=None):
        self.saved.append(token["_data"])
        self.inner.save(name, token, change_time)


class CrashOnceAfterSend:
    """A checkpoint store whose first save fails, as if the process died between send and checkpoint."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.crashed = False

    def load(self, name):
        return self.inner.load(name)

    def save(self, name, token, change_time=None):
        if not self.crashed:
            self.crashed = True
            raise AutoReconnect("connection closed")
        self.inner.save(name, token, change_time)


@pytest.fixture
def sqs():
    with mock_aws():
        client = boto3.client("sqs", region_name="us-east-2")
        url = client.create_queue(QueueName="ingest")["QueueUrl"]
        yield client, url


@pytest.fixture
def queue(sqs):
    client, url = sqs
    return RecordingQueue(SqsQueue(client, url))


@pytest.fixture
def dlq(sqs):
    """The ingest dead-letter queue (moto), next to the ingest queue."""
    client, _ = sqs
    return SqsQueue(client, client.create_queue(QueueName="ingest-dlq")["QueueUrl"])


@pytest.fixture
def db():
    return mongomock.MongoClient(tz_aware=True)["privateauto"]


@pytest.fixture
def store(db):
    return MongoCheckpointStore(db[CHECKPOINTS_COLLECTION])


NOW = StartAt()


def make_relay(source, queue, store, **kw) -> Relay:
    """A relay told to start at "now" when it has no checkpoint (pass start_at=None for none)."""
    kw.setdefault("start_at", NOW)
    return Relay(source, queue, store, name="test-relay", max_await_time_ms=5, **kw)


def drain(sqs) -> list[str]:
    client, url = sqs if isinstance(sqs, tuple) else (sqs._client, sqs.queue_url)
    bodies = []
    while got := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for m in got:
            bodies.append(m["Body"])
            client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return bodies


def tokens_of(bodies) -> list[str]:
    """Resume tokens as the distiller's own source adapter reads them from the bodies."""
    out = []
    for body in bodies:
        [event] = change_events_from_text(body, "queue")
        assert isinstance(event, ChangeEvent), event
        out.append(event.resume_token)
    return out


def data(*ns: int) -> list[str]:
    return [token(n)["_data"] for n in ns]


def saved(db) -> dict | None:
    return db[CHECKPOINTS_COLLECTION].find_one({"_id": "test-relay"})


def event_ids(bodies) -> list[tuple[str, str, str]]:
    """Distil bodies with a partner world: (resume token, event, eventId) of every delivery."""
    lookups = MongoLookups(in_memory_database([partner("acme"), partner("carmart", webhookScope="appSource")]))
    items = [e for b in bodies for e in change_events_from_text(b, "q")]
    return [(d.event_key.split(":")[0], d.event, d.event_id) for d in deliveries_of(distill(items, lookups))]


# --- relaying ---------------------------------------------------------------------------------


def test_changes_are_forwarded_in_order_in_batches_of_ten_and_the_last_sent_token_is_checkpointed(
    sqs, queue, store, db, caplog
):
    script = [user_registered(n) for n in range(1, 7)] + [unwatched(7)] + [deal_created(n) for n in range(8, 14)]
    source = ScriptedSource(script)

    with caplog.at_level(logging.WARNING, logger="distiller.relay.loop"):
        result = make_relay(source, queue, store).run(stop_when_idle=True)

    expected = data(1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13)
    assert [len(call) for call in queue.calls] == [10, 2]
    assert tokens_of(queue.bodies) == expected  # the order sent, as the distiller parses it
    assert sorted(tokens_of(drain(sqs))) == sorted(expected)  # and all of it is on the queue
    assert (result.read, result.sent, result.failed, result.stopped) == (12, 12, 0, "idle")
    assert result.checkpoint == saved(db)["token"]["_data"] == token(13)["_data"]
    assert saved(db)["changeTime"] == at(13)
    [call] = source.calls
    assert call["pipeline"] == [{"$match": {"ns.coll": {"$in": list(DEFAULT_COLLECTIONS)}}}]
    assert call["full_document"] == "updateLookup" and call["full_document_before_change"] == "whenAvailable"
    assert "resume_after" not in call and "start_after" not in call  # first run, told to start now: it says so
    assert "no checkpoint" in caplog.text and "starting at the current time" in caplog.text
    assert source.streams[0].closed


def test_bodies_are_relaxed_extended_json_that_keep_the_bson_types(queue, store):
    make_relay(ScriptedSource([deal_sold(1)]), queue, store).run(stop_when_idle=True)

    [body] = queue.bodies
    raw = json.loads(body)
    assert raw["documentKey"]["_id"] == {"$oid": str(oid(1))}
    assert raw["clusterTime"] == {"$timestamp": {"t": BASE + 1, "i": 1}}
    assert raw["wallTime"] == {"$date": "2026-04-25T12:00:38Z"}
    [event] = change_events_from_text(body, "q")
    assert event.document_id == oid(1) and event.before == {"_id": oid(1), "appSource": "acme", "status": "active"}


def test_restart_resumes_after_the_checkpoint_and_sends_nothing_twice(queue, store, db):
    source = ScriptedSource([deal_created(n) for n in range(1, 9)])

    first = make_relay(source, queue, store).run(max_events=5)
    second = make_relay(source, queue, store).run(stop_when_idle=True)

    assert (first.read, first.stopped, first.checkpoint) == (5, "max-events", token(5)["_data"])
    assert source.calls[1]["resume_after"] == token(5)
    assert second.resumed_from == token(5)["_data"]
    assert tokens_of(queue.bodies) == data(*range(1, 9))  # each exactly once, in order
    assert saved(db)["token"] == token(8)


def test_a_refused_send_leaves_the_checkpoint_where_it_was_and_is_reported(sqs, queue, store, db):
    client, url = sqs
    source = ScriptedSource([deal_created(n) for n in range(1, 7)])
    make_relay(source, queue, store).run(max_events=2)
    broken = SqsQueue(client, url + "-gone")  # every SendMessageBatch fails

    with pytest.raises(RelaySendError) as caught:
        make_relay(source, broken, store).run(stop_when_idle=True)

    assert saved(db)["token"] == token(2)  # not advanced
    assert (caught.value.result.sent, caught.value.result.failed) == (0, 4)
    assert caught.value.token == token(3)["_data"] and "checkpoint left at " + token(2)["_data"] in str(caught.value)
    make_relay(source, queue, store).run(stop_when_idle=True)  # the queue is back: nothing was lost
    assert source.calls[-1]["resume_after"] == token(2)
    assert tokens_of(queue.bodies) == data(1, 2, 3, 4, 5, 6)


def test_a_partly_refused_batch_checkpoints_only_the_accepted_prefix(queue, store, db):
    source = ScriptedSource([deal_created(n) for n in range(1, 8)])

    with pytest.raises(RelaySendError) as caught:
        make_relay(source, RefusingFrom(queue, accept=3), store).run(stop_when_idle=True)

    assert (caught.value.result.sent, caught.value.result.failed) == (3, 4)
    assert saved(db)["token"] == token(3)
    make_relay(source, queue, store).run(stop_when_idle=True)
    assert source.calls[-1]["resume_after"] == token(3)
    assert tokens_of(queue.bodies) == data(1, 2, 3, 4, 5, 6, 7)


def test_a_crash_between_send_and_checkpoint_replays_the_batch_and_downstream_absorbs_the_duplicate(
    sqs, queue, store, db
):
    script = [deal_created(1), deal_sold(2), deal_created(3), user_registered(4), deal_sold(5)]
    source = ScriptedSource(script)
    make_relay(source, queue, store).run(max_events=2)  # checkpoint at 2

    with pytest.raises(AutoReconnect):
        make_relay(source, queue, CrashOnceAfterSend(store)).run(stop_when_idle=True)
    assert saved(db)["token"] == token(2)  # 3..5 were sent, but the checkpoint never moved
    make_relay(source, queue, store).run(stop_when_idle=True)

    assert source.calls[-1]["resume_after"] == token(2)  # restarted from the OLD checkpoint
    sent = tokens_of(drain(sqs))
    assert sorted(sent) == sorted(data(1, 2, 3, 4, 5, 3, 4, 5))  # duplicates, nothing skipped
    assert saved(db)["token"] == token(5)
    # The duplicate copies distil to the very same eventIds, so the dispatcher's idempotency absorbs them.
    first_copy, second_copy = queue.bodies[2:5], queue.bodies[5:8]
    assert first_copy == second_copy
    ids = event_ids(first_copy)
    assert ids and ids == event_ids(second_copy)
    assert {t for t, _, _ in ids} == set(data(3, 4, 5))


@pytest.mark.parametrize("code", [286, 280, 260])
def test_an_expired_or_unknown_token_stops_the_relay_loudly_and_keeps_the_checkpoint(queue, store, db, caplog, code):
    store.save("test-relay", token(99), at(99))  # a position the oplog no longer holds
    source = ScriptedSource([deal_created(n) for n in range(1, 4)], watch_error=lost(code))

    with caplog.at_level(logging.ERROR, logger="distiller.relay.loop"), pytest.raises(RelayError) as caught:
        make_relay(source, queue, store).run(max_seconds=5)

    message = str(caught.value)
    assert token(99)["_data"] in message
    assert "distiller replay --since 2026-04-25T12:02:16Z" in message  # from the checkpoint's change time
    assert f"delete {{_id: 'test-relay'}} from {CHECKPOINTS_COLLECTION}" in message
    assert "NOT restart from now" in message and str(code) in message
    assert caught.value.token == token(99)["_data"]
    assert saved(db)["token"] == token(99)
    assert queue.calls == []
    assert [r.levelname for r in caplog.records if token(99)["_data"] in r.getMessage()] == ["ERROR"]


def test_history_lost_mid_stream_sends_what_was_read_then_stops(queue, store, db):
    source = ScriptedSource([deal_created(1), deal_created(2), lost(286), deal_created(3)])

    with pytest.raises(RelayError) as caught:
        make_relay(source, queue, store).run(max_seconds=5)

    assert tokens_of(queue.bodies) == data(1, 2)
    assert saved(db)["token"] == token(2)
    assert token(2)["_data"] in str(caught.value) and caught.value.result.sent == 2


def test_other_database_errors_propagate_unchanged(queue, store):
    denied = OperationFailure("not authorized on privateauto to execute command", code=13)
    with pytest.raises(OperationFailure) as caught:
        make_relay(ScriptedSource([], watch_error=denied), queue, store).run(max_seconds=1)
    assert not isinstance(caught.value, RelayError) and caught.value.code == 13


def test_an_invalidate_event_stops_the_relay_loudly_and_is_never_skipped(queue, store, db, caplog):
    source = ScriptedSource([deal_created(1), deal_created(2), invalidate(3), deal_created(4)])

    with caplog.at_level(logging.ERROR, logger="distiller.relay.loop"), pytest.raises(RelayError) as caught:
        make_relay(source, queue, store).run(max_seconds=5)

    message = str(caught.value)
    assert f"distiller replay --after-token {token(3)['_data']}" in message and "invalidated" in message
    assert "NOT restart from now" in message and "ERROR" in caplog.text
    assert tokens_of(queue.bodies) == data(1, 2)  # the invalidate itself is not forwarded
    assert saved(db)["token"] == token(2)
    # The next scheduled run hits the same wall: the relay does not quietly move on to 4.
    with pytest.raises(RelayError):
        make_relay(source, queue, store).run(max_seconds=5)
    assert saved(db)["token"] == token(2) and len(queue.bodies) == 2


def test_a_quiet_stream_still_checkpoints_the_servers_position(queue, store, db):
    """Only unwatched writes: the postBatchResumeToken moves on, so the checkpoint cannot age out of the oplog."""
    store.save("test-relay", token(1))
    source = ScriptedSource([deal_created(1), unwatched(2), unwatched(3)], idle_token=token(3))

    result = make_relay(source, queue, store).run(stop_when_idle=True)

    assert queue.calls == [] and result.sent == 0
    assert saved(db)["token"] == token(3) and result.checkpoint == token(3)["_data"]


def test_max_seconds_bounds_a_run_on_an_idle_stream(queue, store):
    start = time.monotonic()
    result = make_relay(ScriptedSource([]), queue, store).run(max_seconds=0.2)
    assert result.stopped == "max-seconds"
    assert 0.2 <= time.monotonic() - start < 1.5


def test_a_trickle_is_sent_without_waiting_for_a_full_batch(queue, store):
    ticks = iter(range(1000))
    relay = make_relay(ScriptedSource([deal_created(n) for n in range(1, 4)]), queue, store, max_batch_delay=1)
    relay._clock = lambda: float(next(ticks))  # every clock read is a second later

    relay.run(max_events=3)

    assert [len(c) for c in queue.calls] == [1, 1, 1]


def test_a_run_must_be_bounded(queue, store):
    with pytest.raises(ValueError, match="bound"):
        make_relay(ScriptedSource([]), queue, store).run()


def test_a_corrupt_checkpoint_is_refused(queue, store, db):
    db[CHECKPOINTS_COLLECTION].insert_one({"_id": "test-relay", "token": "8263"})
    source = ScriptedSource([deal_created(1)])
    with pytest.raises(RelayError, match="no usable resume token"):
        make_relay(source, queue, store).run(stop_when_idle=True)
    assert source.calls == []


def test_an_oversize_change_is_parked_trimmed_with_its_reason_and_the_relay_moves_past_it(queue, store, db, dlq):
    big = oversize(2)
    size = len(serialise(big).encode("utf-8"))
    checkpoints = RecordingStore(store)
    source = ScriptedSource([deal_created(1), big, deal_created(3)])

    result = make_relay(source, queue, checkpoints, dead_letters=dlq).run(stop_when_idle=True)

    assert tokens_of(queue.bodies) == data(1, 3)
    assert [len(call) for call in queue.calls] == [1, 1]  # what came before it was sent first
    assert (result.read, result.sent, result.parked, result.failed) == (3, 2, 1, 0)
    assert checkpoints.saved == data(1, 2, 3)  # checkpointed past the parked change, in order
    assert saved(db)["token"] == token(3) and result.checkpoint == token(3)["_data"]
    [body] = drain(dlq)
    parked = json.loads(body)
    assert parked["reason"].startswith(f"change too large for SQS: {size} bytes > 1048576; re-read the document")
    assert "distiller replay --since 2026-04-25T12:00:39Z" in parked["reason"]
    assert parked["origin"] == f"relay test-relay privateauto.deals token {token(2)['_data']}"
    assert parked["record"] == {
        "_id": token(2),
        "operationType": "insert",
        "ns": {"db": "privateauto", "coll": "deals"},
        "documentKey": {"_id": {"$oid": str(oid(2))}},
        "clusterTime": {"$timestamp": {"t": BASE + 2, "i": 1}},
        "wallTime": {"$date": "2026-04-25T12:00:39Z"},
        "trimmed": {"sizeBytes": size, "limitBytes": MAX_BATCH_BYTES, "omitted": ["fullDocument"]},
    }
    assert len(body.encode("utf-8")) < 2048


def test_a_trimmed_update_keeps_the_names_of_its_fields_but_none_of_their_values():
    big = deal_sold(4)
    big["updateDescription"]["updatedFields"]["notes"] = "y" * MAX_BATCH_BYTES
    big["updateDescription"]["removedFields"] = ["draft"]

    record = trimmed_record(big, 3 * MAX_BATCH_BYTES)

    assert record["trimmed"] == {
        "sizeBytes": 3 * MAX_BATCH_BYTES,
        "limitBytes": MAX_BATCH_BYTES,
        "omitted": ["fullDocument", "fullDocumentBeforeChange", "updateDescription"],
        "updatedFields": ["dealState.closingStatus", "status", "notes"],
        "removedFields": ["draft"],
    }
    assert "yyyy" not in json.dumps(record) and "updateDescription" not in record
    # Thousands of field names are not cheap: only their count is kept.
    many = deal_sold(5)
    many["updateDescription"]["updatedFields"] = {f"field{i:06d}": i for i in range(MAX_FIELD_NAMES_BYTES // 8)}
    assert trimmed_record(many, 1)["trimmed"]["fieldNamesOmitted"] == MAX_FIELD_NAMES_BYTES // 8


def test_when_an_oversize_change_cannot_be_parked_the_relay_stops_before_it(queue, store, db, dlq):
    source = ScriptedSource([deal_created(1), oversize(2), deal_created(3)])
    refusing = RefusingDeadLetters()

    with pytest.raises(RelaySendError) as caught:
        make_relay(source, queue, store, dead_letters=refusing).run(stop_when_idle=True)

    assert caught.value.token == token(2)["_data"] and "could not be parked" in str(caught.value)
    assert (caught.value.result.sent, caught.value.result.parked) == (1, 0)
    assert [record["_id"] for record, _, _ in refusing.offered] == [token(2)]
    assert saved(db)["token"] == token(1)  # not past the change nobody holds
    assert tokens_of(queue.bodies) == data(1)
    # The dead-letter queue is back: the next run parks it and moves on, nothing lost or sent twice.
    result = make_relay(source, queue, store, dead_letters=dlq).run(stop_when_idle=True)
    assert source.calls[-1]["resume_after"] == token(1)
    assert (result.sent, result.parked) == (1, 1) and tokens_of(queue.bodies) == data(1, 3)
    assert [json.loads(b)["record"]["_id"] for b in drain(dlq)] == [token(2)]


def test_without_a_dead_letter_queue_an_oversize_change_stops_the_relay_before_it(queue, store, db):
    source = ScriptedSource([deal_created(1), oversize(2), deal_created(3)])

    with pytest.raises(RelayError, match="no dead-letter queue to park it on") as caught:
        make_relay(source, queue, store).run(stop_when_idle=True)

    assert "INGEST_DLQ_URL" in str(caught.value) and "change too large for SQS" in str(caught.value)
    assert caught.value.token == token(2)["_data"]
    assert tokens_of(queue.bodies) == data(1) and saved(db)["token"] == token(1)


def test_no_checkpoint_and_no_start_position_is_refused(queue, store, db, caplog):
    source = ScriptedSource([deal_created(1)])

    with caplog.at_level(logging.ERROR, logger="distiller.relay.loop"), pytest.raises(RelayError) as caught:
        make_relay(source, queue, store, start_at=None).run(stop_when_idle=True)

    message = str(caught.value)
    assert "no checkpoint" in message and "NOT guess" in message
    assert "`--start-at now`" in message and "RELAY_START_AT" in message
    assert source.calls == [] and queue.calls == [] and saved(db) is None  # never watched from "now"
    assert "ERROR" in caplog.text


def test_a_checkpoint_always_wins_over_the_start_position(queue, store):
    store.save("test-relay", token(2), at(2))
    source = ScriptedSource([deal_created(n) for n in range(1, 5)])

    make_relay(source, queue, store, start_at=StartAt(time=at(0))).run(stop_when_idle=True)

    assert source.calls[-1]["resume_after"] == token(2) and "start_at_operation_time" not in source.calls[-1]
    assert tokens_of(queue.bodies) == data(3, 4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", StartAt()),
        (" NOW ", StartAt()),
        ("2026-04-25T12:00:39Z", StartAt(time=at(2))),
        ("2026-04-25T12:00:39", StartAt(time=at(2))),  # no zone means UTC
        (token(2)["_data"], StartAt(token=token(2))),
    ],
)
def test_start_positions_parse(text, expected):
    assert parse_start_at(text) == expected


def test_a_start_position_that_is_none_of_the_three_is_refused():
    with pytest.raises(ValueError, match="not a start position: 'yesterday'"):
        parse_start_at("yesterday")


# --- replay -----------------------------------------------------------------------------------

SCRIPT = [deal_created(1), deal_sold(2), unwatched(3), user_registered(4), deal_created(5, "acme"), deal_sold(6)]


def replay_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="distiller")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["replay", "--mongo-uri", "mongodb://replica.example:27017/?replicaSet=rs0", *argv])


def run_replay_cli(source, *argv: str):
    args = replay_args(*argv)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = args.run(args, io.StringIO(), stdout, stderr, open_database=lambda uri, name: source, now=lambda: at(1000))
    return code, stdout.getvalue(), stderr.getvalue()


def test_replay_since_starts_at_that_operation_time_and_prints_json_lines_distill_accepts(
    queue, store, tmp_path, capsys
):
    source = ScriptedSource(SCRIPT)
    make_relay(source, queue, store).run(stop_when_idle=True)  # the original run
    original = event_ids(queue.bodies)

    code, out, err = run_replay_cli(source, "--since", "2026-04-25T12:00:39Z")  # = at(2)

    assert code == 0 and "replayed 4 change(s) to stdout" in err
    assert source.calls[-1]["start_at_operation_time"] == Timestamp(BASE + 2, 0)
    assert "start_after" not in source.calls[-1] and "resume_after" not in source.calls[-1]
    lines = out.splitlines()
    assert tokens_of(lines) == data(2, 4, 5, 6)
    assert lines == queue.bodies[1:]  # the very same documents
    # `distiller distill` reads them, and the eventIds are the original run's.
    path = tmp_path / "replayed.jsonl"
    path.write_text(out)
    partners = tmp_path / "partners.json"
    partners.write_text(json.dumps([partner("acme"), partner("carmart", webhookScope="appSource")]))
    capsys.readouterr()
    assert cli_main(["distill", "--partners", str(partners), str(path)]) == 0
    distilled = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert distilled
    assert {(d["event"], d["eventId"]) for d in distilled} == {
        (event, eid) for tok, event, eid in original if tok != token(1)["_data"]
    }


def test_replay_after_token_uses_start_after_and_stops_at_until(queue, store):
    source = ScriptedSource(SCRIPT)

    code, out, err = run_replay_cli(source, "--after-token", token(2)["_data"], "--until", "2026-04-25T12:00:42Z")

    assert code == 0, err
    assert source.calls[-1]["start_after"] == token(2)
    assert tokens_of(out.splitlines()) == data(4, 5)  # 6 is past --until (= at(5))
    assert "stopped: until" in err and f"last {token(5)['_data']}" in err


def test_replay_after_an_invalidate_token_continues_past_it():
    source = ScriptedSource([deal_created(1), invalidate(2), deal_created(3)])
    code, out, _ = run_replay_cli(source, "--after-token", token(2)["_data"])
    assert code == 0 and tokens_of(out.splitlines()) == data(3)


def test_replay_collections_narrow_the_match():
    source = ScriptedSource(SCRIPT)
    code, out, _ = run_replay_cli(source, "--since", "2026-04-25T12:00:00Z", "--collection", "users")
    assert code == 0 and tokens_of(out.splitlines()) == data(4)
    assert source.calls[-1]["pipeline"] == [{"$match": {"ns.coll": {"$in": ["users"]}}}]


def test_replay_to_the_ingest_queue_sends_in_batches_of_ten(sqs, queue, store):
    script = [deal_created(n) for n in range(1, 14)]
    source = ScriptedSource(script)

    result = replay(source, at(1), None, None, queue)

    assert [len(c) for c in queue.calls] == [10, 3]
    assert tokens_of(drain(sqs)) == data(*range(1, 14))
    assert (result.emitted, result.first_token, result.last_token, result.stopped) == (
        13,
        token(1)["_data"],
        token(13)["_data"],
        "caught-up",
    )


def test_replay_that_cannot_send_says_where_to_continue(queue):
    source = ScriptedSource([deal_created(n) for n in range(1, 14)])
    with pytest.raises(RelaySendError) as caught:
        replay(source, at(1), None, None, RefusingFrom(queue, accept=12))
    assert f"--after-token {token(12)['_data']}" in str(caught.value)


def test_replay_from_a_time_the_oplog_no_longer_holds_fails_with_the_recovery_path():
    source = ScriptedSource(SCRIPT, watch_error=lost(286))
    code, out, err = run_replay_cli(source, "--since", "2026-04-01T00:00:00Z")
    assert (code, out) == (1, "")
    assert "ChangeStreamHistoryLost" in err and "--since 2026-04-01T00:00:00Z" in err


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        ([], "one of the arguments --since --after-token is required"),
        (["--since", "2026-04-01", "--after-token", "82AB"], "not allowed with argument"),
        (["--since", "yesterday"], "is not an ISO 8601 date or date-time"),
        (["--after-token", "zz-not-hex"], "not a resume token"),
        (["--after-token", "82A"], "not a resume token"),  # hex is whole bytes
        (["--since", "2026-04-01", "--until", "noon"], "is not an ISO 8601 date or date-time"),
    ],
)
def test_replay_argument_errors_exit_2(argv, complaint, capsys):
    with pytest.raises(SystemExit) as caught:
        replay_args(*argv)
    assert caught.value.code == 2
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--since", "2026-04-02T00:00:00Z", "--until", "2026-04-01T00:00:00Z"], "is before --since"),
        (["--since", "2026-04-01", "--mongo-uri", "localhost:27017"], "must start with mongodb://"),
        (["--since", "2026-04-01", "--collection", " "], "--collection needs a name"),
    ],
)
def test_replay_inconsistent_arguments_exit_2_before_touching_the_database(argv, complaint):
    source = ScriptedSource(SCRIPT)
    code, out, err = run_replay_cli(source, *argv)
    assert (code, out, source.calls) == (2, "", [])
    assert complaint in err


def test_replay_without_a_mongo_uri_exits_2(monkeypatch):
    monkeypatch.delenv("MONGODB_URI", raising=False)
    parser = argparse.ArgumentParser(prog="distiller")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["replay", "--since", "2026-04-01"])
    stderr = io.StringIO()
    assert args.run(args, io.StringIO(), io.StringIO(), stderr) == 2
    assert "--mongo-uri is required" in stderr.getvalue()


def test_naive_times_are_utc():
    args = replay_args("--since", "2026-04-25T12:00:39", "--until", "2026-04-25T12:00:40")
    assert args.since == at(2) and args.until == at(3)


def test_serialise_round_trips_through_the_distillers_source_adapter():
    change = deal_sold(7)
    [event] = change_events_from_text(serialise(change), "x")
    assert event.resume_token == token(7)["_data"] and event.updated_fields["status"] == "sold"
    assert OutgoingMessage(serialise(change)).body.count("\n") == 0


# --- distiller relay (the CLI) ----------------------------------------------------------------


def relay_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="distiller")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["relay", "--mongo-uri", "mongodb://replica.example:27017/?replicaSet=rs0", *argv])


def run_relay_cli(database, *argv: str):
    args = relay_args(*argv)
    stdout, stderr = io.StringIO(), io.StringIO()
    code = args.run(args, io.StringIO(), stdout, stderr, open_database=lambda uri, name: database)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.mark.parametrize(
    ("start_at", "position", "relayed"),
    [
        pytest.param("now", {}, (5, 6), id="now"),
        pytest.param(
            "2026-04-25T12:00:39Z", {"start_at_operation_time": Timestamp(BASE + 2, 0)}, (2, 4, 5, 6), id="time"
        ),
        pytest.param(token(2)["_data"], {"resume_after": token(2)}, (4, 5, 6), id="token"),
    ],
)
def test_relay_start_at_passes_the_matching_watch_position(db, start_at, position, relayed):
    database = ScriptedDatabase(SCRIPT, db, now=4)  # "the current time" is just before change 5

    code, out, err = run_relay_cli(database, "--start-at", start_at)

    assert code == 0, err
    [call] = database.calls
    for key in ("resume_after", "start_after", "start_at_operation_time"):
        assert call.get(key) == position.get(key), key
    assert tokens_of(out.splitlines()) == data(*relayed)
    checkpoint = db[CHECKPOINTS_COLLECTION].find_one({"_id": STDOUT_RELAY_NAME})
    assert checkpoint["token"] == token(relayed[-1])  # stdout runs never move the Lambda's checkpoint
    assert db[CHECKPOINTS_COLLECTION].find_one({"_id": DEFAULT_RELAY_NAME}) is None
    assert f"relayed {len(relayed)} change(s) to stdout; parked 0" in err


def test_relay_cli_without_a_checkpoint_or_start_at_exits_1_and_says_how_to_start(db):
    database = ScriptedDatabase(SCRIPT, db)

    code, out, err = run_relay_cli(database)

    assert (code, out, database.calls) == (1, "", [])
    assert "no checkpoint" in err and "--start-at now" in err and "RELAY_START_AT" in err


def test_relay_cli_checkpoint_wins_over_start_at_and_the_help_says_so(db, capsys):
    MongoCheckpointStore(db[CHECKPOINTS_COLLECTION]).save(STDOUT_RELAY_NAME, token(4), at(4))
    database = ScriptedDatabase(SCRIPT, db)

    code, out, _ = run_relay_cli(database, "--start-at", "now")

    assert code == 0 and database.calls[-1]["resume_after"] == token(4)
    assert tokens_of(out.splitlines()) == data(5, 6)
    with pytest.raises(SystemExit):
        relay_args("--help")
    assert "the checkpoint always wins" in " ".join(capsys.readouterr().out.split())


def test_relay_cli_to_stdout_prints_an_oversize_change_to_stderr_with_its_reason_and_moves_on(db):
    database = ScriptedDatabase([deal_created(1), oversize(2), deal_created(3)], db)

    code, out, err = run_relay_cli(database, "--start-at", "now")

    assert code == 0, err
    assert tokens_of(out.splitlines()) == data(1, 3)
    notice, record = err.splitlines()[:2]
    assert notice.startswith(f"distiller: relay: parked relay {STDOUT_RELAY_NAME} privateauto.deals token ")
    assert "change too large for SQS" in notice
    parked = json.loads(record)
    assert parked["reason"].startswith("change too large for SQS") and parked["record"]["_id"] == token(2)
    assert "fullDocument" not in parked["record"]
    assert "parked 1;" in err
    assert db[CHECKPOINTS_COLLECTION].find_one({"_id": STDOUT_RELAY_NAME})["token"] == token(3)


def test_relay_cli_sends_to_the_queue_and_parks_on_the_dead_letter_queue(sqs, dlq, db):
    _, url = sqs
    database = ScriptedDatabase([deal_created(1), oversize(2), deal_created(3)], db)

    code, out, err = run_relay_cli(
        database, "--start-at", "now", "--queue-url", url, "--dead-letter-queue-url", dlq.queue_url
    )

    assert (code, out) == (0, ""), err
    assert sorted(tokens_of(drain(sqs))) == data(1, 3)
    [parked] = drain(dlq)
    assert json.loads(parked)["record"]["_id"] == token(2)
    checkpoint = db[CHECKPOINTS_COLLECTION].find_one({"_id": DEFAULT_RELAY_NAME})  # the Lambda's own name
    assert checkpoint["token"] == token(3)


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--start-at", "yesterday"], "not a start position"),
        (["--start-at", "82A"], "not a start position"),
        (["--max-seconds", "0"], "must be more than 0"),
    ],
)
def test_relay_argument_errors_exit_2(argv, complaint, capsys):
    with pytest.raises(SystemExit) as caught:
        relay_args(*argv)
    assert caught.value.code == 2
    assert complaint in capsys.readouterr().err


def test_the_relay_watches_every_collection_a_reducer_reads_under_every_name_by_default():
    from distiller.core.reducers import TABLES

    names = {name for reducer in TABLES for name in (reducer.collection, *reducer.aliases)}
    assert set(DEFAULT_COLLECTIONS) == names
    assert {"credit_reports", "creditreports"} <= names  # the spec spells it both ways
