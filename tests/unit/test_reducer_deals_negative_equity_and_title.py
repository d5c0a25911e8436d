"""The `deals` rows for negative equity and title files: the negative-equity pair (user vs admin path) and the title
rows' files. One case per row (id = event name), then the negative twins."""

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distiller.core.reducers import REDUCERS
from distiller.core.transitions import Transitions
from tests.factories import as_change, oid, raw_insert, raw_update
from tests.factories import post_image as _post_image

NOW = dt.datetime(2026, 4, 21, 14, 0, tzinfo=dt.UTC)

IDENTIFIED = "deal.negative_equity_identified"
REPORTED = "deal.negative_equity_reported"
AMOUNT_CHANGED = "deal.amount_changed"
PAIR = {IDENTIFIED, REPORTED}

DEAL = {
    "_id": oid(0xD1),
    "guid": "d30d5242-c880-4534-8c51-0032dde02093",
    "status": "active",
    "buyer": {"id": oid(0xB1)},
    "seller": {"id": oid(0x51)},
    "payment": {"privateAutoPay": {"amount": 18500}},
    "negativeEquity": False,
    "negativeEquityFunded": False,
    "titleAttachment": {"files": ["deals/d1/title-front.jpg", "deals/d1/title-back.jpg"]},
}


def update(updated, *, before=DEAL, pre_image=True):
    return raw_update(
        "deals", updated, _post_image(before, updated), before=before if pre_image else None, document_id=DEAL["_id"]
    )


def emissions(raw):
    change = as_change(raw)
    reducer = REDUCERS["deals"]
    return change, reducer.emissions(Transitions(change, change.full_document))


def emitted(raw):
    return [(r.event, detail) for r, detail in emissions(raw)[1]]


FLAGGED = {**DEAL, "negativeEquity": True}

CASES = [
    # --- one case per row ---
    pytest.param(update({"negativeEquity": True}), [(IDENTIFIED, {})], id="deal.negative_equity_identified"),
    pytest.param(
        update({"negativeEquity": True, "payment.privateAutoPay.amount": 21000}),
        [(AMOUNT_CHANGED, {}), (REPORTED, {})],
        id="deal.negative_equity_reported",
    ),
    # --- shapes of the two paths ---
    pytest.param(
        update({"negativeEquity": True, "updatedAt": NOW, "manualPayoffInfo.status": "ACCEPTED"}),
        [(IDENTIFIED, {})],
        id="identified-with-unrelated-writes",
    ),
    pytest.param(
        update({"negativeEquity": True, "payment": {"privateAutoPay": {"amount": 21000}}}),
        [(AMOUNT_CHANGED, {}), (REPORTED, {})],
        id="reported-via-parent-write-of-amount",
    ),
    pytest.param(
        update({"negativeEquity": True, "payment.privateAutoPay.amount": 21000}, pre_image=False),
        [(AMOUNT_CHANGED, {}), (REPORTED, {})],
        id="reported-without-pre-image",
    ),
    pytest.param(
        update({"negativeEquity": True}, pre_image=False),
        [(IDENTIFIED, {})],
        id="identified-without-pre-image",
    ),
    pytest.param(
        update({"negativeEquity": True, "payment.privateAutoPay.fee": 25}),
        [(IDENTIFIED, {})],
        id="sibling-of-amount-written-is-still-the-admin-path",
    ),
    # --- negative twins ---
    pytest.param(update({"payment.privateAutoPay.amount": 21000}), [(AMOUNT_CHANGED, {})], id="amount-alone"),
    pytest.param(
        update({"negativeEquity": True}, before=FLAGGED),
        [],
        id="flag-already-true-with-pre-image",
    ),
    pytest.param(
        update({"negativeEquity": True, "payment.privateAutoPay.amount": 22000}, before=FLAGGED),
        [(AMOUNT_CHANGED, {})],
        id="amount-edit-on-already-flagged-deal",
    ),
    pytest.param(
        update({"negativeEquity": False, "payment.privateAutoPay.amount": 17000}),
        [(AMOUNT_CHANGED, {})],
        id="flag-written-false-with-amount",
    ),
    pytest.param(update({"negativeEquity": "true"}), [], id="flag-written-non-boolean"),
    pytest.param(raw_insert("deals", FLAGGED), [("deal.created", {})], id="insert-flagged-fires-only-created"),
    # --- title rows (their files are tested below) ---
    pytest.param(update({"seller.titleConfirmedDate": NOW}), [("deal.title_submitted", {})], id="deal.title_submitted"),
    pytest.param(
        update({"titleAttachment.completedDate": NOW}), [("deal.title_approved", {})], id="deal.title_approved"
    ),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_issue3_deal_rows(raw, expected):
    assert emitted(raw) == expected


@given(
    flag=st.sampled_from(["absent", True, False]),
    amount=st.sampled_from(["absent", "same", "new", "parent"]),
    before_flag=st.sampled_from([None, False, True]),
    extra=st.booleans(),
)
def test_exactly_one_of_the_pair_per_change_that_sets_the_flag(flag, amount, before_flag, extra):
    updated = {}
    if flag != "absent":
        updated["negativeEquity"] = flag
    if amount == "same":
        updated["payment.privateAutoPay.amount"] = 18500
    elif amount == "new":
        updated["payment.privateAutoPay.amount"] = 21000
    elif amount == "parent":
        updated["payment"] = {"privateAutoPay": {"amount": 21000}}
    if extra:
        updated["updatedAt"] = NOW
    before = {**DEAL, "negativeEquity": bool(before_flag)}
    raw = update(updated, before=before, pre_image=before_flag is not None)

    fired = [event for event, _ in emitted(raw) if event in PAIR]

    sets_flag = flag is True and before_flag is not True
    assert len(fired) == (1 if sets_flag else 0)
    if sets_flag:
        assert fired == [REPORTED if amount != "absent" else IDENTIFIED]


@pytest.mark.parametrize(
    "updated",
    [{"negativeEquity": True}, {"negativeEquity": True, "payment.privateAutoPay.amount": 21000}],
    ids=["identified", "reported"],
)
def test_both_negative_equity_payloads_carry_the_flag(updated):
    change, fired = emissions(update(updated))
    reducer = REDUCERS["deals"]

    payloads = {r.event: (r.payload or reducer.payload)(change.full_document, detail) for r, detail in fired}

    [event] = PAIR & set(payloads)
    assert payloads[event]["negativeEquity"] is True
    assert payloads[event]["id"] == str(oid(0xD1))
    assert payloads[event]["amount"] == (21000 if event == REPORTED else 18500)
    if AMOUNT_CHANGED in payloads:
        assert "negativeEquity" not in payloads[AMOUNT_CHANGED]


def test_even_a_deal_without_the_flag_in_the_document_gets_negativeEquity_true_on_the_pair():
    rows = {r.event: r for r in REDUCERS["deals"].rows}

    for event in PAIR:
        assert rows[event].payload is not None
        assert rows[event].payload({**DEAL, "negativeEquity": None})["negativeEquity"] is True


@pytest.mark.parametrize("event", ["deal.title_submitted", "deal.title_approved"])
@pytest.mark.parametrize(
    ("attachment", "expected"),
    [
        (
            {"files": ["deals/d1/title-front.jpg", "deals/d1/title-back.jpg"]},
            [("deals/d1/title-front.jpg", "title-front.jpg"), ("deals/d1/title-back.jpg", "title-back.jpg")],
        ),
        (
            {"files": [{"key": "deals/d1/a1b2.jpg", "filename": "title-front.jpg"}]},
            [("deals/d1/a1b2.jpg", "title-front.jpg")],
        ),
        ({"images": ["deals/d1/front.png"]}, [("deals/d1/front.png", "front.png")]),
        ({"photos": [{"s3Key": "deals/d1/back.png", "name": "back.png"}]}, [("deals/d1/back.png", "back.png")]),
        ({}, []),
    ],
    ids=["strings", "objects", "images-fallback", "photos-fallback", "none-uploaded"],
)
def test_title_rows_carry_the_title_attachment_files(event, attachment, expected):
    [row] = [r for r in REDUCERS["deals"].rows if r.event == event]

    assert row.files is not None
    assert row.files({**DEAL, "titleAttachment": attachment}) == expected


def test_only_the_title_rows_of_deals_carry_files():
    assert sorted(r.event for r in REDUCERS["deals"].rows if r.files is not None) == [
        "deal.title_approved",
        "deal.title_submitted",
    ]
