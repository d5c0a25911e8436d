"""`seller_listings` trigger table: one case per spec row (id = event name), then the negative twins.

One Mongo update yields at most one listing event; precedence is
deleted > sold > published > ownership_set > updated (the catch-all).
"""

import pytest

from distiller.core.pipeline import ChangeOutcome, distill
from distiller.core.reducers import REDUCERS
from distiller.core.transitions import Transitions
from tests.factories import as_change, oid, raw_delete, raw_insert, raw_update

LISTING = {
    "_id": oid(0x11),
    "status": "draft",
    "price": 18500,
    "sellerId": oid(0x51),
    "vehicle": {"vin": "1HGBH41JXMN109186", "year": 2021, "make": "Honda", "model": "Accord", "trim": "EX"},
    "photos": [{"url": "https://img.example/1.jpg"}, {"url": "https://img.example/2.jpg"}],
}
NEW_PHOTO = {"url": "https://img.example/3.jpg"}
OWNED = {"ownershipType": "owned", "vehicleHaveLien": False}


def update(updated, post=None, *, before=LISTING, removed=()):
    """An update of LISTING; `post` is the post-image when `updated` has dotted paths."""
    if post is None:
        post = {k: v for k, v in {**(before or LISTING), **updated}.items() if k not in removed}
    return raw_update(
        "seller_listings", updated, post, removed=list(removed), before=before, document_id=LISTING["_id"]
    )


def listing(**fields):
    return {**LISTING, **fields}


CASES = [
    # --- one case per row of the spec's listing trigger table ---
    pytest.param(raw_insert("seller_listings", LISTING), ["listing.created"], id="listing.created"),
    pytest.param(update({"price": 17900}), ["listing.updated"], id="listing.updated"),
    pytest.param(update({"status": "live"}), ["listing.published"], id="listing.published"),
    pytest.param(update({"status": "sold"}, before=listing(status="live")), ["listing.sold"], id="listing.sold"),
    pytest.param(
        update({"status": "deactivated"}, before=listing(status="live")), ["listing.deleted"], id="listing.deleted"
    ),
    pytest.param(
        update({"ownershipInfo.ownershipType": "financed"}, listing(ownershipInfo={"ownershipType": "financed"})),
        ["listing.ownership_set"],
        id="listing.ownership_set",
    ),
    # --- the other triggers of a row ---
    pytest.param(
        update({"status": "expired"}, before=listing(status="live")), ["listing.deleted"], id="deleted-by-expiry"
    ),
    pytest.param(update({"deleted": True}), ["listing.deleted"], id="deleted-by-soft-delete"),
    pytest.param(
        raw_insert("seller_listings", listing(ownershipInfo=OWNED)),
        ["listing.created", "listing.ownership_set"],
        id="ownership_set-also-on-insert",
    ),
    pytest.param(
        update({"ownershipInfo": {"ownershipType": "leased"}}, listing(ownershipInfo={"ownershipType": "leased"})),
        ["listing.ownership_set"],
        id="ownership_set-via-parent-write",
    ),
    pytest.param(
        update(
            {"ownershipInfo.ownershipType": "leased"},
            listing(ownershipInfo={**OWNED, "ownershipType": "leased"}),
            before=listing(ownershipInfo=OWNED),
        ),
        ["listing.ownership_set"],
        id="ownership_set-changed",
    ),
    # --- precedence: the first matching row wins, the catch-all is suppressed ---
    pytest.param(update({"status": "live", "price": 17900}), ["listing.published"], id="published-suppresses-updated"),
    pytest.param(
        update({"deleted": True, "status": "sold"}, before=listing(status="live")),
        ["listing.deleted"],
        id="deleted-over-sold",
    ),
    pytest.param(
        update({"status": "sold", "price": 17900}, before=listing(status="live")),
        ["listing.sold"],
        id="sold-over-updated",
    ),
    pytest.param(
        update({"status": "live", "ownershipInfo": OWNED}),
        ["listing.published"],
        id="published-over-ownership_set",
    ),
    pytest.param(
        update({"ownershipInfo": OWNED, "price": 17900}), ["listing.ownership_set"], id="ownership_set-over-updated"
    ),
    # --- negative twins ---
    pytest.param(
        raw_insert("seller_listings", listing(status="live", deleted=True, ownershipInfo={"ownershipType": None})),
        ["listing.created"],
        id="insert-fires-only-created",
    ),
    pytest.param(update({"updatedAt": "2026-04-21T14:00:00Z", "__v": 3}), [], id="bookkeeping-only-update"),
    pytest.param(
        update({"updatedAt": "2026-04-21T14:00:00Z", "price": 17900}),
        ["listing.updated"],
        id="bookkeeping-plus-real-edit",
    ),
    pytest.param(update({"cashOffer": {"amount": 15000}}), [], id="cash-offer-write-is-not-an-edit"),
    pytest.param(
        update({"status": "live"}, before=listing(status="live")), [], id="same-status-rewritten-with-pre-image"
    ),
    pytest.param(update({"status": "live"}, before=None), ["listing.published"], id="same-write-without-pre-image"),
    pytest.param(
        update({"price": 18500, "updatedAt": "2026-04-21T14:00:00Z"}),
        [],
        id="same-value-edit-with-pre-image-is-not-updated",
    ),
    pytest.param(
        update({"status": "deactivated", "deleted": True}, before=listing(status="live")),
        ["listing.deleted"],
        id="two-triggers-of-one-row-are-one-event",
    ),
    pytest.param(
        update({"status": "live", "price": 17900}, before=listing(status="live")),
        ["listing.updated"],
        id="unchanged-status-does-not-suppress-the-catch-all",
    ),
    pytest.param(
        update({"deleted": True, "price": 17900}, before=listing(deleted=True)),
        ["listing.updated"],
        id="already-soft-deleted-edit-is-updated",
    ),
    pytest.param(
        update(
            {"ownershipInfo.ownershipType": "owned"},
            listing(ownershipInfo=OWNED),
            before=listing(ownershipInfo=OWNED),
        ),
        [],
        id="ownership-rewritten-same-value-with-pre-image",
    ),
    pytest.param(
        update({"photos.1.url": "https://img.example/2b.jpg"}, listing(photos=[LISTING["photos"][0], {"url": "x"}])),
        ["listing.updated"],
        id="array-element-path-is-an-edit",
    ),
    pytest.param(
        update({"photos.2": NEW_PHOTO}, listing(photos=[*LISTING["photos"], NEW_PHOTO])),
        ["listing.updated"],
        id="array-append-is-an-edit",
    ),
    pytest.param(update({}, removed=["price"]), ["listing.updated"], id="removed-field-is-an-edit"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_seller_listings_trigger_table(raw, expected):
    change = as_change(raw)

    fired = REDUCERS["seller_listings"].reduce(Transitions(change, change.full_document))

    assert [r.event for r in fired] == expected


class NoLookups:
    """A `Lookups` that records what it is asked; a delete must not need it."""

    def __init__(self):
        self.asked = []

    def partners(self):
        self.asked.append("partners")
        return []

    def documents(self, collection, ids):
        self.asked.append(collection)
        return {}


@pytest.mark.parametrize("pre_image", [None, LISTING], ids=["without-pre-image", "with-pre-image"])
def test_physical_delete_produces_no_event(pre_image):
    raw = raw_delete("seller_listings", LISTING["_id"])
    if pre_image is not None:
        raw["fullDocumentBeforeChange"] = pre_image
    lookups = NoLookups()

    [outcome] = distill([as_change(raw)], lookups)

    assert isinstance(outcome, ChangeOutcome), outcome
    assert outcome.events == []
    assert outcome.deliveries == []
    assert outcome.note and outcome.note.startswith("delete")
    assert lookups.asked == []
