"""`ChangeFeed`: the in-memory database's writes as change-stream events, and `distiller api --deliver`.

Each recorded insert/update/delete of events/flows on a watched collection is replayed as the write
that made it (the insert; `$set`/`$unset` on the pre-image; the delete) on the sample world with a
feed attached: the event the feed produces must have the recorded event's shape and contents, and
distil into the same partner deliveries. Then: concurrent writers, and a write reaching a partner
receiver as signed webhooks through the local pipeline the API server runs.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import io
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mongomock
import pytest
from bson import ObjectId

from distiller.adapters.lookups import MongoLookups
from distiller.core.ejson import id_string
from distiller.core.pipeline import deliveries_of, distill
from distiller.ingest.sources import change_events_from, change_events_from_text, parse_json
from distiller.relay.stream import DEFAULT_COLLECTIONS, serialise
from distiller_tools.cli import main
from distiller_tools.local.api_server import DeliverySettings, start
from distiller_tools.local.change_feed import ChangeFeed, update_description
from distiller_tools.world import in_memory_database, load_world
from tests.integration.test_local_pipeline import local_partners, receiver  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
WORLD = load_world(EVENTS / "world.json")
PARTNERS = json.loads((EVENTS / "partners.json").read_text())
TOKEN = re.compile(r"82[0-9A-F]{16}[0-9A-F]+")


def unwrap(record: Any) -> Iterator[dict[str, Any]]:
    """The raw change events a recorded line holds (EventBridge detail, DocumentDB entries, SQS bodies)."""
    if "operationType" in record:
        yield record
    elif "detail" in record:
        yield record["detail"]
    elif "events" in record:
        for entry in record["events"]:
            yield entry["event"]
    else:
        for sqs_record in record["Records"]:
            yield from unwrap(parse_json(sqs_record["body"]))


@dataclass(frozen=True)
class Recorded:
    origin: str
    change: dict[str, Any]
    """As recorded, Extended JSON decoded (plain-JSON Atlas events keep their strings)."""
    pre_image: dict[str, Any] | None
    """The document before the write: the recorded pre-image, else the flow's last post-image, else the world's."""


def world_document(collection: str, document_id: Any) -> dict[str, Any] | None:
    wanted = id_string(document_id)
    return next((d for d in WORLD.get(collection, []) if id_string(d["_id"]) == wanted), None)


def recorded_changes() -> list[Recorded]:
    found: list[Recorded] = []
    for flow in sorted((EVENTS / "flows").glob("*.jsonl")):
        post_images: dict[tuple[str, str | None], dict[str, Any]] = {}
        for number, line in enumerate(flow.read_text().splitlines(), start=1):
            for index, change in enumerate(unwrap(parse_json(line))):
                collection = change["ns"]["coll"]
                key = (collection, id_string(change["documentKey"]["_id"]))
                pre_image = (
                    change.get("fullDocumentBeforeChange")
                    or post_images.get(key)
                    or world_document(collection, change["documentKey"]["_id"])
                )
                # The recorded creditreports changes are Atlas plain-JSON events (dates as strings) over a
                # world document with real dates: no single write reproduces both images.
                reproducible = collection in DEFAULT_COLLECTIONS and collection != "creditreports"
                if reproducible and change["operationType"] in ("insert", "update", "delete"):
                    found.append(Recorded(f"{flow.name}:{number}#{index}", change, pre_image))
                if change.get("fullDocument") is not None:
                    post_images[key] = change["fullDocument"]
    return found


RECORDED = recorded_changes()


def apply_write(database: Any, recorded: Recorded) -> None:
    """The write that made the recorded change."""
    change = recorded.change
    collection = database[change["ns"]["coll"]]
    if change["operationType"] == "insert":
        collection.insert_one(copy.deepcopy(change["fullDocument"]))
        return
    assert recorded.pre_image is not None, f"{recorded.origin}: no pre-image to start from"
    document_id = recorded.pre_image["_id"]
    if change["operationType"] == "delete":
        collection.delete_one({"_id": document_id})
        return
    description = change["updateDescription"]
    update: dict[str, Any] = {}
    if description["updatedFields"]:
        update["$set"] = copy.deepcopy(description["updatedFields"])
    if description.get("removedFields"):
        update["$unset"] = {path: "" for path in description["removedFields"]}
    collection.update_one({"_id": document_id}, update)


def seeded_database(recorded: Recorded) -> Any:
    """The sample world with the recorded document as it was before the write (absent for an insert)."""
    database = in_memory_database(PARTNERS, WORLD)
    change = recorded.change
    collection = database[change["ns"]["coll"]]
    forms = [change["documentKey"]["_id"]]
    if ObjectId.is_valid(id_string(forms[0])):
        forms += [ObjectId(id_string(forms[0])), id_string(forms[0])]
    collection.delete_many({"_id": {"$in": forms}})
    if change["operationType"] != "insert":
        collection.insert_one(copy.deepcopy(recorded.pre_image))
    return database


def deliveries(items: list[Any], database: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(partner, event, payload) of each delivery; eventId and eventKey derive from the resume token."""
    return [
        (d.partner_id, d.event, {k: v for k, v in d.payload.items() if k not in ("eventId", "eventKey")})
        for d in deliveries_of(distill(items, MongoLookups(database)))
    ]


def replay(recorded: Recorded) -> tuple[str, Any]:
    """The feed's line for the recorded change's write, and the database after it."""
    database = seeded_database(recorded)
    produced: list[dict[str, Any]] = []
    with ChangeFeed(database) as feed:
        feed.subscribe(produced.append)
        apply_write(database, recorded)
    assert len(produced) == 1, f"{recorded.origin}: {len(produced)} events for one write"
    return serialise(produced[0]), database


@pytest.mark.parametrize("recorded", RECORDED, ids=[r.origin for r in RECORDED])
def test_a_write_produces_the_recorded_change_event_and_the_same_deliveries(recorded):
    line, database = replay(recorded)

    raw = json.loads(line)
    assert TOKEN.fullmatch(raw["_id"]["_data"]) and set(raw["_id"]) == {"_data"}
    timestamp = raw["clusterTime"]["$timestamp"]
    assert set(raw["clusterTime"]) == {"$timestamp"} and set(timestamp) == {"t", "i"}
    assert all(type(v) is int and v > 0 for v in timestamp.values())
    assert set(raw["wallTime"]) == {"$date"} and isinstance(raw["wallTime"]["$date"], str)
    assert raw["ns"] == {"db": "privateauto", "coll": recorded.change["ns"]["coll"]}
    produced, expected = parse_json(line), recorded.change
    assert produced["operationType"] == expected["operationType"]
    assert id_string(produced["documentKey"]["_id"]) == id_string(expected["documentKey"]["_id"])
    if expected["operationType"] == "delete":
        assert set(produced) == {"_id", "operationType", "clusterTime", "wallTime", "ns", "documentKey"}
    elif expected.get("fullDocument") is not None:
        assert produced["fullDocument"] == expected["fullDocument"]
    if expected["operationType"] == "update":
        assert produced["updateDescription"] == {
            "updatedFields": expected["updateDescription"]["updatedFields"],
            "removedFields": expected["updateDescription"].get("removedFields") or [],
            "truncatedArrays": [],
        }
        assert produced["fullDocumentBeforeChange"] == recorded.pre_image
    elif expected["operationType"] == "insert":
        assert "updateDescription" not in produced and "fullDocumentBeforeChange" not in produced

    from_recording = deliveries(list(change_events_from(expected, "recorded")), database)
    from_feed = deliveries(list(change_events_from_text(line, "feed")), database)
    assert from_feed == from_recording


def test_the_replayed_flows_cover_every_operation_and_produce_partner_events():
    """The comparison above is not vacuous: the flows exercise inserts, updates (dotted, array
    positions, whole subdocuments) and deletes, and their writes distil into partner events."""
    operations = {r.change["operationType"] for r in RECORDED}
    updated_paths = {p for r in RECORDED for p in r.change.get("updateDescription", {}).get("updatedFields", {})}
    events: set[str] = set()
    for recorded in RECORDED:
        line, database = replay(recorded)
        events.update(event for _, event, _ in deliveries(list(change_events_from_text(line, "feed")), database))

    assert operations == {"insert", "update", "delete"}
    assert {"dealState", "dealState.seller.status", "manualSignatures.1.signedAt"} <= updated_paths
    assert {"listing.created", "offer.created", "offer.accepted", "deal.created", "document.completed"} <= events


@pytest.mark.parametrize(
    ("before", "after", "written", "expected"),
    [
        pytest.param({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, (), ({"a.c": 3}, [], []), id="diff-dotted"),
        pytest.param(
            {"a": 1, "d": 1},
            {"a": {"b": 1}, "e": 2},
            (),
            ({"a": {"b": 1}, "e": 2}, ["d"], []),
            id="diff-retyped-new-removed",
        ),
        pytest.param(
            {"s": [{"at": None}, {"at": None}, {"at": None}]},
            {"s": [{"at": 5}, {"at": None}]},
            (),
            ({"s.0.at": 5}, [], [{"field": "s", "newSize": 2}]),
            id="diff-array-position-and-truncation",
        ),
        pytest.param(
            {"n": 1, "o": {"x": 1, "y": 2}},
            {"n": True, "o": {"y": 2, "x": 1}},
            (),
            ({"n": True, "o": {"y": 2, "x": 1}}, [], []),
            id="diff-bson-types-and-key-order",
        ),
        pytest.param(
            {"deal": {"buyer": "invited", "seller": "joined"}},
            {"deal": {"buyer": "joined", "seller": "joined"}},
            (("$set", "deal"),),
            ({"deal": {"buyer": "joined", "seller": "joined"}}, [], []),
            id="set-whole-parent",
        ),
        pytest.param(
            {"x": 1},
            {"x": 1, "o": {"a": 1, "b": 2}},
            (("$set", "o.a"), ("$set", "o.b")),
            ({"o.a": 1, "o.b": 2}, [], []),
            id="set-paths-under-a-created-parent",
        ),
        pytest.param(
            {"s": [{"at": None}, {"at": None}]},
            {"s": [{"at": None}, {"at": 7}]},
            (("$set", "s.$.at"),),
            ({"s.1.at": 7}, [], []),
            id="positional-set",
        ),
        pytest.param(
            {"s": [1]}, {"s": [1, 2, 3]}, (("$push", "s"),), ({"s.1": 2, "s.2": 3}, [], []), id="push-appends"
        ),
        pytest.param({"s": []}, {"s": [1]}, (("$push", "s"),), ({"s": [1]}, [], []), id="push-to-empty-is-whole"),
        pytest.param({"s": [1, 2, 3]}, {"s": [2, 3]}, (("$pop", "s"),), ({"s": [2, 3]}, [], []), id="pop-is-whole"),
        pytest.param({"a": 1, "b": 2}, {"b": 2}, (("$unset", "a"),), ({}, ["a"], []), id="unset"),
    ],
)
def test_update_description_reads_like_mongos(before, after, written, expected):
    updated, removed, truncated = expected

    assert update_description(before, after, written) == {
        "updatedFields": updated,
        "removedFields": removed,
        "truncatedArrays": truncated,
    }


def fresh_database() -> Any:
    return mongomock.MongoClient(tz_aware=True)["privateauto"]


def test_replaces_upserts_and_multi_document_writes_are_one_event_per_document():
    database = fresh_database()
    database["offers"].insert_many([{"_id": 1, "n": 0}, {"_id": 2, "n": 0}])
    produced: list[dict[str, Any]] = []
    with ChangeFeed(database) as feed:
        feed.subscribe(produced.append)
        database["offers"].update_many({}, {"$inc": {"n": 1}})
        database["offers"].replace_one({"_id": 1}, {"m": 1})
        database["offers"].update_one({"_id": 3}, {"$set": {"n": 1}}, upsert=True)
        database["offers"].update_one({"_id": 3}, {"$set": {"n": 1}})  # no change: no event
        database["leads"].insert_one({"_id": 9})  # not watched
        database["offers"].delete_many({})
    database["offers"].insert_one({"_id": 4})  # after close

    assert [(c["operationType"], c["documentKey"]["_id"]) for c in produced] == [
        ("update", 1),
        ("update", 2),
        ("replace", 1),
        ("insert", 3),
        ("delete", 1),
        ("delete", 2),
        ("delete", 3),
    ]
    replace = produced[2]
    assert replace["fullDocument"] == {"_id": 1, "m": 1} and replace["fullDocumentBeforeChange"] == {"_id": 1, "n": 1}
    assert "updateDescription" not in replace


def test_other_databases_are_untouched_and_one_database_has_one_feed():
    watched, other = fresh_database(), mongomock.MongoClient()["privateauto"]
    produced: list[dict[str, Any]] = []
    with ChangeFeed(watched) as feed:
        feed.subscribe(produced.append)
        other["offers"].insert_one({"_id": 1})
        with pytest.raises(RuntimeError, match="already has a change feed"):
            ChangeFeed(watched)

    assert produced == [] and other["offers"].count_documents({}) == 1


def test_capture_reports_what_bypassed_the_write_methods():
    database = fresh_database()
    database["deals"].insert_many([{"_id": 1}, {"_id": 2}])
    with ChangeFeed(database) as feed:
        database.drop_collection("deals")  # not one of the write primitives
        captured = feed.capture()

    assert [(c["operationType"], c["documentKey"]["_id"]) for c in captured] == [("delete", 1), ("delete", 2)]


def test_concurrent_writers_lose_and_double_nothing_and_tokens_increase():
    database = fresh_database()
    writers, writes = 8, 25
    produced: list[dict[str, Any]] = []
    start = threading.Barrier(writers)

    def write(worker: int) -> None:
        start.wait()
        collection = database["offers" if worker % 2 else "seller_listings"]
        collection.insert_one({"_id": f"w{worker}", "n": 0})
        for n in range(1, writes):
            collection.update_one({"_id": f"w{worker}"}, {"$set": {"n": n}})

    with ChangeFeed(database) as feed:
        feed.subscribe(produced.append)
        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert len(produced) == writers * writes
    tokens = [c["_id"]["_data"] for c in produced]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    times = [(c["clusterTime"].time, c["clusterTime"].inc) for c in produced]
    assert times == sorted(times) and len(set(times)) == len(times)
    for worker in range(writers):
        mine = [c for c in produced if c["documentKey"]["_id"] == f"w{worker}"]
        assert [c["operationType"] for c in mine] == ["insert"] + ["update"] * (writes - 1)
        assert [c["fullDocument"]["n"] for c in mine] == list(range(writes))
        assert all(c["updateDescription"]["updatedFields"] == {"n": c["fullDocument"]["n"]} for c in mine[1:])


def test_serialised_changes_are_read_back_by_the_ingest_path_as_recorded_lines_are():
    database = fresh_database()
    lines: list[str] = []
    with ChangeFeed(database) as feed:
        feed.subscribe(lambda change: lines.append(serialise(change)))
        database["deals"].insert_one({"_id": ObjectId("66240a11c3d9e40000000099"), "status": "active"})
        database["deals"].update_one({"status": "active"}, {"$set": {"dealState.buyer.status": "joined"}})

    events = [e for line in lines for e in change_events_from_text(line, "feed")]
    assert [(e.operation_type, e.collection, e.source) for e in events] == [
        ("insert", "deals", "change-stream"),
        ("update", "deals", "change-stream"),
    ]
    assert events[1].updated_fields == {"dealState.buyer.status": "joined"}  # the path the write named
    assert "\n" not in lines[0] and lines[0].startswith('{"_id":{"_data":"82')


# --- `distiller api --deliver` -------------------------------------------------------------------

BAYSIDE_ORG, BAYSIDE_USER = "663a1f2b4e8c9a001234bcde", "6614a0c1e4b0a10000000b01"


def sell_writes(now: dt.datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """What POST /sell/bayside-auto writes: a draft stub listing for the VIN, and a dealNowPending offer on it."""
    listing = {
        "_id": ObjectId(),
        "title": "2021 Honda Civic EX",
        "status": "draft",
        "vehicle": {"year": 2021, "make": "Honda", "model": "Civic", "trim": "EX", "vin": "1HGBH41JXMN109186"},
        "appSource": "bayside-auto",
        "price": 18500,
        "createdAt": now,
        "updatedAt": now,
    }
    offer = {
        "_id": ObjectId(),
        "guid": "0c6f3d4e-2a1b-4c5d-9e8f-7a6b5c4d3e2f",
        "dealId": ObjectId(),
        "status": "dealNowPending",
        "currency": "USD",
        "price": 18500,
        "listingId": listing["_id"],
        "appSource": "bayside-auto",
        "offeredByOrganizationId": ObjectId(BAYSIDE_ORG),
        "offeredByUserId": ObjectId(BAYSIDE_USER),
        "createdAt": now,
        "updatedAt": now,
    }
    return listing, offer


def test_a_write_through_the_api_server_reaches_the_partner_as_signed_verified_webhooks(receiver, tmp_path):  # noqa: F811
    hooks, accepted = receiver
    # Every partner at the loopback receiver, with its secret: nothing may leave this machine.
    partners_file = local_partners(tmp_path, lambda partner_id: f"{hooks.url}/{partner_id}")
    partners = json.loads(partners_file.read_text())
    database = in_memory_database(partners, WORLD)
    attempts_log, changes, report = tmp_path / "attempts.jsonl", io.StringIO(), io.StringIO()
    endpoint_before = os.environ.get("AWS_ENDPOINT_URL")
    settings = DeliverySettings(retry_delays="1,1,1", allow_private_endpoints=True, log=attempts_log)
    server = start(0, database, partners, io.StringIO(), changes_out=changes, delivery=settings, report_out=report)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        listing, offer = sell_writes(dt.datetime.now(dt.UTC))
        # A stand-in for POST /sell (its route writes exactly these two documents, through the same database).
        database["seller_listings"].insert_one(listing)
        database["offers"].insert_one(offer)
        assert server.delivery is not None and server.delivery.wait_idle(timeout=60), report.getvalue()
    finally:
        server.shutdown()
        server.server_close()

    received = [json.loads(line) for line in accepted.getvalue().splitlines()]
    bayside = sorted(r["event"] for r in received if r["partner"] == "bayside-auto")
    assert bayside == ["listing.created", "offer.created"], report.getvalue()
    attempts = [json.loads(line) for line in attempts_log.read_text().splitlines()]
    assert sorted((a["partnerId"], a["eventId"]) for a in attempts) == sorted(
        (r["partner"], r["eventId"]) for r in received
    )  # every attempt delivered at once, and each one verified by the receiver
    assert all(a["status"] == "delivered" and a["statusCode"] == 200 for a in attempts)
    by_event = {a["event"]: a["payload"] for a in attempts if a["partnerId"] == "bayside-auto"}
    assert by_event["listing.created"]["id"] == str(listing["_id"])
    assert by_event["offer.created"]["id"] == str(offer["_id"])
    assert by_event["offer.created"]["listingId"] == str(listing["_id"])
    assert "listing.created" in report.getvalue() and "total" in report.getvalue()
    assert os.environ.get("AWS_ENDPOINT_URL") == endpoint_before  # the pipeline's environment is undone

    lines = changes.getvalue().splitlines()
    assert [(json.loads(x)["operationType"], json.loads(x)["ns"]["coll"]) for x in lines] == [
        ("insert", "seller_listings"),
        ("insert", "offers"),
    ]
    # `--changes` lines replay through `distiller distill` into the very deliveries that were made.
    changes_file = tmp_path / "changes.jsonl"
    changes_file.write_text(changes.getvalue())
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(
            ["distill", "--partners", str(partners_file), "--world", str(EVENTS / "world.json"), str(changes_file)]
        )
    assert code == 0, stderr.getvalue()
    replayed = sorted((d["partnerId"], d["eventId"]) for d in map(json.loads, stdout.getvalue().splitlines()))
    assert replayed == sorted((a["partnerId"], a["eventId"]) for a in attempts)


def test_without_a_feed_the_api_server_writes_no_events():
    database = in_memory_database(PARTNERS, WORLD)
    server = start(0, database, PARTNERS, io.StringIO())
    try:
        assert server.feed is None and server.delivery is None
        with ChangeFeed(database) as feed:  # the database is free for a feed of its own
            assert feed.capture() == []
    finally:
        server.server_close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(["--log", "x.jsonl"], "distiller: --log: only with --deliver\n", id="log-without-deliver"),
        pytest.param(
            ["--log", "x.jsonl", "--retry-delays", "1"],
            "distiller: --retry-delays, --log: only with --deliver\n",
            id="delivery-options-without-deliver",
        ),
    ],
)
def test_api_delivery_options_need_deliver(options, message):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["api", "--port", "0", "--partners", str(EVENTS / "partners.json"), *options])

    assert (code, stderr.getvalue()) == (2, message)


def test_api_refuses_bad_retry_delays_and_an_unwritable_changes_file(tmp_path):
    base = ["api", "--port", "0", "--partners", str(EVENTS / "partners.json")]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        bad_delays = main([*base, "--deliver", "--retry-delays", "1,soon"])
        unwritable = main([*base, "--changes", str(tmp_path / "missing" / "changes.jsonl")])

    assert bad_delays == 2 and unwritable == 2
    first, second = stderr.getvalue().splitlines()
    assert first.startswith("distiller: ") and "soon" in first
    assert second == f"distiller: {tmp_path / 'missing' / 'changes.jsonl'}: cannot open: No such file or directory"
