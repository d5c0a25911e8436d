"""`ejson.object_hook`'s shortcuts for `$oid`, canonical `$date` and `$timestamp` give json_util's values and errors."""

import datetime as dt

import pytest
from bson import Int64, json_util
from hypothesis import given, settings
from hypothesis import strategies as st

from distiller.core.ejson import JSON_OPTIONS, _floats_agree, object_hook


def json_util_result(document: dict) -> tuple[str, object]:
    try:
        return "value", json_util.object_hook(dict(document), JSON_OPTIONS)
    except Exception as exc:  # the error itself is what is compared
        return "error", (type(exc), str(exc))


def fast_result(document: dict) -> tuple[str, object]:
    try:
        return "value", object_hook(dict(document))
    except Exception as exc:
        return "error", (type(exc), str(exc))


def same(document: dict) -> None:
    fast, reference = fast_result(document), json_util_result(document)
    assert fast[0] == reference[0], (document, fast, reference)
    if fast[0] == "value":
        assert type(fast[1]) is type(reference[1])
        assert fast[1] == reference[1]
        if isinstance(fast[1], dt.datetime):
            assert fast[1].utcoffset() == reference[1].utcoffset() == dt.timedelta(0)
            assert fast[1].tzinfo is reference[1].tzinfo
    else:
        assert fast[1] == reference[1]


HEX = st.text(alphabet="0123456789abcdefABCDEF", min_size=24, max_size=24)


@settings(max_examples=300, deadline=None)
@given(st.one_of(HEX, st.text(max_size=30), st.integers(), st.binary(max_size=12)))
def test_oid_shortcut_is_json_util_s(value):
    same({"$oid": value})


def test_a_null_oid_is_a_fresh_object_id_on_both_paths():
    """`ObjectId(None)` makes a new id: json_util does it too, so only the type can be compared."""
    assert type(object_hook({"$oid": None})) is type(json_util.object_hook({"$oid": None}, JSON_OPTIONS))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_canonical_date_shortcut_is_json_util_s(millis):
    """`{"$date": {"$numberLong": ...}}` reaches the hook with the inner wrapper already an `Int64`."""
    same({"$date": Int64(millis)})


@pytest.mark.parametrize("millis", [-62135596800000, -62135596800001, 253402300799999, 253402300800000, 0, -1])
def test_canonical_date_range_edges(millis):
    same({"$date": Int64(millis)})


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.fixed_dictionaries({"t": st.integers(-5, 2**33), "i": st.integers(-5, 2**33)}),
        st.dictionaries(st.sampled_from(["t", "i", "x"]), st.integers(0, 9) | st.text(max_size=2), max_size=3),
        st.integers(),
    )
)
def test_timestamp_shortcut_is_json_util_s(value):
    same({"$timestamp": value})


@pytest.mark.parametrize(
    "document",
    [
        {"$oid": "64a1f2e3b5c8d90012345678", "x": 1},  # extra field: json_util's TypeError
        {"$timestamp": {"t": 1, "i": 2}, "x": 1},
        {"$date": Int64(5), "x": 1},
        {"$timestamp": {"t": True, "i": 2}},
        {"$timestamp": {"t": 1.5, "i": 2}},
    ],
)
def test_unusual_shapes_fall_through_to_json_util(document):
    same(document)


@pytest.mark.parametrize(
    ("value", "agrees"),
    [
        ({"a": [1, "x", None, True, {"b": 0.5}]}, True),
        ({"a": [1, {"b": 1e-5}]}, False),
        ([(1e16,)], False),
        ({"a": float("nan")}, False),
        (0.0, True),
        ({"k": Int64(3)}, True),
    ],
)
def test_floats_agree_finds_a_float_at_any_depth(value, agrees):
    assert _floats_agree(value) is agrees
