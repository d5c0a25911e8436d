"""The lead request model and the lead document (`distiller.api.leads`), without I/O.

Given a POST body, `parse_lead` either returns a `LeadRequest` or raises `FieldErrors` naming every
wrong or unknown field (dotted for nested ones) and never quoting the value sent.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from distiller.api.errors import FieldErrors
from distiller.api.leads import (
    MAX_BODY_BYTES,
    LeadCreated,
    LeadRequest,
    LeadResponse,
    created_body,
    lead_body,
    lead_document,
    may_submit_to,
    organization_key,
    parse_lead,
    parse_reference,
)
from distiller.core.clock import utc_now

#: The spec's example request (Lead ingestion, POST).
SPEC_EXAMPLE: dict[str, Any] = {
    "callerReferenceId": "LDR-98234",
    "organizationId": "663a1f2b4e8c9a001234abcd",
    "leadCode": "CONQUEST",
    "contact": {
        "name": "Jane Smith",
        "email": "jane@example.com",
        "phone": "555-867-5309",
        "message": "Interested in trading in my truck",
    },
    "vehicle": {
        "vin": "1HGBH41JXMN109186",
        "year": 2019,
        "make": "Honda",
        "model": "Accord",
        "trim": "Sport",
        "mileage": 42000,
    },
    "listingId": "663b2f3c5e9d0b002345bcde",
}
NEXT_YEAR_PLUS_ONE = utc_now().year + 2


def body_with(path: str, value: Any) -> dict[str, Any]:
    """The spec example with `path` (dotted) set to `value`; `...` removes the field."""
    body = copy.deepcopy(SPEC_EXAMPLE)
    *parents, leaf = path.split(".")
    target = body
    for name in parents:
        target = target[name]
    if value is ...:
        del target[leaf]
    else:
        target[leaf] = value
    return body


def refused(body: str | None) -> FieldErrors:
    with pytest.raises(FieldErrors) as caught:
        parse_lead(body)
    error = caught.value
    assert error.status == 400 and error.body["fields"] == error.fields
    return error


def test_the_spec_example_is_accepted_as_sent():
    lead = parse_lead(json.dumps(SPEC_EXAMPLE))

    assert lead.model_dump(exclude_none=True) == SPEC_EXAMPLE


def test_only_the_reference_and_the_organization_are_required():
    lead = parse_lead(json.dumps({"callerReferenceId": "r", "organizationId": "o"}))

    assert (lead.callerReferenceId, lead.organizationId) == ("r", "o")
    assert lead.leadCode is lead.contact is lead.vehicle is lead.listingId is None


@pytest.mark.parametrize(
    ("path", "value", "stored"),
    [
        pytest.param("callerReferenceId", "x" * 128, "x" * 128, id="reference-of-128"),
        pytest.param("callerReferenceId", "CRM 42/ä ✓", "CRM 42/ä ✓", id="reference-with-inner-space-and-unicode"),
        pytest.param("vehicle.vin", "1hgbh41jxmn109186", "1HGBH41JXMN109186", id="vin-stored-upper-case"),
        pytest.param("vehicle.year", NEXT_YEAR_PLUS_ONE, NEXT_YEAR_PLUS_ONE, id="year-two-ahead"),
        pytest.param("vehicle.year", 1900, 1900, id="year-1900"),
        pytest.param("vehicle.mileage", 0, 0, id="mileage-zero"),
        pytest.param("contact.phone", "(555) 867-5309", "(555) 867-5309", id="phone-parentheses"),
        pytest.param("contact.phone", "+1 555.867.5309 ext. 12", "+1 555.867.5309 ext. 12", id="phone-extension"),
        pytest.param("contact.message", "Line one\nLine two\tend", "Line one\nLine two\tend", id="message-lines"),
        pytest.param("contact.name", "José Nuñez", "José Nuñez", id="name-unicode"),
        pytest.param("leadCode", None, None, id="explicit-null"),
    ],
)
def test_accepted_values(path, value, stored):
    lead = parse_lead(json.dumps(body_with(path, value)))

    holder: Any = lead
    for name in path.split("."):
        holder = getattr(holder, name)
    assert holder == stored


#: (field, value sent, a word of the reason): each refused alone, the 400 naming exactly that field.
REFUSED = [
    ("callerReferenceId", ..., "required"),
    ("callerReferenceId", "", "at least 1"),
    ("callerReferenceId", "x" * 129, "at most 128"),
    ("callerReferenceId", "LDR\n1", "printable"),
    ("callerReferenceId", "LDR\x001", "printable"),
    ("callerReferenceId", "LDR\u20281", "printable"),
    ("callerReferenceId", " LDR-1", "whitespace"),
    ("callerReferenceId", "LDR-1 ", "whitespace"),
    ("callerReferenceId", 98234, "valid string"),
    ("callerReferenceId", None, "valid string"),
    ("organizationId", ..., "required"),
    ("organizationId", {"$oid": "663a1f2b4e8c9a001234abcd"}, "valid string"),
    ("leadCode", "", "at least 1"),
    ("leadCode", "X" * 65, "at most 64"),
    ("leadCode", ["CONQUEST"], "valid string"),
    ("listingId", "x" * 129, "at most 128"),
    ("contact", "Jane", "JSON object"),
    ("contact.name", "", "at least 1"),
    ("contact.name", "Jane\nSmith", "printable"),
    ("contact.email", "jane.example.com", "email"),
    ("contact.email", "jane@example", "email"),
    ("contact.email", "jane smith@example.com", "email"),
    ("contact.email", "j" * 250 + "@x.com", "at most 254"),
    ("contact.phone", "call me", "phone"),
    ("contact.phone", "--", "phone"),
    ("contact.phone", 5558675309, "valid string"),
    ("contact.message", "x" * 4001, "at most 4000"),
    ("contact.message", "hi\x07", "printable"),
    ("contact.fax", "555", "unknown field"),
    ("vehicle", [], "JSON object"),
    ("vehicle.vin", "1HGBH41JXMN10918", "17"),
    ("vehicle.vin", "1HGBH41JXMN1091O6", "without I, O or Q"),
    ("vehicle.year", "2019", "valid integer"),
    ("vehicle.year", 2019.5, "valid integer"),
    ("vehicle.year", 2019.0, "valid integer"),
    ("vehicle.year", True, "valid integer"),
    ("vehicle.year", 1899, "1900"),
    ("vehicle.year", NEXT_YEAR_PLUS_ONE + 1, f"to {NEXT_YEAR_PLUS_ONE}"),
    ("vehicle.mileage", -1, "greater than or equal to 0"),
    ("vehicle.mileage", 10_000_001, "less than or equal"),
    ("vehicle.mileage", "42000", "valid integer"),
    ("vehicle.color", "red", "unknown field"),
    ("notes", "call after 5", "unknown field"),
    ("caller_reference_id", "LDR-1", "unknown field"),
]


@pytest.mark.parametrize(("field", "value", "reason"), REFUSED, ids=[f"{f}={v!r}"[:60] for f, v, _ in REFUSED])
def test_refused_values_are_named(field, value, reason):
    error = refused(json.dumps(body_with(field, value)))

    assert list(error.fields) == [field]
    assert reason.lower() in error.fields[field].lower(), error.fields
    assert error.body["error"].startswith(f"{field}: ")


def test_every_wrong_field_is_named_at_once():
    body = body_with("contact.email", "nope")
    body["vehicle"]["mileage"] = -5
    body["extra"] = 1
    body["contact"]["twitter"] = "@x"

    error = refused(json.dumps(body))

    assert set(error.fields) == {"contact.email", "vehicle.mileage", "extra", "contact.twitter"}
    for name in error.fields:
        assert name in error.body["error"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(None, "required", id="absent"),
        pytest.param("", "required", id="empty"),
        pytest.param("  \n", "required", id="blank"),
        pytest.param("{", "not valid JSON", id="truncated"),
        pytest.param("callerReferenceId=LDR-1", "not valid JSON", id="form-encoded"),
        pytest.param("[]", "JSON object", id="array"),
        pytest.param('"LDR-1"', "JSON object", id="string"),
        pytest.param("null", "JSON object", id="null"),
        pytest.param(json.dumps({**SPEC_EXAMPLE, "pad": "x" * MAX_BODY_BYTES}), "larger than", id="oversized"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_named_body(body, reason):
    error = refused(body)

    assert list(error.fields) == ["body"] and reason in error.fields["body"]


def test_reasons_never_quote_the_value_sent():
    secretish = "sk_live_DO_NOT_ECHO_4242"
    body = body_with("contact.email", secretish)
    body["vehicle"]["vin"] = secretish
    body[secretish[:10]] = 1  # an unknown field is named (it is the partner's own key), its value is not

    error = refused(json.dumps(body))

    assert secretish not in json.dumps(error.body)


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "at least 1"), ("x" * 129, "at most 128"), ("a\tb", "printable"), ("a ", "whitespace")],
)
def test_a_path_reference_follows_the_body_rules_and_is_named(text, reason):
    with pytest.raises(FieldErrors) as caught:
        parse_reference("callerReferenceId", text)

    assert list(caught.value.fields) == ["callerReferenceId"]
    assert reason in caught.value.fields["callerReferenceId"]


def test_a_valid_path_reference_is_returned_unchanged():
    assert parse_reference("callerReferenceId", "LDR 98234/ä") == "LDR 98234/ä"


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_any_path_text_is_either_the_reference_itself_or_a_400_naming_it(text):
    try:
        assert parse_reference("callerReferenceId", text) == text
    except FieldErrors as error:
        assert list(error.fields) == ["callerReferenceId"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from([*SPEC_EXAMPLE, "contact", "vehicle", "x"])


@given(st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=8))
@settings(max_examples=300)
def test_any_json_object_is_a_lead_or_a_400_naming_fields(document):
    try:
        lead = parse_lead(json.dumps(document))
    except FieldErrors as error:
        assert error.fields and all(isinstance(reason, str) and reason for reason in error.fields.values())
        assert all(
            name.split(".")[0] in document or name.split(".")[0] in LeadRequest.model_fields for name in error.fields
        )
    else:
        assert lead.callerReferenceId == document["callerReferenceId"]


@pytest.mark.parametrize(
    ("allowlist", "organization", "allowed"),
    [
        pytest.param(("663a1f2b4e8c9a001234abcd",), "663a1f2b4e8c9a001234abcd", True, id="same-hex"),
        pytest.param(("663a1f2b4e8c9a001234abcd",), "663A1F2B4E8C9A001234ABCD", True, id="hex-case-differs"),
        pytest.param(("663A1F2B4E8C9A001234ABCD",), "663a1f2b4e8c9a001234abcd", True, id="allowlist-upper"),
        pytest.param(("dealer-7",), "dealer-7", True, id="string-id"),
        pytest.param(("dealer-7",), "Dealer-7", False, id="string-id-case-matters"),
        pytest.param(("663a1f2b4e8c9a001234abcd",), "663a1f2b4e8c9a001234abce", False, id="other-hex"),
        pytest.param((), "663a1f2b4e8c9a001234abcd", False, id="empty-allowlist"),
    ],
)
def test_the_allowlist_compares_object_ids_case_insensitively_and_other_ids_exactly(allowlist, organization, allowed):
    assert may_submit_to(allowlist, organization) is allowed


def test_organization_key():
    assert organization_key("663A1F2B4E8C9A001234ABCD") == "663a1f2b4e8c9a001234abcd"
    assert organization_key("Dealer-7") == "Dealer-7"


NOW = dt.datetime(2026, 4, 16, 14, 22, tzinfo=dt.UTC)


def test_the_document_of_a_lead():
    lead_id = ObjectId()
    lead = parse_lead(json.dumps(body_with("contact.phone", ...)))

    document = lead_document("acme-motors", lead, NOW, lead_id)

    assert document == {
        "_id": lead_id,
        "partnerId": "acme-motors",
        "appSource": "acme-motors",
        "callerReferenceId": "LDR-98234",
        "organizationId": ObjectId("663a1f2b4e8c9a001234abcd"),
        "leadCode": "CONQUEST",
        "contact": {"name": "Jane Smith", "email": "jane@example.com", "message": "Interested in trading in my truck"},
        "vehicle": SPEC_EXAMPLE["vehicle"],
        "listingId": "663b2f3c5e9d0b002345bcde",
        "status": "new",
        "createdAt": NOW,
        "updatedAt": NOW,
    }


def test_an_organization_id_that_is_no_object_id_is_stored_as_the_string():
    lead = parse_lead(json.dumps({"callerReferenceId": "r", "organizationId": "dealer-7"}))

    document = lead_document("p", lead, NOW)

    assert document["organizationId"] == "dealer-7"
    assert isinstance(document["_id"], ObjectId)
    assert document["contact"] is document["vehicle"] is document["leadCode"] is None


def test_an_upper_case_object_id_is_stored_as_that_object_id():
    lead = parse_lead(json.dumps({"callerReferenceId": "r", "organizationId": "663A1F2B4E8C9A001234ABCD"}))

    assert lead_document("p", lead, NOW)["organizationId"] == ObjectId("663a1f2b4e8c9a001234abcd")


def test_the_bodies_answered_match_the_spec_and_their_models():
    lead_id = ObjectId("663c3f4d6fae0c003456cdef")
    document = lead_document("acme-motors", parse_lead(json.dumps(SPEC_EXAMPLE)), NOW, lead_id)
    document["updatedAt"] = NOW + dt.timedelta(seconds=1, microseconds=2500)

    created, found = created_body(document), lead_body(document)

    # The spec's 201 example, byte for byte.
    assert created == {
        "leadId": "663c3f4d6fae0c003456cdef",
        "callerReferenceId": "LDR-98234",
        "status": "new",
        "createdAt": "2026-04-16T14:22:00.000Z",
    }
    assert found == {
        **created,
        "organizationId": "663a1f2b4e8c9a001234abcd",
        "leadCode": "CONQUEST",
        "updatedAt": "2026-04-16T14:22:01.002Z",
    }
    assert LeadCreated.model_validate(created).model_dump() == created
    assert LeadResponse.model_validate(found).model_dump() == found
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", found["updatedAt"])


def test_the_request_schema_documents_every_field_and_refuses_unknown_ones():
    schema = LeadRequest.model_json_schema()

    assert schema["required"] == ["callerReferenceId", "organizationId"]
    assert schema["additionalProperties"] is False
    assert all(prop.get("description") for prop in schema["properties"].values())
    assert schema["properties"]["callerReferenceId"]["maxLength"] == 128
    for nested in ("LeadContact", "LeadVehicle"):
        assert schema["$defs"][nested]["additionalProperties"] is False
        assert all(prop.get("description") for prop in schema["$defs"][nested]["properties"].values())
