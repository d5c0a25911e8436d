"""Lazy Extended JSON against the eager reference, on test_properties' own generated inputs.

For any input: the lazy path never raises and answers every record clearly (`checked`); it never
rejects a record the eager path accepts; and where both accept, the delivery lines are the same
bytes. The eager path may reject more: a malformed wrapper in a field nobody reads.
"""

import copy
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from distiller.core.ejson import compact_json
from distiller.core.model import RecordError
from distiller.core.pipeline import distill
from distiller.ingest.sources import change_events_from_text
from tests.unit.test_properties import (
    DOCUMENTS,
    EDGE_VALUES,
    ORIGIN,
    PROPERTY,
    READ_FIELDS,
    SHAPES,
    checked,
    deliver,
    ejson_wrappers,
    json_values,
    raw_insert,
    relaxed,
    scalars,
    shared_lookups,
    valid_changes,
)

STDLIB = json.JSONEncoder(separators=(",", ":")).encode


def lines(text: str | bytes, *, lazy: bool) -> list[str]:
    """What `distiller distill` writes for `text`: one line per delivery, `error: ...` per bad record."""
    items = list(change_events_from_text(text, ORIGIN, lazy=lazy))
    results = checked(items, distill(items, shared_lookups()), ORIGIN, text)
    encode = compact_json if lazy else STDLIB
    return [
        f"error: {result}" if isinstance(result, RecordError) else encode(delivery.to_json())
        for result in results
        for delivery in (result.deliveries if not isinstance(result, RecordError) else [None])
    ]


def assert_lazy_agrees(text: str | bytes) -> None:
    lazy, eager = lines(text, lazy=True), lines(text, lazy=False)
    if not any(line.startswith("error: ") for line in eager):
        assert lazy == eager
    else:  # only records the eager path rejected may differ
        assert len([x for x in lazy if x.startswith("error: ")]) <= len([x for x in eager if x.startswith("error: ")])


@PROPERTY
@given(json_values)
def test_any_json_value(value):
    assert_lazy_agrees(json.dumps(value))


@PROPERTY
@given(valid_changes(), st.sampled_from([name for name in SHAPES if name != "pymongo-dict"]))
def test_valid_changes_in_every_text_shape_give_the_same_bytes(raw, shape):
    kind, text = deliver(shape, raw)
    assert kind == "text"
    lazy, eager = lines(text, lazy=True), lines(text, lazy=False)

    assert lazy == eager
    assert not any(line.startswith("error: ") for line in lazy)


@PROPERTY
@given(st.sampled_from(list(READ_FIELDS)), st.data(), st.one_of(EDGE_VALUES, scalars, ejson_wrappers, json_values))
def test_any_value_in_a_field_the_payload_or_router_reads(collection, data, value: Any):
    document = copy.deepcopy(DOCUMENTS[collection])
    *parents, last = data.draw(st.sampled_from(READ_FIELDS[collection])).split(".")
    holder = document
    for part in parents:
        holder = holder.setdefault(part, {})
    holder[last] = value

    assert_lazy_agrees(relaxed(raw_insert(collection, document, token="8263C0FFEE")))
