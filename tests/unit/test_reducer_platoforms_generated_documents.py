"""`platoforms_generated_documents` trigger table (the generated Bill of Sale): one case per row
(id = event name), then the negative twins.

Same signature rows as `documents`; the legacy event here is `deal.bill_of_sale_approved`, and
a generated POA does not fire `deal.poa_approved` (that legacy event belongs to `documents`).
"""

import datetime as dt

import pytest

from distiller.core.reducers import REDUCERS
from distiller.core.transitions import Transitions
from tests.factories import as_change, oid, raw_insert, raw_update
from tests.factories import post_image as _post_image

COLLECTION = "platoforms_generated_documents"
T0 = dt.datetime(2026, 4, 21, 14, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)
T2 = T0 + dt.timedelta(minutes=9)

SIGNATURE_ADDED = "document.signature_added"
COMPLETED = "document.completed"
BOS_APPROVED = "deal.bill_of_sale_approved"


def slot(role, n, signed_at=None):
    return {"signerRole": role, "userId": oid(0x500 + n), "signedAt": signed_at}


def generated(*signed_at, classification="bill-of-sale"):
    """A generated document on two deals, one signer slot per `signed_at` value (None = unsigned)."""
    roles = ["seller", "co-seller", "buyer"] if len(signed_at) == 3 else ["seller", "buyer"]
    return {
        "_id": oid(0xB05),
        "docClassification": classification,
        "name": "Bill of Sale",
        "status": "pending",
        "sharedDeals": [oid(0xD1), oid(0xD2)],
        "manualSignatures": [slot(role, i, at) for i, (role, at) in enumerate(zip(roles, signed_at, strict=True))],
        "signed": [{"key": "generated/b05/bill-of-sale.pdf", "filename": "bill-of-sale.pdf"}],
    }


UNSIGNED = generated(None, None)
SELLER_SIGNED = generated(T0, None)
BOTH_SIGNED = generated(T0, T1)


def update(updated, *, before=UNSIGNED, pre_image=True, removed=()):
    return raw_update(
        COLLECTION,
        updated,
        _post_image(before, updated, removed),
        removed=list(removed),
        before=before if pre_image else None,
        document_id=before["_id"],
    )


def emitted(raw):
    change = as_change(raw)
    return [
        (r.event, detail) for r, detail in REDUCERS[COLLECTION].emissions(Transitions(change, change.full_document))
    ]


def signed(*slots):
    return [(SIGNATURE_ADDED, {"slot": s}) for s in slots]


CASES = [
    # --- one case per row of the table ---
    pytest.param(update({"manualSignatures.0.signedAt": T0}), signed(0), id="document.signature_added"),
    pytest.param(
        update({"manualSignatures.1.signedAt": T1}, before=generated(T0, None, classification="addendum")),
        [*signed(1), (COMPLETED, {})],
        id="document.completed",
    ),
    pytest.param(
        # the spec's flow: the buyer's signature and status: completed in one update
        update({"manualSignatures.1.signedAt": T1, "status": "completed", "updatedAt": T1}, before=SELLER_SIGNED),
        [*signed(1), (COMPLETED, {}), (BOS_APPROVED, {})],
        id="deal.bill_of_sale_approved",
    ),
    # --- several signatures per update ---
    pytest.param(
        update({"manualSignatures.1.signedAt": T1, "manualSignatures.0.signedAt": T0}),
        [*signed(0, 1), (COMPLETED, {}), (BOS_APPROVED, {})],
        id="both-slots-in-one-update",
    ),
    pytest.param(
        update(
            {"manualSignatures.2.signedAt": T1, "manualSignatures.0.signedAt": T1}, before=generated(None, None, None)
        ),
        signed(0, 2),
        id="two-of-three-slots-in-one-update-in-slot-order",
    ),
    # --- negative twins ---
    pytest.param(update({"manualSignatures.0.signedAt": T0}), signed(0), id="partial-signature-does-not-complete"),
    pytest.param(
        update({"manualSignatures.0.signedAt": T2}, before=SELLER_SIGNED),
        [],
        id="re-set-signedAt-with-pre-image-does-not-refire",
    ),
    pytest.param(
        update({"manualSignatures.1.signedAt": T2}, before=BOTH_SIGNED),
        [],
        id="re-set-last-signedAt-with-pre-image-does-not-recomplete",
    ),
    pytest.param(
        update({"manualSignatures.1.signedAt": T1}, before=generated(T0, None, classification="poa")),
        [*signed(1), (COMPLETED, {})],
        id="generated-poa-fires-no-legacy-event",
    ),
    pytest.param(
        update({"status": "completed", "updatedAt": T2}, before=BOTH_SIGNED),
        [],
        id="status-marked-complete-later-fires-nothing",
    ),
    pytest.param(
        update({"status": "completed", "updatedAt": T2}, before=BOTH_SIGNED, pre_image=False),
        [],
        id="status-marked-complete-later-without-pre-image",
    ),
    pytest.param(update({"sharedDeals": [oid(0xD1)]}, before=BOTH_SIGNED), [], id="sharedDeals-written"),
    # --- whole-array and slot writes ---
    pytest.param(
        update({"manualSignatures": BOTH_SIGNED["manualSignatures"]}, before=SELLER_SIGNED),
        [*signed(1), (COMPLETED, {}), (BOS_APPROVED, {})],
        id="whole-array-write-fires-only-newly-signed-slots",
    ),
    pytest.param(
        update({"manualSignatures": BOTH_SIGNED["manualSignatures"]}, before=BOTH_SIGNED),
        [],
        id="whole-array-rewritten-unchanged-with-pre-image",
    ),
    pytest.param(
        update({"manualSignatures.1": slot("buyer", 1, T1)}, before=SELLER_SIGNED),
        [*signed(1), (COMPLETED, {}), (BOS_APPROVED, {})],
        id="slot-object-write-fires-for-that-slot",
    ),
    pytest.param(
        update({"manualSignatures.0": slot("seller", 0, T2)}, before=SELLER_SIGNED),
        [],
        id="slot-object-rewrite-of-signed-slot-with-pre-image",
    ),
    # --- inserts ---
    pytest.param(raw_insert(COLLECTION, UNSIGNED), [], id="insert-fires-nothing"),
    pytest.param(raw_insert(COLLECTION, BOTH_SIGNED), [], id="insert-fully-signed-fires-nothing"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_generated_documents_trigger_table(raw, expected):
    assert emitted(raw) == expected


def test_co_seller_bill_of_sale_three_signatures_then_one_completion():
    steps = [
        ({"manualSignatures.0.signedAt": T0}, generated(None, None, None)),
        ({"manualSignatures.1.signedAt": T1}, generated(T0, None, None)),
        ({"manualSignatures.2.signedAt": T2, "status": "completed"}, generated(T0, T1, None)),
        ({"updatedAt": T2}, generated(T0, T1, T2)),
    ]

    per_update = [emitted(update(updated, before=before)) for updated, before in steps]

    assert per_update == [signed(0), signed(1), [*signed(2), (COMPLETED, {}), (BOS_APPROVED, {})], []]
    events = [e for batch in per_update for e, _ in batch]
    assert events.count(SIGNATURE_ADDED) == 3
    assert events.count(COMPLETED) == 1
    assert events.count(BOS_APPROVED) == 1


def test_legacy_row_is_the_only_one_carrying_files():
    rows = {r.event: r for r in REDUCERS[COLLECTION].rows}

    assert rows[SIGNATURE_ADDED].files is None
    assert rows[COMPLETED].files is None
    assert rows[BOS_APPROVED].files(BOTH_SIGNED) == [("generated/b05/bill-of-sale.pdf", "bill-of-sale.pdf")]


def test_generated_documents_route_through_every_shared_deal():
    reducer = REDUCERS[COLLECTION]

    assert reducer.linked_deals == ("sharedDeals", "dealId")
    assert reducer.entity_type == COLLECTION
