"""Ingest adapters: every accepted shape normalises into the same `ChangeEvent`; bad input names field and place.

The shapes are the ones SOURCES.md describes: a pymongo change-stream dict, the same event as
relaxed or canonical Extended JSON, an Atlas Trigger via EventBridge (plain JSON or Extended
JSON), a DocumentDB event-source-mapping batch, and SQS records/batches wrapping any of them.
Every shape is built from one pymongo-style dict, so "the same change" really is the same.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from bson import Decimal128, Int64, ObjectId, Timestamp, json_util

from distiller.core.model import ChangeEvent, RecordError
from distiller.ingest.sources import change_events_from, change_events_from_text

# --------------------------------------------------------------------------------------------
# Shape builders (also used by test_properties.py)
# --------------------------------------------------------------------------------------------

RELAXED = json_util.RELAXED_JSON_OPTIONS
CANONICAL = json_util.CANONICAL_JSON_OPTIONS

FIELDS = (
    "resume_token",
    "operation_type",
    "collection",
    "document_id",
    "full_document",
    "before",
    "updated_fields",
    "removed_fields",
    "source",
)


def relaxed(value: Any) -> str:
    return json_util.dumps(value, json_options=RELAXED)


def canonical(value: Any) -> str:
    return json_util.dumps(value, json_options=CANONICAL)


def atlas_date(value: dt.datetime) -> str:
    """How an Atlas trigger without "Enable Extended JSON" writes a date: an ISO string."""
    value = value.astimezone(dt.UTC) if value.tzinfo else value
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def to_plain(value: Any) -> Any:
    """The plain-JSON rendering of an Atlas trigger: hex ObjectIds, string dates, clusterTime {T, I}."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dt.datetime):
        return atlas_date(value)
    if isinstance(value, Timestamp):
        return {"T": value.time, "I": value.inc}
    if isinstance(value, Int64):
        return int(value)
    if isinstance(value, Decimal128):
        return str(value)
    return value


def eventbridge(detail: dict[str, Any], collection: str = "deals", db: str = "privateauto") -> dict[str, Any]:
    """An Atlas Trigger event as EventBridge delivers it (`detail` is the change event)."""
    return {
        "version": "0",
        "id": "0d79f6d2-7c6b-2b43-0a2f-4b7e2c9f1a11",
        "detail-type": f"MongoDB Database Trigger for {db}.{collection}",
        "source": "aws.partner/mongodb.com/stitch.trigger/6614b0f2a1b2c3d4e5f60718",
        "account": "123456789012",
        "time": "2026-04-21T14:00:00Z",
        "region": "us-east-2",
        "resources": [],
        "detail": detail,
    }


def docdb(*events: Any) -> dict[str, Any]:
    """A DocumentDB event-source-mapping batch."""
    return {
        "eventSourceArn": "arn:aws:rds:us-east-1:123456789012:cluster:privateauto",
        "eventSource": "aws:docdb",
        "events": [{"event": e} for e in events],
    }


def sqs_record(body: str, message_id: str = "m-1") -> dict[str, Any]:
    """One SQS record as a Lambda SQS event source hands it over."""
    return {
        "messageId": message_id,
        "receiptHandle": f"AQEB{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1776780000000"},
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:distiller-ingest",
        "awsRegion": "us-east-2",
    }


def sqs_batch(*bodies: str) -> dict[str, Any]:
    return {"Records": [sqs_record(body, f"m-{i}") for i, body in enumerate(bodies)]}


def fields_of(event: ChangeEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in FIELDS}


def only(items: list[ChangeEvent | RecordError]) -> ChangeEvent | RecordError:
    assert len(items) == 1, items
    return items[0]


# --------------------------------------------------------------------------------------------
# One change, every shape
# --------------------------------------------------------------------------------------------

TOKEN = (
    "8263E4F1A0000000012B022C0100296E5A1004B1C2D3E4F5A6B7C8D9E0F1A2B3C4D5E6F746645F6964006464A1F2E3B5C8D900123456780004"
)
DEAL_ID = ObjectId("64a1f2e3b5c8d90012345678")
BUYER_ID = ObjectId("64a1f2e3b5c8d90012340001")
WHEN = dt.datetime(2026, 4, 21, 14, 0, 0, 123000, tzinfo=dt.UTC)
EARLIER = dt.datetime(2026, 4, 20, 9, 30, tzinfo=dt.UTC)

#: An update as `collection.watch(full_document="updateLookup", full_document_before_change=...)` yields it.
RAW_UPDATE: dict[str, Any] = {
    "_id": {"_data": TOKEN},
    "operationType": "update",
    "clusterTime": Timestamp(1776780000, 1),
    "wallTime": WHEN,
    "ns": {"db": "privateauto", "coll": "deals"},
    "documentKey": {"_id": DEAL_ID},
    "updateDescription": {
        "updatedFields": {
            "status": "sold",
            "dealState.buyer.status": "joined",
            "manualSignatures.1.signedAt": WHEN,
            "buyer.id": BUYER_ID,
        },
        "removedFields": ["pendingOffer", "dealState.seller.hold"],
        "truncatedArrays": [],
    },
    "fullDocument": {
        "_id": DEAL_ID,
        "status": "sold",
        "amount": 25000,
        "rate": 1.5,
        "createdAt": EARLIER,
        "buyer": {"id": BUYER_ID},
        "dealState": {"buyer": {"status": "joined"}},
        "manualSignatures": [{"signedAt": EARLIER}, {"signedAt": WHEN}],
        "tags": ["a", "b"],
    },
    "fullDocumentBeforeChange": {"_id": DEAL_ID, "status": "active", "pendingOffer": True, "createdAt": EARLIER},
}

#: What every Extended-JSON-preserving shape must normalise into (BSON types kept).
EXPECTED: dict[str, Any] = {
    "resume_token": TOKEN,
    "operation_type": "update",
    "collection": "deals",
    "document_id": DEAL_ID,
    "full_document": RAW_UPDATE["fullDocument"],
    "before": RAW_UPDATE["fullDocumentBeforeChange"],
    "updated_fields": RAW_UPDATE["updateDescription"]["updatedFields"],
    "removed_fields": ("pendingOffer", "dealState.seller.hold"),
}

#: The same change as an Atlas trigger in plain-JSON mode: ids are hex strings, dates are strings.
EXPECTED_PLAIN: dict[str, Any] = {
    **EXPECTED,
    "document_id": str(DEAL_ID),
    "full_document": to_plain(RAW_UPDATE["fullDocument"]),
    "before": to_plain(RAW_UPDATE["fullDocumentBeforeChange"]),
    "updated_fields": to_plain(RAW_UPDATE["updateDescription"]["updatedFields"]),
}


def without(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for key in keys:
        doc.pop(key, None)
    return doc


def plain_detail(raw: dict[str, Any]) -> dict[str, Any]:
    return to_plain(raw)


#: A DocumentDB stream has no pre-image.
RAW_DOCDB = without(RAW_UPDATE, "fullDocumentBeforeChange", "wallTime")
EXPECTED_DOCDB = {**EXPECTED, "before": None}

SHAPES = [
    # (id, feed the adapter a decoded dict or text, input, expected fields, source, origin)
    pytest.param("obj", RAW_UPDATE, EXPECTED, "change-stream", "line 1", id="pymongo-dict"),
    pytest.param("text", relaxed(RAW_UPDATE), EXPECTED, "change-stream", "line 1", id="relaxed-ejson"),
    pytest.param("text", canonical(RAW_UPDATE), EXPECTED, "change-stream", "line 1", id="canonical-ejson"),
    pytest.param(
        "text", json.dumps(eventbridge(to_plain(RAW_UPDATE))), EXPECTED_PLAIN, "eventbridge", "line 1",
        id="eventbridge-plain-json",
    ),
    pytest.param(
        "text", relaxed(eventbridge(RAW_UPDATE)), EXPECTED, "eventbridge", "line 1", id="eventbridge-relaxed-ejson"
    ),
    pytest.param(
        "text", canonical(eventbridge(RAW_UPDATE)), EXPECTED, "eventbridge", "line 1",
        id="eventbridge-canonical-ejson",
    ),
    pytest.param(
        "text", json.dumps(eventbridge(to_plain(without(RAW_UPDATE, "ns")))), EXPECTED_PLAIN, "eventbridge", "line 1",
        id="eventbridge-plain-collection-from-detail-type",
    ),
    pytest.param(
        "text", relaxed(eventbridge(without(RAW_UPDATE, "ns"))), EXPECTED, "eventbridge", "line 1",
        id="eventbridge-ejson-collection-from-detail-type",
    ),
    pytest.param("obj", eventbridge(RAW_UPDATE), EXPECTED, "eventbridge", "line 1", id="eventbridge-dict"),
    pytest.param("text", canonical(docdb(RAW_DOCDB)), EXPECTED_DOCDB, "docdb", "line 1 events[0]", id="docdb-batch"),
    pytest.param(
        "text", json.dumps(sqs_record(relaxed(RAW_UPDATE))), EXPECTED, "change-stream", "line 1 (messageId m-1)",
        id="sqs-record-relaxed-ejson",
    ),
    pytest.param(
        "text", json.dumps(sqs_record(canonical(RAW_UPDATE))), EXPECTED, "change-stream", "line 1 (messageId m-1)",
        id="sqs-record-canonical-ejson",
    ),
    pytest.param(
        "text", json.dumps(sqs_record(json.dumps(eventbridge(to_plain(RAW_UPDATE))))), EXPECTED_PLAIN, "eventbridge",
        "line 1 (messageId m-1)", id="sqs-record-eventbridge-plain",
    ),
    pytest.param(
        "text", json.dumps(sqs_record(relaxed(eventbridge(RAW_UPDATE)))), EXPECTED, "eventbridge",
        "line 1 (messageId m-1)", id="sqs-record-eventbridge-ejson",
    ),
    pytest.param(
        "text", json.dumps(sqs_record(canonical(docdb(RAW_DOCDB)))), EXPECTED_DOCDB, "docdb",
        "line 1 (messageId m-1) events[0]", id="sqs-record-docdb-batch",
    ),
    pytest.param(
        "text", json.dumps(sqs_batch(relaxed(RAW_UPDATE))), EXPECTED, "change-stream",
        "line 1 Records[0] (messageId m-0)", id="sqs-batch-of-one",
    ),
    pytest.param(
        "obj", sqs_batch(json.dumps(eventbridge(to_plain(RAW_UPDATE)))), EXPECTED_PLAIN, "eventbridge",
        "line 1 Records[0] (messageId m-0)", id="sqs-batch-dict-eventbridge",
    ),
]  # fmt: skip


def _feed(kind: str, value: Any, origin: str = "line 1") -> list[ChangeEvent | RecordError]:
    if kind == "obj":
        return list(change_events_from(value, origin))
    return list(change_events_from_text(value, origin))


@pytest.mark.parametrize(("kind", "value", "expected", "source", "origin"), SHAPES)
def test_every_shape_normalises_into_the_same_change(kind, value, expected, source, origin):
    event = only(_feed(kind, value))

    assert isinstance(event, ChangeEvent), event
    assert fields_of(event) == {**expected, "source": source}
    assert event.origin == origin


@pytest.mark.parametrize(("kind", "value", "expected", "source", "origin"), SHAPES)
def test_every_shape_also_reads_from_bytes(kind, value, expected, source, origin):
    text = value if kind == "text" else relaxed(value)

    event = only(list(change_events_from_text(text.encode("utf-8"), "line 1")))

    assert isinstance(event, ChangeEvent), event
    assert event.resume_token == TOKEN
    assert event.source == source


def test_extended_json_keeps_bson_types():
    event = only(list(change_events_from_text(canonical(RAW_UPDATE), "line 1")))

    assert isinstance(event, ChangeEvent)
    assert isinstance(event.document_id, ObjectId)
    assert event.full_document is not None
    assert event.full_document["createdAt"] == EARLIER
    assert event.full_document["createdAt"].tzinfo is not None, "dates come back timezone-aware"
    assert type(event.full_document["amount"]) is int
    assert type(event.full_document["rate"]) is float
    assert event.updated_fields["manualSignatures.1.signedAt"] == WHEN


def test_plain_json_trigger_keeps_ids_and_dates_as_strings():
    event = only(list(change_events_from_text(json.dumps(eventbridge(to_plain(RAW_UPDATE))), "line 1")))

    assert isinstance(event, ChangeEvent)
    assert event.document_id == "64a1f2e3b5c8d90012345678"
    assert event.full_document is not None
    assert event.full_document["createdAt"] == "2026-04-20T09:30:00.000Z"


def test_atlas_example_from_sources_md():
    """The EventBridge example of SOURCES.md, verbatim."""
    text = """{"version": "0", "id": "x", "detail-type": "MongoDB Database Trigger for privateauto.deals",
     "source": "aws.partner/mongodb.com/stitch.trigger/6614b0f2a1b2c3d4e5f60718", "time": "2026-04-21T14:00:00Z",
     "region": "us-east-2", "resources": [],
     "detail": {"_id": {"_data": "8263"}, "operationType": "update", "clusterTime": {"T": 1776780000, "I": 1},
                "ns": {"db": "privateauto", "coll": "deals"}, "documentKey": {"_id": "64a1f2e3b5c8d90012345678"},
                "updateDescription": {"updatedFields": {"status": "sold"}, "removedFields": [], "truncatedArrays": []},
                "fullDocument": {"_id": "64a1f2e3b5c8d90012345678", "status": "sold"}}}"""

    event = only(list(change_events_from_text(text, "line 1")))

    assert event == ChangeEvent(
        resume_token="8263",
        operation_type="update",
        collection="deals",
        document_id="64a1f2e3b5c8d90012345678",
        full_document={"_id": "64a1f2e3b5c8d90012345678", "status": "sold"},
        before=None,
        updated_fields={"status": "sold"},
        removed_fields=(),
        source="eventbridge",
        origin="line 1",
    )


def test_documentdb_example_from_sources_md():
    """The DocumentDB example of SOURCES.md, verbatim: `$timestamp` clusterTime, `$oid` ids."""
    text = """{"eventSourceArn": "arn:aws:rds:us-east-1:123456789012:cluster:privateauto", "eventSource": "aws:docdb",
     "events": [{"event": {"_id": {"_data": "0163eeb6e7000000090100000009000041e1"},
       "clusterTime": {"$timestamp": {"t": 1676588775, "i": 9}},
       "documentKey": {"_id": {"$oid": "63eeb6e7d418cd98afb1c1d7"}},
       "fullDocument": {"_id": {"$oid": "63eeb6e7d418cd98afb1c1d7"}, "status": "active"},
       "ns": {"db": "privateauto", "coll": "deals"}, "operationType": "insert"}}]}"""

    event = only(list(change_events_from_text(text, "line 4")))

    assert event == ChangeEvent(
        resume_token="0163eeb6e7000000090100000009000041e1",
        operation_type="insert",
        collection="deals",
        document_id=ObjectId("63eeb6e7d418cd98afb1c1d7"),
        full_document={"_id": ObjectId("63eeb6e7d418cd98afb1c1d7"), "status": "active"},
        source="docdb",
        origin="line 4 events[0]",
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            {"_id": {"_data": "82AA"}, "operationType": "insert", "ns": {"db": "privateauto", "coll": "offers"},
             "documentKey": {"_id": DEAL_ID}, "fullDocument": {"_id": DEAL_ID, "status": "pending"}},
            {"operation_type": "insert", "collection": "offers", "document_id": DEAL_ID,
             "full_document": {"_id": DEAL_ID, "status": "pending"}, "before": None, "updated_fields": {},
             "removed_fields": ()},
            id="insert",
        ),
        pytest.param(
            {"_id": {"_data": "82AA"}, "operationType": "replace", "ns": {"db": "privateauto", "coll": "users"},
             "documentKey": {"_id": DEAL_ID}, "fullDocument": {"_id": DEAL_ID, "email": "a@example.com"},
             "fullDocumentBeforeChange": {"_id": DEAL_ID}},
            {"operation_type": "replace", "collection": "users", "document_id": DEAL_ID,
             "full_document": {"_id": DEAL_ID, "email": "a@example.com"}, "before": {"_id": DEAL_ID},
             "updated_fields": {}, "removed_fields": ()},
            id="replace-with-pre-image",
        ),
        pytest.param(
            {"_id": {"_data": "82AA"}, "operationType": "delete", "ns": {"db": "privateauto", "coll": "deals"},
             "documentKey": {"_id": DEAL_ID}},
            {"operation_type": "delete", "collection": "deals", "document_id": DEAL_ID, "full_document": None,
             "before": None, "updated_fields": {}, "removed_fields": ()},
            id="delete",
        ),
        pytest.param(
            {"_id": {"_data": "82AA"}, "operationType": "update", "ns": {"db": "privateauto", "coll": "deals"},
             "documentKey": {"_id": DEAL_ID}, "updateDescription": {"updatedFields": {"status": "sold"}}},
            {"operation_type": "update", "collection": "deals", "document_id": DEAL_ID, "full_document": None,
             "before": None, "updated_fields": {"status": "sold"}, "removed_fields": ()},
            id="update-without-post-image-or-removedFields",
        ),
        pytest.param(
            {"_id": {"_data": "82AA"}, "operationType": "update", "ns": {"db": "privateauto", "coll": "deals"},
             "fullDocument": {"_id": DEAL_ID, "status": "sold"},
             "updateDescription": {"updatedFields": None, "removedFields": None}},
            {"operation_type": "update", "collection": "deals", "document_id": DEAL_ID,
             "full_document": {"_id": DEAL_ID, "status": "sold"}, "before": None, "updated_fields": {},
             "removed_fields": ()},
            id="update-id-from-fullDocument-null-descriptions",
        ),
        pytest.param(
            {"_id": {"_data": "82AA"}, "operationType": "invalidate", "ns": {"db": "privateauto", "coll": "deals"}},
            {"operation_type": "invalidate", "collection": "deals", "document_id": None, "full_document": None,
             "before": None, "updated_fields": {}, "removed_fields": ()},
            id="stream-event-without-document",
        ),
    ],
)  # fmt: skip
def test_each_operation_type_in_every_ejson_shape(raw, expected):
    """Operation types other than a full update, each through raw, relaxed, canonical, EventBridge, DocumentDB, SQS."""
    texts = [
        relaxed(raw),
        canonical(raw),
        relaxed(eventbridge(raw, collection=raw["ns"]["coll"])),
        canonical(docdb(raw)),
        json.dumps(sqs_record(relaxed(raw))),
    ]
    events = [only(list(change_events_from(raw, "o")))] + [
        only(list(change_events_from_text(text, "o"))) for text in texts
    ]

    for event in events:
        assert isinstance(event, ChangeEvent), event
        assert {k: v for k, v in fields_of(event).items() if k not in ("resume_token", "source")} == expected
        assert event.resume_token == "82AA"


def test_ns_wins_over_detail_type():
    event = only(list(change_events_from(eventbridge(RAW_UPDATE, collection="offers"), "line 1")))

    assert isinstance(event, ChangeEvent)
    assert event.collection == "deals"


def test_collection_from_detail_type_keeps_dots_in_the_collection_name():
    """Database names cannot contain dots; collection names can (`deals.archive`).

    Regression: `_eventbridge` once took `rpartition(".")[2]` of "privateauto.deals.archive"
    and read the collection as "archive"; it must split at the first dot.
    """
    detail = without(RAW_UPDATE, "ns")

    event = only(list(change_events_from(eventbridge(detail, collection="deals.archive"), "line 1")))

    assert isinstance(event, ChangeEvent)
    assert event.collection == "deals.archive"


def test_sqs_batch_of_every_shape_keeps_order_and_origins():
    batch = sqs_batch(
        relaxed(RAW_UPDATE),
        canonical(RAW_UPDATE),
        json.dumps(eventbridge(to_plain(RAW_UPDATE))),
        relaxed(eventbridge(RAW_UPDATE)),
        canonical(docdb(RAW_DOCDB, RAW_DOCDB)),
    )

    events = list(change_events_from_text(json.dumps(batch), "line 7"))

    assert [(e.source, e.origin) for e in events] == [
        ("change-stream", "line 7 Records[0] (messageId m-0)"),
        ("change-stream", "line 7 Records[1] (messageId m-1)"),
        ("eventbridge", "line 7 Records[2] (messageId m-2)"),
        ("eventbridge", "line 7 Records[3] (messageId m-3)"),
        ("docdb", "line 7 Records[4] (messageId m-4) events[0]"),
        ("docdb", "line 7 Records[4] (messageId m-4) events[1]"),
    ]
    assert all(isinstance(e, ChangeEvent) for e in events)
    assert fields_of(events[0]) == fields_of(events[1]) == {**EXPECTED, "source": "change-stream"}
    assert fields_of(events[2]) == {**EXPECTED_PLAIN, "source": "eventbridge"}
    assert fields_of(events[4]) == {**EXPECTED_DOCDB, "source": "docdb"}


def test_sqs_record_without_message_id_keeps_the_origin():
    record = sqs_record(relaxed(RAW_UPDATE))
    del record["messageId"]

    event = only(list(change_events_from(record, "line 2")))

    assert isinstance(event, ChangeEvent)
    assert event.origin == "line 2"


# --------------------------------------------------------------------------------------------
# Errors: reason names the field/problem, origin names where
# --------------------------------------------------------------------------------------------


def mutated(path: str, value: Any = ..., base: dict[str, Any] = RAW_UPDATE) -> dict[str, Any]:
    """`base` with the dotted `path` set to `value`, or deleted when `value` is omitted."""
    doc = copy.deepcopy(base)
    *parents, last = path.split(".")
    holder = doc
    for part in parents:
        holder = holder[part]
    if value is ...:
        del holder[last]
    else:
        holder[last] = value
    return doc


BAD_CHANGES = [
    # (change-stream document, substring of the reason)
    pytest.param(mutated("operationType"), "operationType", id="missing-operationType"),
    pytest.param(mutated("operationType", 5), "operationType: missing or not a string", id="operationType-not-str"),
    pytest.param(mutated("operationType", ""), "operationType: missing or not a string", id="operationType-empty"),
    pytest.param(mutated("_id._data"), "_id._data: missing resume token", id="missing-_id._data"),
    pytest.param(mutated("_id"), "_id._data: missing resume token", id="missing-_id"),
    pytest.param(mutated("_id._data", 42), "_id._data: missing resume token", id="_id._data-not-str"),
    pytest.param(mutated("ns.coll"), "ns.coll: missing collection name", id="missing-ns.coll"),
    pytest.param(mutated("ns"), "ns.coll: missing collection name", id="missing-ns"),
    pytest.param(mutated("ns.coll", ["deals"]), "ns.coll: missing collection name", id="ns.coll-not-str"),
    pytest.param(mutated("updateDescription"), "updateDescription: an update must carry an object",
                 id="update-without-updateDescription"),
    pytest.param(mutated("updateDescription", "x"), "updateDescription: an update must carry an object",
                 id="updateDescription-not-object"),
    pytest.param(mutated("updateDescription.updatedFields", "status=sold"),
                 "updateDescription.updatedFields: expected an object, got a string", id="updatedFields-string"),
    pytest.param(mutated("updateDescription.updatedFields", [["status", "sold"]]),
                 "updateDescription.updatedFields: expected an object, got an array", id="updatedFields-array"),
    pytest.param(mutated("updateDescription.removedFields", "pendingOffer"),
                 "updateDescription.removedFields: expected a list of field paths", id="removedFields-string"),
    pytest.param(mutated("updateDescription.removedFields", ["ok", 3]),
                 "updateDescription.removedFields: expected a list of field paths", id="removedFields-not-strings"),
    pytest.param(mutated("updateDescription.removedFields", {"pendingOffer": 1}),
                 "updateDescription.removedFields: expected a list of field paths", id="removedFields-object"),
    pytest.param(mutated("fullDocument", ["not", "a", "doc"]), "fullDocument: expected an object or null, got an array",
                 id="fullDocument-array"),
    pytest.param(mutated("fullDocument", "doc"), "fullDocument: expected an object or null, got a string",
                 id="fullDocument-string"),
    pytest.param(mutated("fullDocumentBeforeChange", 7), "fullDocumentBeforeChange: expected an object or null",
                 id="pre-image-not-object"),
    pytest.param(mutated("documentKey", base=without(RAW_UPDATE, "fullDocument")), "documentKey._id: missing",
                 id="no-document-id-anywhere"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "reason"), BAD_CHANGES)
def test_bad_change_stream_event(change, reason):
    error = only(list(change_events_from_text(relaxed(change), "line 7")))

    assert isinstance(error, RecordError), error
    assert reason in error.reason
    assert error.origin == "line 7"
    assert not error.retryable


@pytest.mark.parametrize(("change", "reason"), BAD_CHANGES)
def test_bad_change_inside_eventbridge(change, reason):
    detail = change if "ns" in change else {**change, "ns": {"db": "privateauto"}}
    event = {**eventbridge(detail), "detail-type": "something else"}

    error = only(list(change_events_from_text(relaxed(event), "line 7")))

    assert isinstance(error, RecordError), error
    assert ("detail." + reason) in error.reason
    assert error.origin == "line 7"


@pytest.mark.parametrize(("change", "reason"), BAD_CHANGES)
def test_bad_change_inside_documentdb_batch(change, reason):
    error = only(list(change_events_from_text(canonical(docdb(change)), "line 7")))

    assert isinstance(error, RecordError), error
    assert ("event." + reason) in error.reason
    assert error.origin == "line 7 events[0]"


@pytest.mark.parametrize(("change", "reason"), BAD_CHANGES)
def test_bad_change_inside_sqs_batch(change, reason):
    batch = sqs_batch(relaxed(RAW_UPDATE), relaxed(change), relaxed(RAW_UPDATE))

    results = list(change_events_from_text(json.dumps(batch), "line 7"))

    assert [type(r) for r in results] == [ChangeEvent, RecordError, ChangeEvent]
    assert reason in results[1].reason
    assert results[1].origin == "line 7 Records[1] (messageId m-1)"


BAD_TEXT = [
    # (text, substring of the reason, origin)
    pytest.param("{not json", "not valid JSON", "line 7", id="not-json"),
    pytest.param("", "not valid JSON", "line 7", id="empty"),
    pytest.param('{"operationType": "insert",', "not valid JSON: ", "line 7", id="truncated"),
    pytest.param("[1, 2]", "expected a JSON object, got an array", "line 7", id="json-array"),
    pytest.param('"insert"', "expected a JSON object, got a string", "line 7", id="json-string"),
    pytest.param("null", "expected a JSON object, got null", "line 7", id="json-null"),
    pytest.param("3", "expected a JSON object, got int", "line 7", id="json-number"),
    pytest.param('{"hello": "world"}', "not a recognisable change event", "line 7", id="unknown-object"),
    pytest.param(relaxed(mutated("documentKey._id", {"$oid": "zz"})), "invalid Extended JSON", "line 7",
                 id="bad-oid"),
    pytest.param(relaxed(mutated("fullDocument.createdAt", {"$date": "yesterday"})), "invalid Extended JSON",
                 "line 7", id="bad-date"),
    pytest.param(relaxed(mutated("fullDocument.amount", {"$numberLong": "many"})), "invalid Extended JSON",
                 "line 7", id="bad-numberLong"),
    pytest.param(relaxed(mutated("clusterTime", {"$timestamp": 5})), "invalid Extended JSON", "line 7",
                 id="bad-timestamp"),
    pytest.param(json.dumps({"eventSource": "aws:docdb", "events": {"event": {}}}),
                 "events: a DocumentDB batch must carry a list", "line 7", id="docdb-events-not-list"),
    pytest.param(json.dumps({"Records": [{"messageId": "m-0", "body": {"operationType": "insert"}}]}),
                 "body: an SQS record must carry a string body", "line 7 Records[0]", id="sqs-body-not-string"),
    pytest.param(json.dumps({"Records": [sqs_record("{oops", "m-0")]}), "body: not valid JSON",
                 "line 7 Records[0] (messageId m-0)", id="sqs-body-not-json"),
    pytest.param(json.dumps(sqs_record('{"_id": {"$oid": "zz"}}', "m-9")), "body: invalid Extended JSON",
                 "line 7 (messageId m-9)", id="sqs-body-bad-ejson"),
    pytest.param(json.dumps(sqs_record("[]", "m-9")), "expected a JSON object, got an array",
                 "line 7 (messageId m-9)", id="sqs-body-array"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "reason", "origin"), BAD_TEXT)
def test_bad_record(text, reason, origin):
    error = only(list(change_events_from_text(text, "line 7")))

    assert isinstance(error, RecordError), error
    assert reason in error.reason
    assert error.origin == origin
    assert str(error) == f"{origin}: {error.reason}"


def test_invalid_json_reason_says_where_the_parser_stopped():
    error = only(list(change_events_from_text('{"a": 1,\n "b": }', "line 7")))

    assert isinstance(error, RecordError)
    assert "line 2 column" in error.reason


def test_documentdb_batch_with_one_bad_entry_keeps_the_good_ones():
    bad_event = mutated("_id")
    batch = docdb(RAW_DOCDB, RAW_DOCDB, RAW_DOCDB, bad_event)
    batch["events"][1] = {"evnt": RAW_DOCDB}  # typo: no "event"
    batch["events"].append("not-an-entry")

    results = list(change_events_from_text(canonical(batch), "line 7"))

    assert [type(r).__name__ for r in results] == [
        "ChangeEvent",
        "RecordError",
        "ChangeEvent",
        "RecordError",
        "RecordError",
    ]
    assert results[1] == RecordError("line 7 events[1]", 'event: missing (expected {"event": {change event}})')
    assert results[3].origin == "line 7 events[3]"
    assert results[3].reason.startswith("event._id._data: missing resume token")
    assert results[4].origin == "line 7 events[4]"
    assert [r.origin for r in results if isinstance(r, ChangeEvent)] == ["line 7 events[0]", "line 7 events[2]"]


def test_sqs_batch_with_bad_records_keeps_the_good_ones():
    batch = {
        "Records": [
            sqs_record(relaxed(RAW_UPDATE), "m-1"),
            sqs_record('{"operationType": "insert", ', "m-2"),  # body is not JSON
            sqs_record(json.dumps(eventbridge(to_plain(RAW_UPDATE))), "m-3"),
            {"messageId": "m-4"},  # no body at all
            "garbage",
            sqs_record(canonical(docdb(RAW_DOCDB, {"bad": 1})), "m-6"),
            sqs_record(relaxed(mutated("ns")), "m-7"),
        ]
    }

    results = list(change_events_from_text(json.dumps(batch), "line 7"))

    summary = [(type(r).__name__, r.origin) for r in results]
    assert summary == [
        ("ChangeEvent", "line 7 Records[0] (messageId m-1)"),
        ("RecordError", "line 7 Records[1] (messageId m-2)"),
        ("ChangeEvent", "line 7 Records[2] (messageId m-3)"),
        ("RecordError", "line 7 Records[3]"),
        ("RecordError", "line 7 Records[4]"),
        ("ChangeEvent", "line 7 Records[5] (messageId m-6) events[0]"),
        ("RecordError", "line 7 Records[5] (messageId m-6) events[1]"),
        ("RecordError", "line 7 Records[6] (messageId m-7)"),
    ]
    assert results[1].reason.startswith("body: not valid JSON")
    assert results[3].reason == "body: an SQS record must carry a string body"
    assert results[4].reason == "body: an SQS record must carry a string body"
    assert results[6].reason.startswith("event.operationType")
    assert results[7].reason.startswith("ns.coll")


def test_the_briefs_example_origin():
    """`line 7 Records[1] (messageId m-2)`: line, batch position, and the message id to find it in SQS."""
    batch = {"Records": [sqs_record(relaxed(RAW_UPDATE), "m-1"), sqs_record("not json", "m-2")]}

    results = list(change_events_from_text(json.dumps(batch), "line 7"))

    assert isinstance(results[0], ChangeEvent)
    assert isinstance(results[1], RecordError)
    assert results[1].origin == "line 7 Records[1] (messageId m-2)"
    assert results[1].reason.startswith("body: not valid JSON: Expecting value")


def test_unknown_keys_are_listed_in_the_reason():
    error = only(list(change_events_from({"Detail": {}, "detailType": "x"}, "line 3")))

    assert isinstance(error, RecordError)
    assert error.reason.endswith("got keys: Detail, detailType")


# --------------------------------------------------------------------------------------------
# Text the parser must turn into a RecordError rather than an exception (found by test_properties)
# --------------------------------------------------------------------------------------------

NEVER_RAISE = [
    pytest.param('{"_id": {"$date": {"$numberLong": "999999999999999999"}}}', "invalid Extended JSON",
                 id="date-out-of-range-InvalidBSON"),
    pytest.param('{"amount": {"$numberDecimal": "lots"}}', "invalid Extended JSON",
                 id="bad-numberDecimal-InvalidOperation"),
    pytest.param('{"data": {"$binary": 5, "$type": "00"}}', "invalid Extended JSON",
                 id="legacy-binary-not-a-string-AttributeError"),
    pytest.param("[" * 100_000, "", id="deep-nesting-RecursionError"),
    pytest.param('{"a": ' + "[" * 5_000 + "]" * 5_000 + "}", "", id="deep-but-balanced-RecursionError"),
    pytest.param('{"$x": ' + "[" * 5_000 + "]" * 5_000 + "}", "", id="deep-ejson-RecursionError"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "reason"), NEVER_RAISE)
def test_unparseable_text_is_a_record_error_not_an_exception(text, reason):
    """Regression: `sources.parse_json` once caught only some of what `bson.json_util.loads` raises.

    `InvalidBSON` (a `$date` outside datetime's range), `decimal.InvalidOperation` (a bad
    `$numberDecimal`), `AttributeError` (legacy `$binary` that is not a string) and
    `RecursionError` (deeply nested arrays) escaped `change_events_from_text`: in the CLI they
    abort the whole run, in a Lambda they fail the whole batch.
    """
    results = list(change_events_from_text(text, "line 7"))

    error = only(results)
    assert isinstance(error, RecordError)
    assert error.reason
    assert reason in error.reason
    assert error.origin == "line 7"


def test_undecodable_bytes_say_utf8():
    """Regression: a UTF-8 decode error was reported as "invalid Extended JSON: 'utf-8' codec ...".

    `UnicodeDecodeError` is a `ValueError`, so an `except (..., ValueError, ...)` placed before
    `except UnicodeDecodeError` makes the "not UTF-8 text" branch unreachable.
    """
    error = only(list(change_events_from_text(b'{"operationType": "insert", "x": "\xff"}', "line 7")))

    assert isinstance(error, RecordError)
    assert error.reason.startswith("not UTF-8 text")


@pytest.mark.parametrize(
    ("description", "field"),
    [
        pytest.param({"updatedFields": [], "removedFields": []}, "updatedFields", id="updated-empty-list"),
        pytest.param({"updatedFields": 0, "removedFields": []}, "updatedFields", id="updated-zero"),
        pytest.param({"updatedFields": {}, "removedFields": ""}, "removedFields", id="removed-empty-string"),
        pytest.param({"updatedFields": {}, "removedFields": False}, "removedFields", id="removed-false"),
    ],
)
def test_falsy_non_null_update_descriptions_are_rejected_not_read_as_empty(description, field):
    raw = {
        "_id": {"_data": "82AA"},
        "operationType": "update",
        "ns": {"coll": "deals"},
        "documentKey": {"_id": "x"},
        "updateDescription": description,
    }

    [error] = list(change_events_from(raw, "line 2"))

    assert isinstance(error, RecordError)
    assert f"updateDescription.{field}" in error.reason
