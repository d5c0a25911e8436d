"""`plain_at` reads what `plain(value_at(...))` reads, on lazy and decoded documents alike."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distiller.core import ejson
from distiller.core.ejson import plain
from distiller.core.lazy_ejson import ExtendedJSONError, LazyDocument, loads_change_line, loads_lazy
from distiller.core.plain_read import plain_at
from distiller.core.transitions import MISSING, value_at

OID = "64A1f2e3b5c8d90012345678"
WRAPPERS = [
    {"$oid": OID},
    {"$oid": "64a1f2e3b5c8d9001234567"},  # 23 digits: InvalidId
    {"$oid": "64a1 f2e3b5c8d90012345678"[:24]},  # whitespace fromhex would skip
    {"$oid": 5},
    {"$oid": OID, "x": 1},
    {"$date": "2026-04-21T14:00:00.123Z"},
    {"$date": {"$numberLong": "1776780000123"}},
    {"$numberLong": "5"},
    {"$numberDecimal": "NaN"},
    {"$numberDouble": "Infinity"},
    {"$numberLong": "not a number"},
    {"$binary": {"base64": "", "subType": "00"}},
]
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),  # 19-digit numbers parse eagerly (json)
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "acme", "x.y"]),
    st.sampled_from(WRAPPERS),
)
KEYS = st.sampled_from(["a", "b", "id", "0", "1"])
VALUES = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3), max_leaves=10
)


def outcome(read, document, path):
    """What a read gives, with any error as its type and message, and NaN made comparable."""
    try:
        value = read(document, path)
    except ExtendedJSONError as exc:
        return ("error", str(exc))
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    return ("value", type(value).__name__, value if value is not MISSING else "MISSING")


def ordinary(document, path):
    value = value_at(document, path)
    return MISSING if value is MISSING else plain(value)


def parsed(document: dict) -> tuple[LazyDocument, LazyDocument, dict | None]:
    """The document as two fresh lazy documents (one per reader) and decoded eagerly (None: the
    eager parse refuses a malformed wrapper somewhere in it)."""
    line = json.dumps({"_id": {"_data": "82"}, "operationType": "insert", "fullDocument": document})
    first, second = loads_lazy(line)["fullDocument"], loads_lazy(line)["fullDocument"]
    try:
        eager = ejson.loads(line)["fullDocument"]
    except Exception:
        eager = None
    return first, second, eager


def path_into(data, document) -> str:
    """A path that mostly leads somewhere in `document` (and sometimes past its end)."""
    parts, current = [], document
    while True:
        if isinstance(current, dict) and current and data.draw(st.integers(0, 5)):
            key = data.draw(st.sampled_from(sorted(current)))
        elif isinstance(current, list) and current and data.draw(st.integers(0, 5)):
            key = str(data.draw(st.integers(0, len(current) - 1)))
        else:
            key = data.draw(KEYS)
        parts.append(key)
        current = current.get(key) if isinstance(current, dict) else None
        wrapper = isinstance(current, dict) and any(k.startswith("$") for k in current)
        if len(parts) == 4 or wrapper or not isinstance(current, (dict, list)) or not data.draw(st.integers(0, 3)):
            return ".".join(parts)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=4), st.data())
def test_plain_at_is_plain_of_value_at(document, data):
    path = path_into(data, document)
    lazy, reference, eager = parsed(document)
    if not isinstance(lazy, LazyDocument):
        return  # a top-level wrapper: the line decodes eagerly, nothing lazy to compare
    got = outcome(plain_at, lazy, path)
    expected = outcome(ordinary, reference, path)
    if got[0] == "error" or expected[0] == "error":
        # The one difference: a malformed wrapper beside the path is not read (module docstring);
        # one on the path fails the same way.
        assert expected[0] == "error"
        assert got[0] == "value" or got == expected
        return
    assert got == expected
    if eager is not None:
        assert outcome(plain_at, eager, path) == outcome(ordinary, eager, path) == expected


def test_a_well_formed_oid_is_read_as_its_lower_case_hex_without_decoding():
    document = loads_lazy(json.dumps({"operationType": "insert", "fullDocument": {"buyer": {"id": {"$oid": OID}}}}))[
        "fullDocument"
    ]

    assert plain_at(document, "buyer.id") == OID.lower()
    assert dict.__getitem__(document, "buyer") == {"id": {"$oid": OID}}  # still raw: nothing decoded


@pytest.mark.parametrize("wrapper", [{"$oid": "zz"}, {"$numberLong": "x"}, {"$date": {"$numberLong": "y"}}])
def test_a_malformed_wrapper_on_the_path_names_its_field(wrapper):
    document = loads_lazy(json.dumps({"operationType": "insert", "fullDocument": {"buyer": {"id": wrapper}}}))[
        "fullDocument"
    ]

    with pytest.raises(ExtendedJSONError, match=r"^fullDocument\.buyer: invalid Extended JSON: "):
        plain_at(document, "buyer.id")


def test_a_malformed_wrapper_beside_the_path_is_not_read():
    line = {"operationType": "insert", "fullDocument": {"buyer": {"id": {"$oid": OID}, "seen": {"$date": "x"}}}}
    document = loads_lazy(json.dumps(line))["fullDocument"]

    assert plain_at(document, "buyer.id") == OID.lower()
    with pytest.raises(ExtendedJSONError):
        document["buyer"]  # reading the whole field still fails as it did


CHANGE = {
    "_id": {"_data": "82AA01"},
    "operationType": "insert",
    "clusterTime": {"$timestamp": {"t": 1776780000, "i": 1}},
    "wallTime": {"$date": "2026-04-21T14:00:00.123Z"},
    "lsid": {"id": {"$binary": {"base64": "AQID", "subType": "04"}}},
    "txnNumber": {"$numberLong": "3"},
    "ns": {"db": "privateauto", "coll": "offers"},
    "documentKey": {"_id": {"$oid": OID}},
    "fullDocument": {"_id": {"$oid": OID}},
}
UNREAD = ("clusterTime", "wallTime", "lsid", "txnNumber")


@pytest.mark.parametrize("shape", ["change-stream", "eventbridge", "docdb"])
def test_loads_change_line_leaves_only_the_unread_envelope_members_raw(shape):
    wrap = {
        "change-stream": lambda e: e,
        "eventbridge": lambda e: {"detail-type": "MongoDB Database Trigger for privateauto.offers", "detail": e},
        "docdb": lambda e: {"eventSource": "aws:docdb", "events": [{"event": e}]},
    }[shape]
    line = json.dumps(wrap(CHANGE))

    fast, full = loads_change_line(line), loads_lazy(line)

    def change_of(value):
        return value.get("detail") or (value["events"][0]["event"] if "events" in value else value)

    fast_change, full_change = change_of(fast), change_of(full)
    for name in UNREAD:
        assert fast_change[name] == CHANGE[name]  # as parsed
        assert full_change[name] != CHANGE[name]  # decoded by loads_lazy
    for name in ("_id", "ns", "documentKey"):
        assert fast_change[name] == full_change[name]
    assert isinstance(fast_change["fullDocument"], LazyDocument)
