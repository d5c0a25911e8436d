"""`change_line.change_events_of_line` (the distill path's one-pass reader) gives exactly what the
general route (`loads_change_line`, then `change_events_from`'s checks) gives, or steps aside."""

import json
import math

import pytest
from bson import ObjectId

from distiller.core import change_line
from distiller.core.lazy_ejson import ExtendedJSONError, LazyDocument
from distiller.core.model import ChangeEvent, RecordError
from distiller.ingest import sources
from distiller.ingest.sources import change_events_in_text

OID = "64a1f2e3b5c8d90012345678"
CHANGE = {
    "_id": {"_data": "82AA01"},
    "operationType": "update",
    "clusterTime": {"$timestamp": {"t": 1776780000, "i": 1}},
    "wallTime": {"$date": "2026-04-01T13:00:00.824Z"},
    "ns": {"db": "privateauto", "coll": "offers"},
    "documentKey": {"_id": {"$oid": OID}},
    "updateDescription": {
        "updatedFields": {"status": "accepted", "respondedAt": {"$date": "2026-04-01T13:00:00.824Z"}},
        "removedFields": ["note"],
        "truncatedArrays": [],
    },
    "fullDocument": {"_id": {"$oid": OID}, "status": "accepted", "buyer": {"id": {"$oid": OID}}},
    "fullDocumentBeforeChange": {"_id": {"$oid": OID}, "status": "pending"},
}
PLAIN = {**CHANGE, "clusterTime": 1, "wallTime": None, "documentKey": {"_id": OID}}
PLAIN["updateDescription"] = {"updatedFields": {"status": "accepted"}, "removedFields": []}
PLAIN["fullDocument"] = {"_id": OID, "status": "accepted"}
PLAIN["fullDocumentBeforeChange"] = None
EB = "MongoDB Database Trigger for privateauto.offers"

BROKEN: list[dict[str, object]] = [
    {**CHANGE, "operationType": 5},
    {**CHANGE, "operationType": ""},
    {**CHANGE, "_id": {}},
    {**CHANGE, "_id": {"_data": "82\n"}},
    {**CHANGE, "_id": {"_data": "82", "when": {"$date": "soon"}}},
    {**CHANGE, "_id": {"$oid": OID}},
    {**CHANGE, "ns": {}},
    {**CHANGE, "ns": {"$oid": "zz"}},
    {**CHANGE, "ns": {"db": "x", "coll": {"$oid": OID}}},
    {**CHANGE, "documentKey": {"_id": {"$oid": "zz"}}},
    {**CHANGE, "documentKey": {}},
    {**CHANGE, "documentKey": {}, "fullDocument": {"_id": {"$oid": "zz"}}},
    {**CHANGE, "documentKey": {}, "fullDocument": {"status": "x"}},
    {**CHANGE, "updateDescription": None},
    {**CHANGE, "updateDescription": {"$oid": OID}},
    {**CHANGE, "updateDescription": {"updatedFields": [], "removedFields": []}},
    {**CHANGE, "updateDescription": {"updatedFields": None, "removedFields": None}},
    {**CHANGE, "updateDescription": {"updatedFields": {}, "removedFields": [1]}},
    {**CHANGE, "updateDescription": {"updatedFields": {}, "removedFields": "a"}},
    {**CHANGE, "updateDescription": {"updatedFields": {"$date": 1}}},
    {**CHANGE, "updateDescription": {"updatedFields": {"a": 1}, "truncatedArrays": [{"$date": "soon"}]}},
    {**CHANGE, "operationType": "insert", "updateDescription": [{"$date": "soon"}]},
    {**CHANGE, "operationType": "insert", "updateDescription": {"updatedFields": 5}},
    {**CHANGE, "operationType": "delete", "fullDocument": None, "fullDocumentBeforeChange": None},
    {**CHANGE, "operationType": "drop", "documentKey": None, "fullDocument": None},
    {**CHANGE, "fullDocument": 3},
    {**CHANGE, "fullDocument": [1]},
    {**CHANGE, "fullDocument": {"$oid": OID}},
    {**CHANGE, "fullDocumentBeforeChange": "x"},
    {**CHANGE, "fullDocument": {"_id": {"$oid": OID}, "when": {"$date": "soon"}}},  # never read here
    {**CHANGE, "clusterTime": {"$timestamp": 5}, "wallTime": {"$date": "soon"}, "lsid": {"$oid": "z"}},
    {**CHANGE, "extra": {"$date": "soon"}},
    {**CHANGE, "extra": {"at": {"$date": "2026-04-01T13:00:00.824Z"}}},
    {**CHANGE, "events": 1},
    {**CHANGE, "detail": {}},
    {**CHANGE, "amount": 123456789012345678901234},
]


def variants() -> list[object]:
    shapes: list[object] = [CHANGE, PLAIN, *BROKEN]
    lines: list[object] = [*shapes]
    lines += [{"detail-type": EB, "detail": s, "resources": ["arn"]} for s in shapes]
    lines += [
        {"detail-type": EB, "detail": 5},
        {"detail-type": EB, "detail": {**CHANGE, "ns": {}}},  # the collection from the detail-type
        {"detail-type": 7, "detail": CHANGE},
        {"detail-type": EB, "detail": CHANGE, "resources": [{"$date": "soon"}]},
        {"detail-type": EB, "detail": CHANGE, "eventSource": "aws:docdb"},
        {"detail-type": EB, "detail": {"$oid": OID}},
        {"eventSource": "aws:docdb", "events": [{"event": CHANGE}, {"event": PLAIN}]},
        {"eventSource": "aws:docdb", "events": [{"event": CHANGE}, {"event": BROKEN[0]}, {}]},
        {"eventSource": "aws:docdb", "events": [{"event": CHANGE, "at": {"$date": "soon"}}]},
        {"eventSource": "aws:docdb", "events": {"event": CHANGE}},
        {"eventSource": "aws:docdb", "events": [CHANGE]},
        {"eventSource": "aws:docdb", "eventSourceArn": {"$oid": "zz"}, "events": [{"event": CHANGE}]},
        {"Records": [{"body": json.dumps(CHANGE), "messageId": "m1"}]},
        {"body": json.dumps(CHANGE), "messageId": "m2"},
        {"$oid": OID, "operationType": "insert"},
        {"neither": 1},
        [CHANGE],
        "text",
    ]
    return lines


def plain_value(value: object) -> object:
    """A document's fields as the pipeline would read them (a malformed one: its error's text)."""
    if not isinstance(value, LazyDocument):
        return value
    fields: dict[str, object] = {}
    for key in dict.keys(value):
        try:
            fields[key] = value[key]
        except ExtendedJSONError as exc:
            fields[key] = ("error", str(exc))
    return fields


def described(items: list[ChangeEvent | RecordError]) -> list[object]:
    """Every field, documents decoded, and the kind of each (lazy or plain) as the pipeline sees it."""
    out: list[object] = []
    for item in items:
        if isinstance(item, RecordError):
            out.append(item)
            continue
        documents = (item.full_document, item.before, item.updated_fields)
        out.append(
            (
                item.resume_token,
                item.operation_type,
                item.collection,
                type(item.document_id),
                item.document_id,
                [type(d) for d in documents],
                [plain_value(d) for d in documents],
                item.removed_fields,
                item.source,
                item.origin,
            )
        )
    return out


def general_route(
    line: str, monkeypatch: pytest.MonkeyPatch, origin: str = "line 1"
) -> list[ChangeEvent | RecordError]:
    with monkeypatch.context() as patch:
        patch.setattr(sources, "change_events_of_line", lambda text, origin: None)
        return change_events_in_text(line, origin, lazy=True)


@pytest.mark.parametrize("value", variants(), ids=lambda v: json.dumps(v)[:70])
def test_the_one_pass_reader_gives_what_the_general_route_gives(value, monkeypatch):
    line = json.dumps(value)

    assert described(change_events_in_text(line, "line 1", lazy=True)) == described(general_route(line, monkeypatch))


@pytest.mark.parametrize("value", [CHANGE, PLAIN, {"detail-type": EB, "detail": CHANGE}])
def test_the_common_shapes_are_read_in_one_pass(value):
    [change] = change_line.change_events_of_line(json.dumps(value), "line 1") or []

    assert change.collection == "offers" and change.resume_token == "82AA01"
    assert change.document_id == (ObjectId(OID) if value is not PLAIN else OID)
    assert type(change.full_document) is (dict if value is PLAIN else LazyDocument)


@pytest.mark.parametrize(
    "line",
    [
        json.dumps({**CHANGE, "documentKey": {"_id": {"$oid": "zz"}}}),  # malformed: the general route words it
        json.dumps({**CHANGE, "amount": 123456789012345678901234}),  # json reads it exactly, orjson does not
        json.dumps({**CHANGE, "amount": math.nan}),  # json's text, orjson refuses it
        '{"operationType": "insert", "_id": {"_data": "\\ud800"}}',  # a lone surrogate
        "{not json",
    ],
)
def test_lines_it_does_not_vouch_for_take_the_general_route(line):
    assert change_line.change_events_of_line(line, "line 1") is None


def test_a_malformed_wrapper_in_a_read_field_is_still_a_clear_record_error():
    line = json.dumps({**CHANGE, "documentKey": {"_id": {"$oid": "zz"}}})

    [error] = change_events_in_text(line, "line 1", lazy=True)

    assert isinstance(error, RecordError) and "invalid Extended JSON" in error.reason


def test_the_whole_bench_stream_reads_alike(monkeypatch):
    from bench.distill_bench import Generator

    stream = Generator(7).stream(300)
    for origin, line in stream.lines:
        fast = change_line.change_events_of_line(line, origin)
        assert fast is not None, origin
        assert described(fast) == described(general_route(line, monkeypatch, origin)), origin
