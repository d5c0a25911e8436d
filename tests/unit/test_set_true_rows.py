"""Every trigger row that says "set true" fires on the boolean `true` only.

The spec: "negativeEquity set true", "negativeEquityFunded set true", "soft-delete via deleted:
true". Python's `1 == True` must not make `negativeEquity: 1`, `1.0` or `"true"` a partner event;
for listings such a `deleted` value is an ordinary field write (the `listing.updated` catch-all).
"""

import pytest
from bson import Decimal128, Int64
from hypothesis import given
from hypothesis import strategies as st

from distiller.core.reducers import TABLES
from distiller.core.reducers.rules import AllOf, SetTrue
from distiller.core.transitions import Transitions
from tests.factories import as_change, oid, raw_update
from tests.factories import post_image as _post_image

DEAL = {
    "_id": oid(0xD1),
    "status": "active",
    "payment": {"privateAutoPay": {"amount": 18500}},
    "negativeEquity": False,
    "negativeEquityFunded": False,
}
LISTING = {"_id": oid(0x11), "status": "live", "price": 18500, "sellerId": oid(0x51)}
BEFORE = {"deals": DEAL, "seller_listings": LISTING}

#: (collection, field, the row's event), one per "set true" row of the spec's trigger tables.
SET_TRUE_ROWS = [
    pytest.param("deals", "negativeEquity", "deal.negative_equity_identified", id="negativeEquity set true"),
    pytest.param("deals", "negativeEquityFunded", "deal.negative_equity_funded", id="negativeEquityFunded set true"),
    pytest.param("seller_listings", "deleted", "listing.deleted", id="deleted: true"),
]

#: Values that equal `True` in Python or read as true to a person, but are not the boolean.
LOOKALIKES = [1, 1.0, "true", "True", "1", Int64(1), Decimal128("1"), [True], {"value": True}]

NOT_THE_BOOLEAN_TRUE = st.one_of(
    st.sampled_from(LOOKALIKES),
    st.none(),
    st.just(False),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.lists(st.booleans(), max_size=2),
)


def events_of(collection, updated, *, pre_image):
    before = BEFORE[collection]
    raw = raw_update(
        collection,
        updated,
        _post_image(before, updated),
        before=before if pre_image else None,
        document_id=before["_id"],
    )
    change = as_change(raw)
    table = next(t for t in TABLES if t.collection == collection)
    return [r.event for r, _ in table.emissions(Transitions(change, change.full_document))]


@pytest.mark.parametrize(("collection", "field", "event"), SET_TRUE_ROWS)
@pytest.mark.parametrize("pre_image", [True, False], ids=["pre-image", "no-pre-image"])
def test_the_boolean_true_fires_the_row(collection, field, event, pre_image):
    assert event in events_of(collection, {field: True}, pre_image=pre_image)


@pytest.mark.parametrize(("collection", "field", "event"), SET_TRUE_ROWS)
@pytest.mark.parametrize("value", LOOKALIKES, ids=repr)
def test_lookalikes_of_true_do_not_fire_the_row(collection, field, event, value):
    assert event not in events_of(collection, {field: value}, pre_image=False)


@pytest.mark.parametrize(("collection", "field", "event"), SET_TRUE_ROWS)
@given(value=NOT_THE_BOOLEAN_TRUE, pre_image=st.booleans())
def test_no_non_boolean_value_fires_a_set_true_row(collection, field, event, value, pre_image):
    fired = events_of(collection, {field: value}, pre_image=pre_image)

    assert event not in fired
    assert not {"deal.negative_equity_reported", "deal.negative_equity_identified"} & set(fired)


@pytest.mark.parametrize("value", [1, "true", 1.0], ids=repr)
def test_listing_deleted_with_a_non_boolean_is_an_ordinary_edit(value):
    assert events_of("seller_listings", {"deleted": value}, pre_image=True) == ["listing.updated"]


def _set_true_triggers(trigger):
    if isinstance(trigger, AllOf):
        return [p for part in trigger.parts for p in _set_true_triggers(part)]
    return [trigger] if isinstance(trigger, SetTrue) else []


def test_the_table_above_covers_every_set_true_row_of_the_reducers():
    in_code = {
        (table.collection, trigger.path, r.event)
        for table in TABLES
        for r in table.rows
        for t in r.triggers
        for trigger in _set_true_triggers(t)
    }
    covered = {tuple(p.values) for p in SET_TRUE_ROWS} | {("deals", "negativeEquity", "deal.negative_equity_reported")}
    assert in_code == covered
