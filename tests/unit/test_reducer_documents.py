"""`documents` trigger table (POA, state paperwork, addenda): one case per row (id = event name),
then the negative twins and the shapes Mongo writes signatures in.

Each case asserts the exact `(event, detail)` list the reducer emits, so the order (every
`document.signature_added` in slot order, then `document.completed`, then the legacy
`deal.poa_approved`) and the slot of each signature are pinned.
"""

import datetime as dt

import pytest

from distiller.core.reducers import REDUCERS
from distiller.core.transitions import Transitions
from tests.factories import as_change, oid, raw_insert, raw_update
from tests.factories import post_image as _post_image

T0 = dt.datetime(2026, 4, 21, 14, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)
T2 = T0 + dt.timedelta(minutes=9)

SIGNATURE_ADDED = "document.signature_added"
COMPLETED = "document.completed"
POA_APPROVED = "deal.poa_approved"


def slot(role, n, signed_at=None):
    return {"signerRole": role, "userId": oid(0x500 + n), "signedAt": signed_at}


def document(*signed_at, classification="poa", roles=None):
    """A `documents` row with one signer slot per `signed_at` value (None = not signed yet)."""
    roles = roles or ["seller", "buyer", "co-seller"][: len(signed_at)]
    return {
        "_id": oid(0xD0C),
        "dealId": oid(0xD1),
        "docClassification": classification,
        "name": "Power of Attorney",
        "status": "pending",
        "manualSignatures": [slot(role, i, at) for i, (role, at) in enumerate(zip(roles, signed_at, strict=True))],
        "signed": [{"key": "documents/d0c/signed_poa.pdf", "filename": "signed_poa.pdf"}],
    }


UNSIGNED = document(None, None)
SELLER_SIGNED = document(T0, None)
BOTH_SIGNED = document(T0, T1)


def update(updated, *, before=UNSIGNED, pre_image=True, removed=()):
    """An update of `before` as the change stream delivers it (post-image; pre-image unless told)."""
    return raw_update(
        "documents",
        updated,
        _post_image(before, updated, removed),
        removed=list(removed),
        before=before if pre_image else None,
        document_id=before["_id"],
    )


def replace(after, *, before):
    raw = raw_insert("documents", after)
    raw["operationType"] = "replace"
    raw["fullDocumentBeforeChange"] = before
    return raw


def emitted(raw, collection="documents"):
    change = as_change(raw)
    return [
        (r.event, detail) for r, detail in REDUCERS[collection].emissions(Transitions(change, change.full_document))
    ]


def signed(*slots):
    return [(SIGNATURE_ADDED, {"slot": s}) for s in slots]


CASES = [
    # --- one case per row of the table ---
    pytest.param(update({"manualSignatures.0.signedAt": T0}), signed(0), id="document.signature_added"),
    pytest.param(
        update({"manualSignatures.1.signedAt": T1}, before=document(T0, None, classification="addendum")),
        [*signed(1), (COMPLETED, {})],
        id="document.completed",
    ),
    pytest.param(
        update({"manualSignatures.1.signedAt": T1, "status": "signed"}, before=SELLER_SIGNED),
        [*signed(1), (COMPLETED, {}), (POA_APPROVED, {})],
        id="deal.poa_approved",
    ),
    # --- one signature per update, several per update ---
    pytest.param(update({"manualSignatures.1.signedAt": T0}), signed(1), id="second-slot-signed-first"),
    pytest.param(
        update(
            {"manualSignatures.2.signedAt": T1, "manualSignatures.0.signedAt": T1}, before=document(None, None, None)
        ),
        signed(0, 2),
        id="several-slots-in-one-update-in-slot-order",
    ),
    pytest.param(
        update({"manualSignatures.1.signedAt": T1, "manualSignatures.0.signedAt": T1}),
        [*signed(0, 1), (COMPLETED, {}), (POA_APPROVED, {})],
        id="every-slot-in-one-update",
    ),
    # --- negative twins ---
    pytest.param(
        update({"manualSignatures.0.signedAt": T0}),
        signed(0),
        id="partial-signature-does-not-complete",
    ),
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
        update({"manualSignatures.1.signedAt": T1}, before=document(T0, None, classification="addendum")),
        [*signed(1), (COMPLETED, {})],
        id="non-poa-fully-signed-no-poa_approved",
    ),
    pytest.param(
        update({"manualSignatures.1.signedAt": T1}, before=document(T0, None, classification="bill-of-sale")),
        [*signed(1), (COMPLETED, {})],
        id="bill-of-sale-in-documents-fires-no-legacy-event",
    ),
    pytest.param(
        update({"status": "signed", "updatedAt": T2}, before=BOTH_SIGNED),
        [],
        id="status-and-updatedAt-only-fire-nothing",
    ),
    pytest.param(
        update({"status": "completed", "updatedAt": T2}, before=BOTH_SIGNED, pre_image=False),
        [],
        id="status-write-on-signed-document-without-pre-image",
    ),
    pytest.param(update({"manualSignatures.0.signedAt": None}), [], id="signedAt-set-null"),
    pytest.param(
        update({}, before=SELLER_SIGNED, removed=["manualSignatures.0.signedAt"]),
        [],
        id="signedAt-removed",
    ),
    pytest.param(
        update({"manualSignatures.0.userId": oid(0x999)}, before=SELLER_SIGNED),
        [],
        id="other-field-of-a-signed-slot-written",
    ),
    # --- whole-array and slot writes ---
    pytest.param(
        update({"manualSignatures": BOTH_SIGNED["manualSignatures"]}, before=SELLER_SIGNED),
        [*signed(1), (COMPLETED, {}), (POA_APPROVED, {})],
        id="whole-array-write-fires-only-newly-signed-slots",
    ),
    pytest.param(
        update({"manualSignatures": SELLER_SIGNED["manualSignatures"]}),
        signed(0),
        id="whole-array-write-first-signature",
    ),
    pytest.param(
        update({"manualSignatures": BOTH_SIGNED["manualSignatures"]}, before=BOTH_SIGNED),
        [],
        id="whole-array-rewritten-unchanged-with-pre-image",
    ),
    pytest.param(
        update({"manualSignatures.1": slot("buyer", 1, T1)}, before=SELLER_SIGNED),
        [*signed(1), (COMPLETED, {}), (POA_APPROVED, {})],
        id="slot-object-write-fires-for-that-slot",
    ),
    pytest.param(
        update({"manualSignatures.0": slot("seller", 0, T2)}, before=SELLER_SIGNED),
        [],
        id="slot-object-rewrite-of-signed-slot-with-pre-image",
    ),
    pytest.param(
        update({"manualSignatures.1": slot("buyer", 1, None)}, before=SELLER_SIGNED),
        [],
        id="slot-object-written-unsigned",
    ),
    pytest.param(
        update({"manualSignatures": [slot("seller", 0, T0), slot("buyer", 1, None), slot("co-seller", 2, None)]}),
        signed(0),
        id="whole-array-write-adding-a-co-seller-slot",
    ),
    pytest.param(
        update({"manualSignatures": BOTH_SIGNED["manualSignatures"]}, before=SELLER_SIGNED, pre_image=False),
        [*signed(0, 1), (COMPLETED, {}), (POA_APPROVED, {})],
        id="whole-array-write-without-pre-image-counts-every-signed-slot",
    ),
    pytest.param(
        update({"manualSignatures.1.signedAt": T1}, before=SELLER_SIGNED, pre_image=False),
        [*signed(1), (COMPLETED, {}), (POA_APPROVED, {})],
        id="last-slot-without-pre-image",
    ),
    pytest.param(
        update({"manualSignatures.0.signedAt": T0}, pre_image=False),
        signed(0),
        id="partial-signature-without-pre-image-does-not-complete",
    ),
    pytest.param(
        update({"manualSignatures.0.signedAt": T2}, before=BOTH_SIGNED, pre_image=False),
        [*signed(0), (COMPLETED, {}), (POA_APPROVED, {})],
        id="re-set-without-pre-image-is-a-transition",
    ),
    # --- inserts and replaces ---
    pytest.param(raw_insert("documents", UNSIGNED), [], id="insert-unsigned-fires-nothing"),
    pytest.param(raw_insert("documents", BOTH_SIGNED), [], id="insert-fully-signed-fires-nothing"),
    pytest.param(
        replace(BOTH_SIGNED, before=SELLER_SIGNED),
        [*signed(1), (COMPLETED, {}), (POA_APPROVED, {})],
        id="replace-with-pre-image-fires-newly-signed",
    ),
    pytest.param(replace(BOTH_SIGNED, before=BOTH_SIGNED), [], id="replace-with-identical-pre-image"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_documents_trigger_table(raw, expected):
    assert emitted(raw) == expected


def test_co_seller_three_slots_three_signatures_then_one_completion():
    """Seller + co-seller + buyer: `signature_added` once per slot, `document.completed` once, on the last."""
    steps = [
        ({"manualSignatures.0.signedAt": T0}, document(None, None, None)),
        ({"manualSignatures.1.signedAt": T1}, document(T0, None, None)),
        ({"manualSignatures.2.signedAt": T2}, document(T0, T1, None)),
        ({"status": "signed", "updatedAt": T2}, document(T0, T1, T2)),
    ]

    per_update = [emitted(update(updated, before=before)) for updated, before in steps]

    assert per_update == [
        signed(0),
        signed(1),
        [*signed(2), (COMPLETED, {}), (POA_APPROVED, {})],
        [],
    ]
    every = [event for events in per_update for event in events]
    assert [d["slot"] for e, d in every if e == SIGNATURE_ADDED] == [0, 1, 2]
    assert [e for e, _ in every].count(COMPLETED) == 1
    assert [e for e, _ in every].count(POA_APPROVED) == 1


def test_co_seller_document_is_not_complete_until_the_third_slot():
    before = document(T0, None, None)

    assert emitted(update({"manualSignatures.2.signedAt": T1}, before=before)) == signed(2)
    assert emitted(update({"manualSignatures.2.signedAt": T1}, before=before, pre_image=False)) == signed(2)


def test_legacy_row_is_the_only_one_carrying_files():
    rows = {r.event: r for r in REDUCERS["documents"].rows}

    assert rows[SIGNATURE_ADDED].files is None
    assert rows[COMPLETED].files is None
    assert rows[POA_APPROVED].files(BOTH_SIGNED) == [("documents/d0c/signed_poa.pdf", "signed_poa.pdf")]


def test_documents_route_through_their_deal():
    assert REDUCERS["documents"].linked_deals == ("dealId",)
    assert REDUCERS["documents"].entity_type == "documents"


def test_completion_is_judged_by_this_change_not_by_a_later_post_image():
    """`fullDocument` from `updateLookup` (Atlas "Full Document", DocumentDB, or the pipeline's own
    lookup of an update without one) is the document as it is when read, which may already hold a
    later change. With a pre-image, the change that signed only the seller's slot must not complete
    the document because the buyer's signature (the next change) is already visible."""
    seller_signs = raw_update(
        "documents",
        {"manualSignatures.0.signedAt": T0},
        BOTH_SIGNED,  # read after the buyer also signed
        before=UNSIGNED,
        document_id=UNSIGNED["_id"],
    )
    buyer_signs = raw_update(
        "documents",
        {"manualSignatures.1.signedAt": T1},
        BOTH_SIGNED,
        before=SELLER_SIGNED,
        document_id=UNSIGNED["_id"],
    )

    assert emitted(seller_signs) == signed(0)
    assert emitted(buyer_signs) == [*signed(1), (COMPLETED, {}), (POA_APPROVED, {})]
