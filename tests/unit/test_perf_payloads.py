"""Compiled payload tables (`payloads.FieldTable`) and the routing reads' shortcuts answer exactly
what `field_value`/`field_id`/`plain_at` answer, for every shape a field can take."""

import json
import math

import pytest
from bson import ObjectId

from distiller.core import payloads
from distiller.core.ejson import id_string, plain
from distiller.core.lazy_ejson import ExtendedJSONError, LazyDocument, loads_lazy
from distiller.core.payloads import FieldTable, field_id, field_value, ident, value
from distiller.core.plain_read import oid_text, plain_at, plain_parts
from distiller.core.routing import _routing_text
from distiller.core.transitions import MISSING, split_path, value_at

OID = "64A1F2E3B5C8D90012345678"
LEAVES: list[object] = [
    "text",
    "",
    None,
    True,
    7,
    2**63,
    -(2**63) - 1,
    1.5,
    [1, {"$oid": OID}],
    {"$oid": OID},
    {"$oid": "zz"},
    {"$oid": OID.lower(), "x": 1},
    {"$date": "2026-04-01T13:00:00.824Z"},
    {"$numberDecimal": "18500.00"},
    {"nested": {"$oid": OID}},
]
TABLE = FieldTable(
    ident("id", "_id"),
    value("top"),
    value("child", "parent.child", "fallback"),
    ident("childId", "parent.child", "fallback"),
    value("deep", "a.b.c", "fallback"),
    ident("deepId", "a.b.c", "fallback"),
)


def documents() -> list[tuple[str, object]]:
    """(description, JSON line whose `fullDocument` is read lazily) for each leaf at each place."""
    shapes: list[tuple[str, object]] = []
    for leaf in LEAVES:
        shapes.append((f"top={leaf!r}", {"_id": leaf, "top": leaf}))
        shapes.append((f"child={leaf!r}", {"parent": {"child": leaf}, "fallback": {"$oid": OID}}))
        shapes.append((f"deep={leaf!r}", {"a": {"b": {"c": leaf}}, "fallback": "f"}))
    shapes += [
        ("parent a wrapper", {"parent": {"$oid": OID}, "fallback": "f"}),
        ("parent a list", {"parent": [{"child": "x"}], "fallback": "f"}),
        ("parent a text", {"parent": "x", "fallback": None}),
        ("parent holds a wrapper key", {"parent": {"child": "x", "$date": 1}, "fallback": "f"}),
        ("nothing", {}),
    ]
    return shapes


def expected(document: dict) -> dict:
    return {
        "id": field_id(document, "_id"),
        "top": field_value(document, "top"),
        "child": field_value(document, "parent.child", "fallback"),
        "childId": field_id(document, "parent.child", "fallback"),
        "deep": field_value(document, "a.b.c", "fallback"),
        "deepId": field_id(document, "a.b.c", "fallback"),
    }


def outcome(read, document: dict) -> object:
    try:
        return read(document)
    except ExtendedJSONError as exc:
        return ("error", str(exc))


def same(a: object, b: object) -> bool:
    """Equal, NaN included (a float field may hold one)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def _decodes(document: dict) -> bool:
    doc = loads_lazy(json.dumps({"operationType": "insert", "fullDocument": document}))["fullDocument"]
    try:
        doc.decoded() if isinstance(doc, LazyDocument) else doc
    except ExtendedJSONError:
        return False
    return True


def table_cases() -> list:
    """Each document read lazily, as a plain dict, and decoded: the last only where the decoder
    accepts every wrapper (a refused one leaves no decoded document to read)."""
    return [
        pytest.param(name, document, kind, id=f"{name}-{kind}")
        for name, document in documents()
        for kind in ("lazy", "plain dict", "decoded")
        if kind != "decoded" or _decodes(document)
    ]


@pytest.mark.parametrize(("name", "document", "kind"), table_cases())
def test_a_compiled_table_reads_what_the_field_functions_read(name, document, kind):
    line = json.dumps({"operationType": "insert", "fullDocument": document})

    def fresh() -> dict:
        doc = loads_lazy(line)["fullDocument"]
        if kind == "plain dict":
            return json.loads(json.dumps(document))
        if kind == "decoded":
            return doc.decoded() if isinstance(doc, LazyDocument) else doc
        return doc

    assert same(outcome(TABLE.read, fresh()), outcome(expected, fresh()))


def test_the_payload_builders_use_their_tables():
    deal = loads_lazy(json.dumps({"fullDocument": {"_id": {"$oid": OID}, "buyer": {"id": {"$oid": OID}}}}))
    payload = payloads.deal_payload(deal["fullDocument"])

    assert payload["id"] == payload["buyerId"] == OID.lower()
    assert list(payload) == [c.name for c in payloads.DEAL_FIELDS.columns]


@pytest.mark.parametrize(
    ("raw", "text"),
    [({"$oid": OID}, OID.lower()), ({"$oid": "zz"}, None), ({"$oid": OID, "x": 1}, None), ({"$oid": 5}, None)],
)
def test_oid_text_is_the_text_plain_gives_a_well_formed_object_id(raw, text):
    assert oid_text(raw) == text
    if text is not None:
        assert text == str(ObjectId(raw["$oid"]))


@pytest.mark.parametrize("path", ["top", "parent.child", "a.b.c", "absent", "parent.absent"])
def test_plain_parts_is_plain_at_with_the_path_split(path):
    document = loads_lazy(
        json.dumps({"fullDocument": {"top": 1, "parent": {"child": {"$oid": OID}}, "a": {"b": {"c": None}}}})
    )["fullDocument"]

    assert plain_parts(document, split_path(path), path) == plain_at(document, path)
    assert (plain_at(document, path) is MISSING) == path.endswith("absent")


def reference_text(document: dict, path: str) -> str | None:
    """`routing._routing_text` as it read before its top-level shortcuts: through `plain_at` only."""
    found = plain_at(document, path)
    if found is MISSING:
        return None
    if type(found) is str and found:
        return found
    if found is not None and found != "":
        return id_string(found) or ""
    raw = value_at(document, path)
    if raw is None or raw == "":
        return None
    return id_string(plain(raw)) or ""


@pytest.mark.parametrize(
    "deal",
    [
        {"appSource": "acme", "buyer": {"organizationId": {"$oid": OID}}, "offerId": {"$oid": OID}},
        {"appSource": {"$oid": OID}, "seller": {"organizationId": "org"}, "offerId": "o1"},
        {"appSource": "", "buyer": {"organizationId": None}, "offerId": {"$oid": "zz"}},
        {"appSource": None, "offerId": 5},
        {"appSource": [1], "offerId": {"$oid": OID, "x": 1}},
    ],
)
@pytest.mark.parametrize("path", ["appSource", "offerId", "buyer.organizationId", "seller.organizationId"])
def test_routing_texts_read_as_through_plain_at(deal, path):
    line = json.dumps({"fullDocument": deal})

    def outcome_of(read, document: dict) -> object:
        try:
            return read(document, path)
        except ExtendedJSONError as exc:
            return ("error", str(exc))

    for fresh in (lambda: loads_lazy(line)["fullDocument"], lambda: json.loads(json.dumps(deal))):
        assert outcome_of(_routing_text, fresh()) == outcome_of(reference_text, fresh())
