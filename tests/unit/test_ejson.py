"""ejson.loads decodes exactly as bson.json_util.loads does (its shortcuts change speed, not values)."""

import datetime as dt
import json

import pytest
from bson import Decimal128, Int64, ObjectId, Regex, Timestamp, json_util
from bson.binary import Binary
from hypothesis import given, settings
from hypothesis import strategies as st

from distiller.core import ejson


def reference(text: str):
    return json_util.loads(text, json_options=ejson.JSON_OPTIONS)


@pytest.mark.parametrize("day", ["0001-01-01", "1970-01-01", "2024-02-29", "2026-04-21", "9999-12-31"])
def test_every_millisecond_of_a_relaxed_date_decodes_like_json_util(day):
    for ms in range(1000):
        for text in (f"{day}T23:59:59.{ms:03d}Z", f"{day}T00:00:00Z"):
            line = json.dumps({"d": {"$date": text}})
            ours, theirs = ejson.loads(line)["d"], reference(line)["d"]
            assert ours == theirs and ours.tzinfo == theirs.tzinfo, text


@pytest.mark.parametrize(
    "text",
    [
        "2026-04-21T14:00:00.123456Z",  # more than milliseconds
        "2026-04-21T14:00:00+02:00",  # offsets
        "2026-04-21T14:00:00-0530",
        "2026-04-21T14:00:00",  # no zone
    ],
)
def test_other_date_forms_go_through_json_util(text):
    line = json.dumps({"d": {"$date": text}})
    assert ejson.loads(line) == reference(line)


@pytest.mark.parametrize(
    "line",
    [
        '{"d": {"$date": "2026-02-30T00:00:00.000Z"}}',
        '{"d": {"$date": "2026-04-21T25:00:00Z"}}',
        '{"d": {"$date": "2026-04-21T14:00:00Z", "x": 1}}',
        '{"d": {"$oid": "zz"}}',
        '{"d": {"a": 1, "$oid": "64a1f2e3b5c8d90012345678"}}',
    ],
)
def test_invalid_wrappers_fail_like_json_util(line):
    with pytest.raises(Exception) as ours:
        ejson.loads(line)
    with pytest.raises(Exception) as theirs:
        reference(line)
    assert type(ours.value) is type(theirs.value)


bson_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**31), max_value=2**31 - 1).map(Int64),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=8).map(lambda b: ObjectId(b.ljust(12, b"\0")[:12])),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31), timezones=st.just(dt.UTC)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
    ),
    st.decimals(min_value=-(10**12), max_value=10**12, allow_nan=False, allow_infinity=False, places=2).map(
        lambda d: Decimal128(str(d))
    ),
    st.builds(Timestamp, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    st.binary(max_size=8).map(lambda b: Binary(b, 0)),
    st.just(Regex("^a.*", "i")),
)
bson_documents = st.recursive(
    bson_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8).filter(lambda k: not k.startswith("$")), children, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    document=st.dictionaries(st.text(max_size=8).filter(lambda k: not k.startswith("$")), bson_documents, max_size=5),
    mode=st.sampled_from(
        [json_util.RELAXED_JSON_OPTIONS, json_util.CANONICAL_JSON_OPTIONS, json_util.LEGACY_JSON_OPTIONS]
    ),
)
def test_any_extended_json_decodes_like_json_util(document, mode):
    text = json_util.dumps(document, json_options=mode)
    assert ejson.loads(text) == reference(text)
