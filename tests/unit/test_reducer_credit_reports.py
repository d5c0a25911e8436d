"""`credit_reports` trigger table (loan payoff): one case per row (id = event name), then the
negative twins. `deal.loan_payoff_docs` fires on the first upload only."""

import datetime as dt

import pytest

from distiller.core.reducers import REDUCERS
from distiller.core.transitions import Transitions
from tests.factories import as_change, oid, raw_insert, raw_update
from tests.factories import post_image as _post_image

T0 = dt.datetime(2026, 4, 21, 14, 0, tzinfo=dt.UTC)

DOCS = "deal.loan_payoff_docs"
CONFIRMED = "deal.loan_payoff_confirmed"

LETTER = {"fileUrl": "uploads/credit-reports/c8/payoff-letter.pdf", "filename": "payoff-letter.pdf"}
STATEMENT = {"fileUrl": "uploads/credit-reports/c8/statement.pdf", "filename": "statement.pdf"}


def report(documents=(), status="pending", **extra):
    payoff = {"status": status, "payoffAmount": 21000}
    if documents is not None:
        payoff["loanPayoffDocuments"] = list(documents)
    return {"_id": oid(0xC8), "dealId": oid(0xD1), "manualPayoffInfo": payoff, **extra}


EMPTY = report()
ONE_UPLOADED = report([LETTER])


def update(updated, *, before=EMPTY, pre_image=True, removed=(), collection="credit_reports"):
    return raw_update(
        collection,
        updated,
        _post_image(before, updated, removed),
        removed=list(removed),
        before=before if pre_image else None,
        document_id=before["_id"],
    )


def emitted(raw):
    change = as_change(raw)
    reducer = REDUCERS[change.collection]
    return [(r.event, detail) for r, detail in reducer.emissions(Transitions(change, change.full_document))]


PATH = "manualPayoffInfo.loanPayoffDocuments"

CASES = [
    # --- one case per row of the table ---
    pytest.param(update({f"{PATH}.0": LETTER}, pre_image=False), [(DOCS, {})], id="deal.loan_payoff_docs"),
    pytest.param(update({"manualPayoffInfo.status": "confirmed"}), [(CONFIRMED, {})], id="deal.loan_payoff_confirmed"),
    # --- first upload, the ways Mongo can report it ---
    pytest.param(update({f"{PATH}.0": LETTER}), [(DOCS, {})], id="element-0-written-with-pre-image"),
    pytest.param(update({PATH: [LETTER]}, pre_image=False), [(DOCS, {})], id="array-set-whole-with-one-element"),
    pytest.param(update({PATH: [LETTER]}), [(DOCS, {})], id="array-set-whole-pre-image-empty"),
    pytest.param(
        update({PATH: [LETTER]}, before=report(documents=None)), [(DOCS, {})], id="array-set-whole-pre-image-missing"
    ),
    pytest.param(
        update({PATH: [LETTER, STATEMENT]}), [(DOCS, {})], id="two-files-at-once-as-first-upload-with-pre-image"
    ),
    pytest.param(
        update({f"{PATH}.0": LETTER, f"{PATH}.1": STATEMENT}, pre_image=False),
        [(DOCS, {})],
        id="two-elements-pushed-at-once-without-pre-image",
    ),
    pytest.param(
        update({"manualPayoffInfo": {"status": "pending", "loanPayoffDocuments": [LETTER]}}, pre_image=False),
        [(DOCS, {})],
        id="parent-set-whole-with-one-file",
    ),
    # --- second upload does not refire ---
    pytest.param(
        update({f"{PATH}.1": STATEMENT}, before=ONE_UPLOADED, pre_image=False), [], id="second-upload-element-1"
    ),
    pytest.param(update({f"{PATH}.1": STATEMENT}, before=ONE_UPLOADED), [], id="second-upload-with-pre-image"),
    pytest.param(
        update({PATH: [LETTER, STATEMENT]}, before=ONE_UPLOADED), [], id="array-set-whole-pre-image-already-populated"
    ),
    pytest.param(
        update({PATH: [LETTER, STATEMENT]}, before=ONE_UPLOADED, pre_image=False),
        [],
        id="array-set-whole-with-two-elements-without-pre-image",
    ),
    pytest.param(
        update({f"{PATH}.0": STATEMENT}, before=ONE_UPLOADED), [], id="first-file-replaced-with-pre-image-populated"
    ),
    # --- other negative twins ---
    pytest.param(update({PATH: []}), [], id="array-set-empty"),
    pytest.param(update({}, before=ONE_UPLOADED, removed=[PATH]), [], id="documents-removed"),
    pytest.param(update({"manualPayoffInfo.payoffAmount": 22000}), [], id="sibling-field-written"),
    pytest.param(update({"updatedAt": T0}), [], id="bookkeeping-only"),
    pytest.param(
        update({"manualPayoffInfo.status": "confirmed"}, before=report(status="confirmed")),
        [],
        id="confirmed-again-with-pre-image-already-confirmed",
    ),
    pytest.param(update({"manualPayoffInfo.status": "rejected"}), [], id="status-to-other-value"),
    # --- "status → confirmed" in any letter case (the spec writes statuses both ways) ---
    pytest.param(
        update({"manualPayoffInfo.status": "CONFIRMED"}), [(CONFIRMED, {})], id="deal.loan_payoff_confirmed-CONFIRMED"
    ),
    pytest.param(
        update({"manualPayoffInfo.status": "Confirmed"}, pre_image=False),
        [(CONFIRMED, {})],
        id="deal.loan_payoff_confirmed-Confirmed-without-pre-image",
    ),
    pytest.param(
        update({"manualPayoffInfo.status": "CONFIRMED"}, before=report(status="confirmed")),
        [],
        id="deal.loan_payoff_confirmed-case-change-alone-is-no-transition",
    ),
    pytest.param(
        update({"manualPayoffInfo.status": "confirmed "}), [], id="deal.loan_payoff_confirmed-not-on-other-text"
    ),
    pytest.param(
        update({"manualPayoffInfo.status": "confirmed"}, before=report(status="confirmed"), pre_image=False),
        [(CONFIRMED, {})],
        id="confirmed-rewritten-without-pre-image-is-a-transition",
    ),
    pytest.param(
        update({f"{PATH}.0": LETTER, "manualPayoffInfo.status": "confirmed"}),
        [(DOCS, {}), (CONFIRMED, {})],
        id="both-rows-in-table-order",
    ),
    pytest.param(raw_insert("credit_reports", ONE_UPLOADED), [], id="insert-with-documents-fires-nothing"),
    pytest.param(
        raw_insert("credit_reports", report([LETTER], status="confirmed")), [], id="insert-confirmed-fires-nothing"
    ),
    # --- the spec's other spelling of the collection ---
    pytest.param(
        update({f"{PATH}.0": LETTER}, collection="creditreports"), [(DOCS, {})], id="alias-creditreports-docs"
    ),
    pytest.param(
        update({"manualPayoffInfo.status": "confirmed"}, collection="creditreports"),
        [(CONFIRMED, {})],
        id="alias-creditreports-confirmed",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_credit_reports_trigger_table(raw, expected):
    assert emitted(raw) == expected


def test_alias_collection_uses_the_same_reducer():
    assert REDUCERS["creditreports"] is REDUCERS["credit_reports"]
    assert REDUCERS["creditreports"].entity_type == "credit_reports"


def test_uploads_one_at_a_time_fire_once():
    first = update({f"{PATH}.0": LETTER}, before=EMPTY)
    second = update({f"{PATH}.1": STATEMENT}, before=ONE_UPLOADED)

    assert [emitted(first), emitted(second)] == [[(DOCS, {})], []]


def test_loan_payoff_docs_row_carries_the_uploaded_files():
    rows = {r.event: r for r in REDUCERS["credit_reports"].rows}

    assert rows[DOCS].files(report([LETTER, STATEMENT])) == [
        ("uploads/credit-reports/c8/payoff-letter.pdf", "payoff-letter.pdf"),
        ("uploads/credit-reports/c8/statement.pdf", "statement.pdf"),
    ]
    assert rows[CONFIRMED].files is None


def test_credit_reports_route_through_their_deal():
    assert REDUCERS["credit_reports"].linked_deals == ("dealId", "deal")
