"""`deals` trigger table: one case per spec row (id = event name), then the negative twins."""

import datetime as dt

import pytest
from bson import Decimal128

from distiller.core.model import EmittedEvent
from distiller.core.pipeline import ChangeOutcome, distill
from distiller.core.reducers import REDUCERS
from distiller.core.transitions import Transitions
from tests.factories import as_change, oid, raw_insert, raw_update
from tests.factories import post_image as _post_image

NOW = dt.datetime(2026, 4, 21, 14, 0, tzinfo=dt.UTC)

DEAL = {
    "_id": oid(0xD1),
    "guid": "d30d5242-c880-4534-8c51-0032dde02093",
    "status": "active",
    "allPartiesConfirmed": False,
    "buyer": {"id": oid(0xB1)},
    "seller": {"id": oid(0x51)},
    "dealState": {
        "buyer": {"status": "invited"},
        "seller": {"status": "invited"},
        "documentsStatus": "notStarted",
        "closingStatus": "notStarted",
    },
    "payment": {"privateAutoPay": {"amount": 18500}},
    "titleAttachment": {},
    "documents": [{"status": "pending"}],
    "negativeEquity": False,
    "negativeEquityFunded": False,
}


def update(updated, *, removed=(), before=DEAL):
    """An update of DEAL as the change stream delivers it, with post-image and (by default) pre-image."""
    return raw_update(
        "deals",
        updated,
        _post_image(before or DEAL, updated, removed),
        removed=list(removed),
        before=before,
        document_id=DEAL["_id"],
    )


def _replace(document, *, before):
    raw = raw_insert("deals", document)
    raw["operationType"] = "replace"
    raw["fullDocumentBeforeChange"] = before
    return raw


def sold(document=DEAL):
    return {**document, "status": "sold"}


CASES = [
    # --- one case per row of the spec's deal trigger table ---
    pytest.param(raw_insert("deals", DEAL), ["deal.created"], id="deal.created"),
    pytest.param(update({"status": "sold"}), ["deal.completed"], id="deal.completed"),
    pytest.param(update({"status": "dealCancelled"}), ["deal.cancelled"], id="deal.cancelled"),
    pytest.param(update({"status": "dealExpired"}), ["deal.expired"], id="deal.expired"),
    pytest.param(update({"allPartiesConfirmed": True}), ["deal.offer_accepted"], id="deal.offer_accepted"),
    pytest.param(update({"dealState.buyer.status": "joined"}), ["deal.buyer_joined"], id="deal.buyer_joined"),
    pytest.param(update({"dealState.seller.status": "joined"}), ["deal.seller_joined"], id="deal.seller_joined"),
    pytest.param(update({"dealState.buyer.status": "readyToClose"}), ["deal.buyer_ready"], id="deal.buyer_ready"),
    pytest.param(update({"dealState.seller.status": "readyToClose"}), ["deal.seller_ready"], id="deal.seller_ready"),
    pytest.param(update({"seller.coSellerInviteSentAt": NOW}), ["deal.co_seller_invited"], id="deal.co_seller_invited"),
    pytest.param(update({"seller.titleConfirmedDate": NOW}), ["deal.title_submitted"], id="deal.title_submitted"),
    pytest.param(update({"titleAttachment.completedDate": NOW}), ["deal.title_approved"], id="deal.title_approved"),
    pytest.param(update({"dealState.documentsStatus": "pending"}), ["deal.docs_submitted"], id="deal.docs_submitted"),
    pytest.param(update({"dealState.documentsStatus": "complete"}), ["deal.docs_approved"], id="deal.docs_approved"),
    pytest.param(
        update({"dealState.closingStatus": "initiated"}), ["deal.payment_initiated"], id="deal.payment_initiated"
    ),
    pytest.param(
        update({"dealState.closingStatus": "acknowledged"}),
        ["deal.payment_acknowledged"],
        id="deal.payment_acknowledged",
    ),
    pytest.param(update({"payment.privateAutoPay.amount": 19250}), ["deal.amount_changed"], id="deal.amount_changed"),
    pytest.param(
        update({"negativeEquity": True}),
        ["deal.negative_equity_identified"],
        id="deal.negative_equity_identified",
    ),
    pytest.param(
        update({"negativeEquityFunded": True}), ["deal.negative_equity_funded"], id="deal.negative_equity_funded"
    ),
    # --- negative twins and shapes of the same triggers ---
    pytest.param(
        raw_insert("deals", {**sold(DEAL), "allPartiesConfirmed": True, "negativeEquity": True}),
        ["deal.created"],
        id="insert-fires-only-created-never-amount_changed",
    ),
    pytest.param(update({"status": "sold"}, before=sold(DEAL)), [], id="same-status-rewritten-with-pre-image"),
    pytest.param(update({"status": "sold"}, before=None), ["deal.completed"], id="same-write-without-pre-image"),
    pytest.param(update({"status": "pendingPayment"}), [], id="status-to-unrelated-value"),
    pytest.param(
        update({"status": "dealCancelled"}, before=sold(DEAL)), ["deal.cancelled"], id="status-from-one-row-to-another"
    ),
    pytest.param(_replace(sold(DEAL), before=DEAL), ["deal.completed"], id="replace-with-pre-image-fires-what-changed"),
    pytest.param(_replace(sold(DEAL), before=sold(DEAL)), [], id="replace-with-identical-pre-image"),
    pytest.param(update({}, removed=["status"]), [], id="status-removed"),
    pytest.param(
        update({"dealState": {**DEAL["dealState"], "buyer": {"status": "joined"}}}),
        ["deal.buyer_joined"],
        id="parent-object-write-fires-like-dotted",
    ),
    pytest.param(
        update({"dealState": {**DEAL["dealState"], "buyer": {"status": "joined"}}}, before=None),
        ["deal.buyer_joined"],
        id="parent-object-write-without-pre-image",
    ),
    pytest.param(
        update({"dealState.buyer": {"status": "readyToClose"}}),
        ["deal.buyer_ready"],
        id="intermediate-parent-write",
    ),
    pytest.param(
        update({"payment": {"privateAutoPay": {"amount": 19250}}}),
        ["deal.amount_changed"],
        id="amount-changed-via-parent-write",
    ),
    pytest.param(update({"payment.privateAutoPay.amount": 18500}), [], id="amount-rewritten-same-value-with-pre-image"),
    pytest.param(update({"payment.privateAutoPay.amount": 18500.0}), [], id="amount-rewritten-same-value-as-double"),
    pytest.param(
        update(
            {"payment.privateAutoPay.amount": Decimal128("18500.00")},
            before={**DEAL, "payment": {"privateAutoPay": {"amount": Decimal128("18500")}}},
        ),
        [],
        id="amount-rewritten-same-value-other-decimal-scale",
    ),
    pytest.param(update({"payment.privateAutoPay.amount": None}), [], id="deal.amount_changed-not-when-written-null"),
    pytest.param(
        update({"payment.privateAutoPay.amount": None}, before=None),
        [],
        id="deal.amount_changed-not-when-written-null-without-pre-image",
    ),
    pytest.param(
        update({}, removed=["payment.privateAutoPay.amount"]), [], id="deal.amount_changed-not-when-amount-removed"
    ),
    pytest.param(
        update(
            {"payment.privateAutoPay.amount": 19000}, before={**DEAL, "payment": {"privateAutoPay": {"amount": None}}}
        ),
        ["deal.amount_changed"],
        id="deal.amount_changed-from-null-to-an-amount",
    ),
    pytest.param(update({"payment.privateAutoPay.fee": 25}), [], id="sibling-of-amount-written"),
    pytest.param(update({"allPartiesConfirmed": False}), [], id="allPartiesConfirmed-set-falsy"),
    pytest.param(
        update({"allPartiesConfirmed": True}, before={**DEAL, "allPartiesConfirmed": True}),
        [],
        id="allPartiesConfirmed-already-true-with-pre-image",
    ),
    pytest.param(update({"negativeEquity": False}), [], id="negativeEquity-set-false"),
    pytest.param(update({"negativeEquityFunded": "yes"}), [], id="negativeEquityFunded-set-non-true"),
    pytest.param(update({"seller.titleConfirmedDate": None}), [], id="title-date-set-null"),
    pytest.param(
        update(
            {"seller.titleConfirmedDate": NOW}, before={**DEAL, "seller": {**DEAL["seller"], "titleConfirmedDate": NOW}}
        ),
        [],
        id="title-date-rewritten-same-value-with-pre-image",
    ),
    pytest.param(
        update({"documents.0.status": "signed"}),
        [],
        id="array-paths-outside-the-table",
    ),
    pytest.param(
        update({"dealState.closingStatus": "acknowledged", "status": "sold"}),
        ["deal.payment_acknowledged", "deal.completed"],
        id="several-rows-in-table-order",
    ),
    pytest.param(
        update(
            {
                "status": "sold",
                "negativeEquity": True,
                "dealState.buyer.status": "joined",
                "allPartiesConfirmed": True,
            }
        ),
        ["deal.offer_accepted", "deal.buyer_joined", "deal.negative_equity_identified", "deal.completed"],
        id="table-order-not-write-order",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_deals_trigger_table(raw, expected):
    change = as_change(raw)

    fired = REDUCERS["deals"].reduce(Transitions(change, change.full_document))

    assert [r.event for r in fired] == expected


class NoLookups:
    """A `Lookups` with no partners; these changes all carry their own document."""

    def partners(self):
        return []

    def documents(self, collection, ids):
        return {}


def test_one_change_firing_several_rows_numbers_them_in_table_order():
    change = as_change(update({"status": "sold", "dealState.closingStatus": "acknowledged"}))

    [outcome] = distill([change], NoLookups())

    assert isinstance(outcome, ChangeOutcome)
    assert [(e.event, e.emission_index) for e in outcome.events] == [
        ("deal.payment_acknowledged", 0),
        ("deal.completed", 1),
    ]
    assert all(isinstance(e, EmittedEvent) and e.trigger.startswith("deals ") for e in outcome.events)
