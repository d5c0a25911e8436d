"""Lazy Extended JSON (`lazy_ejson.loads_lazy`) reads exactly what `ejson.loads` reads, field by field."""

import json
import math

import pytest
from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from distiller.core import ejson
from distiller.core.ejson import compact_json
from distiller.core.lazy_ejson import ExtendedJSONError, LazyDocument, loads_lazy
from distiller.core.model import ChangeEvent, RecordError
from distiller.core.pipeline import ChangeOutcome, distill
from distiller.core.transitions import Transitions
from distiller.ingest.sources import change_events_from_text

OID = "64a1f2e3b5c8d90012345678"
WRAPPERS = {
    "oid": {"$oid": OID},
    "relaxed_date": {"$date": "2026-04-21T14:00:00.123Z"},
    "canonical_date": {"$date": {"$numberLong": "1776780000123"}},
    "offset_date": {"$date": "2026-04-21T14:00:00+02:00"},
    "long": {"$numberLong": "5"},
    "int": {"$numberInt": "7"},
    "double": {"$numberDouble": "2.5"},
    "nan": {"$numberDouble": "NaN"},
    "decimal": {"$numberDecimal": "18500.00"},
    "timestamp": {"$timestamp": {"t": 1776780000, "i": 3}},
    "binary": {"$binary": {"base64": "AQID", "subType": "00"}},
    "uuid": {"$uuid": "00112233-4455-6677-8899-aabbccddeeff"},
    "regex": {"$regularExpression": {"pattern": "^a", "options": "i"}},
    "minkey": {"$minKey": 1},
    "undefined": {"$undefined": True},
    "nested": {"list": [{"$oid": OID}, {"a": {"$numberLong": "9"}}], "plain": {"b": 1}},
}


def change(full_document: dict, **extra) -> dict:
    return {
        "_id": {"_data": "82AA01"},
        "operationType": "insert",
        "clusterTime": {"$timestamp": {"t": 1776780000, "i": 1}},
        "ns": {"db": "privateauto", "coll": "offers"},
        "documentKey": {"_id": {"$oid": OID}},
        "fullDocument": full_document,
        **extra,
    }


def shapes(event: dict) -> dict[str, str]:
    """The same change as a raw line, an EventBridge event and a DocumentDB batch."""
    return {
        "change-stream": json.dumps(event),
        "eventbridge": json.dumps({"detail-type": "MongoDB Database Trigger for privateauto.offers", "detail": event}),
        "docdb": json.dumps({"eventSource": "aws:docdb", "events": [{"event": event}, {"event": event}]}),
    }


def typed(value):
    """A value with every leaf's type spelled out, so `1 == 1.0 == True` cannot hide a difference."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, repr(value))


def materialised(value):
    """A value with every lazy document in it decoded."""
    if isinstance(value, LazyDocument):
        return value.decoded()
    if isinstance(value, dict):
        return {k: materialised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialised(v) for v in value]
    return value


@pytest.mark.parametrize("shape", ["change-stream", "eventbridge", "docdb"])
def test_every_wrapper_reads_as_ejson_loads_decodes_it(shape):
    line = shapes(change(dict(WRAPPERS), fullDocumentBeforeChange=dict(WRAPPERS)))[shape]

    lazy, eager = loads_lazy(line), ejson.loads(line)

    assert typed(materialised(lazy)) == typed(eager)
    events = list(change_events_from_text(line, "line 1", lazy=True))
    references = list(change_events_from_text(line, "line 1"))
    for event, reference in zip(events, references, strict=True):
        assert isinstance(event, ChangeEvent)
        for name in WRAPPERS:  # read one field at a time, as the reducers do
            assert typed(event.full_document[name]) == typed(reference.full_document[name]), name
        assert event.document_id == reference.document_id == ObjectId(OID)


def test_a_line_without_wrappers_is_plain_json():
    line = json.dumps({**change({"a": [1, 2.5, None, True, "é"]}), "clusterTime": 1, "documentKey": {"_id": "x"}})

    value = loads_lazy(line)

    assert type(value) is dict
    assert value == json.loads(line)


@pytest.mark.parametrize(
    "line",
    [
        '{"a": 123456789012345678901234567890, "b": WRAPPER}',  # beyond 64 bits: json keeps it exact
        '{"a": -92233720368547758090, "b": WRAPPER}',
        '{"a": NaN, "b": WRAPPER}',  # orjson refuses; json accepts
        '{"a": "\\ud800", "b": WRAPPER}',  # a lone surrogate
        '{"a": 1e400}',
    ],
)
def test_text_orjson_reads_differently_is_read_by_json(line):
    line = line.replace("WRAPPER", json.dumps({"$oid": OID}))
    assert typed(materialised(loads_lazy(line))) == typed(ejson.loads(line))


@pytest.mark.parametrize("line", ["{not json", "", '{"a": 1,\n "b": }', '{"$oid": "zz"}', '{"detail": {"$oid": "zz"}}'])
def test_errors_at_parse_time_are_json_util_s(line):
    with pytest.raises(Exception) as lazy_error:
        loads_lazy(line)
    with pytest.raises(Exception) as eager_error:
        ejson.loads(line)
    assert type(lazy_error.value) is type(eager_error.value)
    assert str(lazy_error.value) == str(eager_error.value)


def offers_insert(full_document: dict, token: str = "82AA01") -> str:
    document = {
        "_id": {"$oid": OID},
        "appSource": "acme",
        "status": "pending",
        "price": 18500,
        **full_document,
    }
    return json.dumps({**change(document), "_id": {"_data": token}})


class _Lookups:
    def partners(self):
        from distiller.core.partners import partner_from_record

        return [
            partner_from_record(
                {
                    "partnerId": "acme",
                    "name": "Acme",
                    "active": True,
                    "webhookScope": "appSource",
                    "webhook": {"url": "https://acme.example/hook", "events": ["*"]},
                },
                where="p",
            )
        ]

    def documents(self, collection, ids):
        return {}


def distilled(lines: list[str], *, lazy: bool) -> list:
    items = [item for n, line in enumerate(lines) for item in change_events_from_text(line, f"line {n}", lazy=lazy)]
    return distill(items, _Lookups())


def test_a_malformed_wrapper_nobody_reads_no_longer_rejects_the_record():
    """The choice lazy decoding makes (docs/assumptions.md): unread fields are not validated."""
    line = offers_insert({"unreadNotes": {"$oid": "not-an-object-id"}})

    [lazy] = distilled([line], lazy=True)
    [eager] = distilled([line], lazy=False)

    assert isinstance(eager, RecordError) and "invalid Extended JSON" in eager.reason
    assert isinstance(lazy, ChangeOutcome)
    assert [d.event for d in lazy.deliveries] == ["offer.created"]


@pytest.mark.parametrize(
    ("field", "wrapper"),
    [
        ("status", {"$numberLong": "not a number"}),  # read by the payload
        ("appSource", {"$oid": "zz"}),  # read by the router
        ("price", {"$numberDecimal": "lots"}),  # read by the payload
    ],
)
def test_a_malformed_wrapper_in_a_read_field_is_that_record_s_error(field, wrapper):
    good = offers_insert({}, token="82AA02")
    bad = offers_insert({field: wrapper})

    results = distilled([good, bad, good], lazy=True)

    assert [type(r).__name__ for r in results] == ["ChangeOutcome", "RecordError", "ChangeOutcome"]
    error = results[1]
    assert error.origin == "line 1"
    assert error.reason.startswith(f"fullDocument.{field}: invalid Extended JSON: ")
    assert all(r.deliveries for r in (results[0], results[2]))


def test_a_read_wrapper_compares_by_its_decoded_value():
    """`{"$numberLong": "5"}` written over a pre-image's 5 is no change, as with eager decoding."""
    update = {
        "_id": {"_data": "82AA03"},
        "operationType": "update",
        "ns": {"coll": "deals"},
        "documentKey": {"_id": {"$oid": OID}},
        "updateDescription": {"updatedFields": {"amount": {"$numberLong": "5"}}, "removedFields": []},
        "fullDocument": {"_id": {"$oid": OID}, "amount": {"$numberLong": "5"}},
        "fullDocumentBeforeChange": {"_id": {"$oid": OID}, "amount": 5},
    }
    line = json.dumps(update)

    [lazy] = change_events_from_text(line, "line 1", lazy=True)
    [eager] = change_events_from_text(line, "line 1")

    assert isinstance(lazy.updated_fields, LazyDocument)
    assert Transitions(lazy).changed("amount") is Transitions(eager).changed("amount") is False


def test_an_unreadable_field_names_its_path():
    document = loads_lazy(json.dumps(change({"buyer": {"id": {"$oid": "zz"}}})))

    with pytest.raises(ExtendedJSONError, match=r"^fullDocument\.buyer: invalid Extended JSON: InvalidId"):
        document["fullDocument"]["buyer"]


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_compact_json_writes_what_the_json_encoder_writes(value):
    assert compact_json(value) == json.JSONEncoder(separators=(",", ":")).encode(value)


@pytest.mark.parametrize("value", [1e-5, 1e16, 1.5e-7, -0.00009, 1e22, "\x7f", "é", {"k": (1, 2)}, 2**64, 2**63 - 1])
def test_compact_json_edge_values(value):
    assert compact_json({"v": value}) == json.JSONEncoder(separators=(",", ":")).encode({"v": value})
