"""The distill path's line reader (`change_events_in_text`) gives what the general route gives."""

import json

import pytest

from distiller.core import ejson
from distiller.core.lazy_ejson import loads_change_line
from distiller.core.model import ChangeEvent, RecordError
from distiller.ingest.sources import SourceError, _decoding, change_events_from, change_events_in_text, lambda_records

OID = "64a1f2e3b5c8d90012345678"
CHANGE = {
    "_id": {"_data": "82AA01"},
    "operationType": "update",
    "clusterTime": {"$timestamp": {"t": 1776780000, "i": 1}},
    "ns": {"db": "privateauto", "coll": "offers"},
    "documentKey": {"_id": {"$oid": OID}},
    "updateDescription": {"updatedFields": {"status": "accepted"}, "removedFields": []},
    "fullDocument": {"_id": {"$oid": OID}, "status": "accepted"},
}
EB = "MongoDB Database Trigger for privateauto.offers"


def variants() -> list[object]:
    broken = [
        {**CHANGE, "operationType": 5},
        {**CHANGE, "_id": {}},
        {**CHANGE, "ns": {}},
        {**CHANGE, "ns": {"$oid": "zz"}},
        {**CHANGE, "updateDescription": None},
        {**CHANGE, "updateDescription": {"updatedFields": [], "removedFields": []}},
        {**CHANGE, "fullDocument": 3},
        {**CHANGE, "events": 1},
    ]
    shapes = [CHANGE, *broken]
    lines: list[object] = [*shapes, *({"detail-type": EB, "detail": s} for s in shapes)]
    lines += [
        {"detail-type": EB, "detail": 5},
        {"detail-type": "other", "detail": CHANGE},
        {"eventSource": "aws:docdb", "events": [{"event": CHANGE}, {"event": broken[0]}, {}]},
        {"Records": [{"body": json.dumps(CHANGE), "messageId": "m1"}, {"body": 5}]},
        {"body": json.dumps(CHANGE), "messageId": "m2"},
        {"neither": 1},
        [CHANGE],
        "text",
    ]
    return lines


def described(items) -> list[object]:
    return [repr(item) if isinstance(item, RecordError) else (item.collection, item.resume_token) for item in items]


@pytest.mark.parametrize("value", variants(), ids=lambda v: json.dumps(v)[:60])
@pytest.mark.parametrize("lazy", [True, False])
def test_the_line_reader_gives_what_the_general_route_gives(value, lazy):
    line = json.dumps(value)

    fast = change_events_in_text(line, "line 1", lazy=lazy)
    try:  # the general route: parse, then `change_events_from`'s dispatch
        parsed = _decoding(loads_change_line if lazy else ejson.loads, line)
    except SourceError as exc:
        general = [RecordError("line 1", str(exc))]
    else:
        general = list(change_events_from(parsed, "line 1", lazy=lazy))

    assert described(fast) == described(general)
    assert [type(item) for item in fast] == [type(item) for item in general]


def test_unread_envelope_wrappers_no_longer_reject_a_line():
    """docs/assumptions.md: clusterTime, wallTime, lsid and txnNumber are not decoded on the distill path."""
    line = json.dumps({**CHANGE, "clusterTime": {"$timestamp": 5}, "wallTime": {"$date": "soon"}})

    [lazy] = change_events_in_text(line, "line 1", lazy=True)
    [eager] = change_events_in_text(line, "line 1")

    assert isinstance(lazy, ChangeEvent) and lazy.collection == "offers"
    assert isinstance(eager, RecordError) and "invalid Extended JSON" in eager.reason


def test_an_sqs_body_in_a_lambda_event_is_read_as_the_cli_reads_a_line():
    body = json.dumps({**CHANGE, "clusterTime": {"$timestamp": 5}})
    event = {"Records": [{"eventSource": "aws:sqs", "messageId": "m1", "body": body}]}

    [record] = lambda_records(event)

    assert [type(item) for item in record.items] == [ChangeEvent]
    assert described(record.items) == described(change_events_in_text(body, "x", lazy=True))
