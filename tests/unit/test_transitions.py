"""`Transitions` and `value_at`: reading one change the way Mongo really writes it."""

import datetime as dt

import pytest

from distiller.core.transitions import MISSING, Transitions, value_at
from tests.factories import as_change, raw_insert, raw_update

SIGNED = dt.datetime(2026, 4, 21, 14, 0, tzinfo=dt.UTC)
CONFIRMED = dt.datetime(2026, 4, 20, 9, 30, tzinfo=dt.UTC)

DEAL = {
    "guid": "d30d5242-c880-4534-8c51-0032dde02093",
    "status": "active",
    "dealState": {"buyer": {"status": "invited"}, "seller": {"status": "joined"}},
    "seller": {"titleConfirmedDate": CONFIRMED},
    "manualSignatures": [{"signedAt": SIGNED}, {"signedAt": None}],
}
SIGNED_BOTH = [{"signedAt": SIGNED}, {"signedAt": SIGNED}]


def _replace(document, before=None):
    raw = raw_insert("deals", document)
    raw["operationType"] = "replace"
    if before is not None:
        raw["fullDocumentBeforeChange"] = {"_id": raw["documentKey"]["_id"], **before}
    return raw


def _expect(touched, after, before, changed):
    return {"touched": touched, "after": after, "before": before, "changed": changed}


NOT_TOUCHED = _expect(False, MISSING, MISSING, False)

CASES = [
    # --- updates: which updatedFields key answers the question ---
    pytest.param(
        raw_update("deals", {"dealState.buyer.status": "joined"}),
        "dealState.buyer.status",
        _expect(True, "joined", MISSING, True),
        id="exact-dotted-path",
    ),
    pytest.param(
        raw_update("deals", {"dealState": {"buyer": {"status": "joined"}, "seller": {"status": "joined"}}}),
        "dealState.buyer.status",
        _expect(True, "joined", MISSING, True),
        id="parent-object-set-whole",
    ),
    pytest.param(
        raw_update("deals", {"dealState": {"seller": {"status": "joined"}}}, before=DEAL),
        "dealState.buyer.status",
        _expect(True, MISSING, "invited", True),
        id="parent-set-whole-without-the-field-drops-it",
    ),
    pytest.param(
        raw_update("deals", {"dealState.seller.status": "readyToClose"}),
        "dealState.buyer.status",
        NOT_TOUCHED,
        id="sibling-path-not-touched",
    ),
    pytest.param(
        raw_update("deals", {"statusHistory": ["sold"]}),
        "status",
        NOT_TOUCHED,
        id="field-name-prefix-is-not-a-parent",
    ),
    pytest.param(
        raw_update(
            "deals",
            {"manualSignatures.1.signedAt": SIGNED},
            {**DEAL, "manualSignatures": SIGNED_BOTH},
            before=DEAL,
        ),
        "manualSignatures",
        _expect(True, SIGNED_BOTH, DEAL["manualSignatures"], True),
        id="descendant-written-reads-post-image",
    ),
    # --- array positions ---
    pytest.param(
        raw_update("deals", {"manualSignatures.1.signedAt": SIGNED}),
        "manualSignatures.1.signedAt",
        _expect(True, SIGNED, MISSING, True),
        id="array-index-exact-path",
    ),
    pytest.param(
        raw_update("deals", {"manualSignatures.1": {"signedAt": SIGNED}}),
        "manualSignatures.1.signedAt",
        _expect(True, SIGNED, MISSING, True),
        id="array-element-set-whole",
    ),
    pytest.param(
        raw_update("deals", {"manualSignatures": SIGNED_BOTH}),
        "manualSignatures.1.signedAt",
        _expect(True, SIGNED, MISSING, True),
        id="array-set-whole-read-by-index",
    ),
    pytest.param(
        raw_update("deals", {"manualSignatures": SIGNED_BOTH}),
        "manualSignatures.2.signedAt",
        _expect(True, MISSING, MISSING, True),
        id="array-set-whole-index-out-of-range",
    ),
    pytest.param(
        raw_update("deals", {"manualSignatures.0.signedAt": SIGNED}),
        "manualSignatures.1.signedAt",
        NOT_TOUCHED,
        id="other-array-index-not-touched",
    ),
    pytest.param(
        raw_update("deals", {"manualSignatures.1": {"signedAt": SIGNED}}),
        "manualSignatures.10.signedAt",
        NOT_TOUCHED,
        id="index-1-is-not-a-parent-of-index-10",
    ),
    # --- removedFields ---
    pytest.param(
        raw_update("deals", {}, removed=["seller.titleConfirmedDate"], before=DEAL),
        "seller.titleConfirmedDate",
        _expect(True, MISSING, CONFIRMED, True),
        id="removed-exact",
    ),
    pytest.param(
        raw_update("deals", {}, removed=["seller"], before=DEAL),
        "seller.titleConfirmedDate",
        _expect(True, MISSING, CONFIRMED, True),
        id="removed-parent",
    ),
    pytest.param(
        raw_update(
            "deals",
            {},
            {**DEAL, "dealState": {"buyer": {}, "seller": {"status": "joined"}}},
            removed=["dealState.buyer.status"],
        ),
        "dealState.buyer",
        _expect(True, {}, MISSING, True),
        id="removed-descendant-reads-post-image",
    ),
    # --- insert: every field written, no before ---
    pytest.param(
        raw_insert("deals", DEAL),
        "status",
        _expect(True, "active", MISSING, True),
        id="insert-top-level-field",
    ),
    pytest.param(
        raw_insert("deals", DEAL),
        "dealState.seller.status",
        _expect(True, "joined", MISSING, True),
        id="insert-nested-field",
    ),
    pytest.param(
        raw_insert("deals", DEAL),
        "negativeEquity",
        NOT_TOUCHED,
        id="insert-absent-field",
    ),
    # --- replace ---
    pytest.param(
        _replace({**DEAL, "status": "sold"}, before=DEAL),
        "status",
        _expect(True, "sold", "active", True),
        id="replace-with-pre-image-changed-field",
    ),
    pytest.param(
        _replace({**DEAL, "status": "sold"}, before=DEAL),
        "guid",
        _expect(True, DEAL["guid"], DEAL["guid"], False),
        id="replace-with-pre-image-unchanged-field",
    ),
    pytest.param(
        _replace({"guid": DEAL["guid"], "status": "sold"}, before=DEAL),
        "seller.titleConfirmedDate",
        _expect(True, MISSING, CONFIRMED, True),
        id="replace-with-pre-image-dropped-field-is-removed",
    ),
    pytest.param(
        _replace({**DEAL, "status": "sold"}),
        "status",
        _expect(True, "sold", MISSING, True),
        id="replace-without-pre-image",
    ),
    pytest.param(
        _replace({"guid": DEAL["guid"], "status": "sold"}),
        "seller.titleConfirmedDate",
        NOT_TOUCHED,
        id="replace-without-pre-image-cannot-see-dropped-field",
    ),
    # --- pre-image suppresses same-value writes; null is a value ---
    pytest.param(
        raw_update("deals", {"status": "active"}, before=DEAL),
        "status",
        _expect(True, "active", "active", False),
        id="same-value-write-with-pre-image-is-not-changed",
    ),
    pytest.param(
        raw_update("deals", {"status": "active"}),
        "status",
        _expect(True, "active", MISSING, True),
        id="same-value-write-without-pre-image-is-changed",
    ),
    pytest.param(
        raw_update("deals", {"dealState": DEAL["dealState"]}, before=DEAL),
        "dealState.buyer.status",
        _expect(True, "invited", "invited", False),
        id="parent-rewritten-same-value-with-pre-image",
    ),
    pytest.param(
        raw_update("deals", {"seller.titleConfirmedDate": None}, before=DEAL),
        "seller.titleConfirmedDate",
        _expect(True, None, CONFIRMED, True),
        id="explicit-null-written",
    ),
    pytest.param(
        raw_update("deals", {"negativeEquity": None}, before=DEAL),
        "negativeEquity",
        _expect(True, None, MISSING, True),
        id="explicit-null-over-absent-is-a-change",
    ),
]


def _same(actual, expected):
    return actual is MISSING if expected is MISSING else actual is not MISSING and actual == expected


@pytest.mark.parametrize(("raw", "path", "expected"), CASES)
def test_transitions(raw, path, expected):
    change = as_change(raw)

    t = Transitions(change, change.full_document)

    actual = _expect(t.touched(path), t.after(path), t.before(path), t.changed(path))
    assert actual["touched"] is expected["touched"]
    assert actual["changed"] is expected["changed"]
    assert _same(actual["after"], expected["after"]), actual["after"]
    assert _same(actual["before"], expected["before"]), actual["before"]


def test_insert_marks_itself_and_writes_every_top_level_field():
    t = Transitions(as_change(raw_insert("deals", DEAL)))

    assert t.is_insert
    assert not t.has_pre_image
    assert sorted(t.written_paths()) == sorted(["_id", *DEAL])


def test_written_paths_lists_updated_then_removed_as_mongo_reported_them():
    raw = raw_update("deals", {"dealState.buyer.status": "joined", "manualSignatures.1": {}}, removed=["seller"])

    t = Transitions(as_change(raw))

    assert not t.is_insert
    assert t.written_paths() == ["dealState.buyer.status", "manualSignatures.1", "seller"]


VALUE_AT = [
    pytest.param({"a": {"b": 1}}, "a.b", 1, id="nested-object"),
    pytest.param({"a": [{"b": 1}, {"b": 2}]}, "a.1.b", 2, id="array-index"),
    pytest.param({"a": [{"b": 1}]}, "a.1.b", MISSING, id="array-index-out-of-range"),
    pytest.param({"a": [{"b": 1}]}, "a.x", MISSING, id="non-numeric-part-on-array"),
    pytest.param({"a": None}, "a", None, id="explicit-null"),
    pytest.param({"a": None}, "a.b", MISSING, id="walk-through-null"),
    pytest.param({"a": "text"}, "a.b", MISSING, id="walk-through-scalar"),
    pytest.param({}, "a", MISSING, id="absent"),
    pytest.param(None, "a", MISSING, id="no-document"),
]


@pytest.mark.parametrize(("document", "path", "expected"), VALUE_AT)
def test_value_at(document, path, expected):
    assert _same(value_at(document, path), expected)


def test_missing_is_falsy_and_distinct_from_null():
    assert not MISSING
    assert MISSING is not None
    assert MISSING != None  # noqa: E711 — the comparison itself is what is under test
    assert repr(MISSING) == "MISSING"
