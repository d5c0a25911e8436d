"""`offers` trigger table: one case per spec row (id = event name), then the negative twins."""

import pytest

from distiller.core.reducers import REDUCERS
from distiller.core.transitions import Transitions
from tests.factories import as_change, oid, raw_insert, raw_update

OFFER = {
    "_id": oid(0x0F),
    "guid": "5b7e0c1a-2f4d-4e8b-9a61-0d3c2b1a9f00",
    "status": "pending",
    "listingId": oid(0x11),
    "price": 18500,
    "offeredByUserId": oid(0xB1),
    "offeredToUserId": oid(0x51),
}


def update(updated, *, before=OFFER, removed=()):
    """An update of OFFER (top-level fields only) with post-image and, by default, pre-image."""
    post = {k: v for k, v in {**(before or OFFER), **updated}.items() if k not in removed}
    return raw_update("offers", updated, post, removed=list(removed), before=before, document_id=OFFER["_id"])


CASES = [
    # --- one case per row of the spec's offer trigger table ---
    pytest.param(raw_insert("offers", OFFER), ["offer.created"], id="offer.created"),
    pytest.param(update({"status": "accepted"}), ["offer.accepted"], id="offer.accepted"),
    pytest.param(update({"status": "declined"}), ["offer.rejected"], id="offer.rejected"),
    pytest.param(update({"status": "deleted"}), ["offer.cancelled"], id="offer.cancelled"),
    # --- negative twins ---
    pytest.param(
        raw_insert("offers", {**OFFER, "status": "accepted"}), ["offer.created"], id="insert-fires-only-created"
    ),
    pytest.param(
        update({"status": "accepted"}, before={**OFFER, "status": "accepted"}),
        [],
        id="same-status-rewritten-with-pre-image",
    ),
    pytest.param(update({"status": "accepted"}, before=None), ["offer.accepted"], id="same-write-without-pre-image"),
    pytest.param(update({"status": "rejected"}), [], id="external-status-word-is-not-the-trigger"),
    pytest.param(update({"status": "cancelled"}), [], id="external-cancelled-is-not-the-trigger"),
    pytest.param(update({"status": "countered"}), [], id="status-to-unrelated-value"),
    pytest.param(update({"price": 19000}), [], id="price-edit-fires-nothing"),
    pytest.param(update({}, removed=["status"]), [], id="status-removed"),
    pytest.param(
        update({"status": "declined"}, before={**OFFER, "status": "accepted"}),
        ["offer.rejected"],
        id="accepted-then-declined",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_offers_trigger_table(raw, expected):
    change = as_change(raw)

    fired = REDUCERS["offers"].reduce(Transitions(change, change.full_document))

    assert [r.event for r in fired] == expected
