"""The /data response DTOs: raw Mongo documents in, the spec's example shapes out, as plain JSON."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from bson import Decimal128, ObjectId

from distiller.api.dto import (
    deal_document_entry,
    deal_dto,
    delivery_dto,
    document_dto,
    file_dto,
    generated_document_dto,
    internal_offer_statuses,
    listing_dto,
    offer_dto,
)

T0 = dt.datetime(2026, 4, 21, 14, 0, 0, 123000, tzinfo=dt.UTC)
T0_ISO = "2026-04-21T14:00:00.123Z"
T1 = dt.datetime(2026, 4, 21, 15, 30, tzinfo=dt.UTC)
T1_ISO = "2026-04-21T15:30:00.000Z"

DEAL_ID, LISTING_ID, OFFER_ID = ObjectId("6a0243d9a30d4d0026d00e7c"), ObjectId("6a024361a30d4d0026d00db2"), ObjectId()
BUYER_ID, SELLER_ID = ObjectId("6614a0c1e4b0a10000000b01"), ObjectId("6614a0c1e4b0a10000000c01")
ORG_BUYER, ORG_SELLER = ObjectId("67e446a09d2eb254a3b130e7"), ObjectId("67e446a09d2eb254a3b130e8")
DOC_ID = ObjectId("6a0243d9a30d4d0026d00fff")

# --------------------------------------------------------------------------------------------
# The spec's examples (field names and nesting; values are the example's placeholders)
# --------------------------------------------------------------------------------------------

_DATE = "2019-08-24T14:15:22Z"
_PARTY = {
    "id": "6a0243d9a30d4d0026d00e7c",
    "organizationId": "67e446a09d2eb254a3b130e7",
    "status": "invited",
    "titleConfirmedDate": _DATE,
    "confirmedDate": _DATE,
    "infoCompletedAt": _DATE,
    "termsConfirmedAt": _DATE,
    "paymentConfirmedAt": _DATE,
    "titleConfirmedAt": _DATE,
    "servicesConfirmedAt": _DATE,
    "titleSubmittedAt": _DATE,
}
SPEC_DEAL = {
    "id": "6a0243d9a30d4d0026d00e7c",
    "guid": "653a905c-73b2-4e4b-bdf6-0e25b1e71363",
    "status": "active",
    "closingStatus": "none",
    "closingFeePayer": "buyer",
    "state": "string",
    "odometer": "string",
    "appSource": "string",
    "listingId": "string",
    "offerId": "string",
    "currentOfferStatus": "pending",
    "documentsStatus": "empty",
    "negativeEquity": True,
    "negativeEquityFunded": True,
    "amount": 0,
    "currency": "USD",
    "buyer": _PARTY,
    "seller": _PARTY,
    "payment": {
        "privateAutoPay": {"amount": 0, "transferDate": _DATE, "checkDelivery": "pickup", "payoutSourceType": "wallet"},
        "cash": {"amount": 0, "transferDate": _DATE},
        "loan": {"amount": 0, "transferDate": _DATE},
        "crypto": {"btc": {"amount": 0, "transferDate": _DATE}},
    },
    "documents": [{"id": "string", "status": "string", "docClassification": "string"}],
    "dealState": {"documentsStatus": "empty"},
    "titleApprovedAt": _DATE,
    "ownershipType": "owned",
    "payoffType": "LOAN",
    "loanPayoffDocs": [{"fileUrl": "string"}],
    "loanPayoffConfirmed": True,
    "statusHistory": [{"value": "string", "previous": "string", "date": _DATE}],
    "createdAt": _DATE,
    "updatedAt": _DATE,
}
SPEC_OFFER = {
    "id": "6a0243d8a30d4d0026d00e7a",
    "guid": "653a905c-73b2-4e4b-bdf6-0e25b1e71363",
    "status": "pending",
    "price": 0,
    "currency": "USD",
    "listingId": "string",
    "offeredByUserId": "string",
    "offeredByOrganizationId": "string",
    "offeredToUserId": "string",
    "offeredToOrganizationId": "string",
    "externalId": "string",
    "buyerExternalId": "string",
    "sellerExternalId": "string",
    "appSource": "string",
    "dealNowExpiration": _DATE,
    "titleDeliveryMethod": "InPerson",
    "createdAt": _DATE,
    "updatedAt": _DATE,
}
SPEC_LISTING = {
    "id": "6a024361a30d4d0026d00db2",
    "listingNo": "string",
    "slug": "string",
    "title": "string",
    "status": "pending",
    "sellerId": "string",
    "organizationId": "string",
    "price": 0,
    "vehicle": {
        "year": 0,
        "make": "string",
        "model": "string",
        "trim": "string",
        "vin": "WBA3B9C59FJ466190",
        "bodyStyle": "string",
        "mileage": 0,
        "exteriorColor": "string",
        "interiorColor": "string",
        "transmission": "string",
        "driveType": "string",
        "fuel": "string",
        "cylinders": "string",
    },
    "ownershipInfo": {"ownershipType": "have-title", "vehicleHaveLien": True},
    "condition": "new",
    "appSource": "string",
    "createdAt": _DATE,
    "updatedAt": _DATE,
}
SPEC_DELIVERY = {
    "id": "string",
    "partnerId": "string",
    "event": "deal.created",
    "status": "delivered",
    "url": "string",
    "statusCode": 0,
    "attemptedAt": _DATE,
    "responseBodyExcerpt": "string",
    "error": "string",
    "payload": {},
}
_SIGNERS = [{"signerRole": "seller", "signedAt": _DATE}]
_SIGNED = [{"key": "string", "url": "string", "expiresAt": _DATE}]
SPEC_DOCUMENT = {
    "id": "string",
    "dealId": "string",
    "docClassification": "string",
    "status": "string",
    "signers": _SIGNERS,
    "signed": _SIGNED,
}
SPEC_GENERATED_DOCUMENT = {
    "id": "string",
    "docClassification": "string",
    "name": "string",
    "signers": _SIGNERS,
    "signed": _SIGNED,
}
SPEC_DEAL_DOCUMENTS_ENTRY = {
    "id": "string",
    "docClassification": "string",
    "status": "string",
    "name": "string",
    "signers": _SIGNERS,
    "signed": _SIGNED,
}


def shape(value: Any) -> Any:
    """Field names and nesting only: objects keep their keys, arrays their first item's shape."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {p: v for k, sub in value.items() for p, v in leaves(sub, f"{path}.{k}" if path else k).items()}
    return {path: value}


def assert_plain_json(value: Any) -> None:
    assert json.loads(json.dumps(value)) == value  # no ObjectId, datetime or Decimal128 survives


# --------------------------------------------------------------------------------------------
# Realistic raw documents
# --------------------------------------------------------------------------------------------


def party(user_id, org_id, prefix_day: int) -> dict[str, Any]:
    return {
        "id": user_id,
        "organizationId": org_id,
        "status": "joined",
        **{
            name: T0 + dt.timedelta(days=prefix_day, minutes=i)
            for i, name in enumerate(
                (
                    "titleConfirmedDate",
                    "confirmedDate",
                    "infoCompletedAt",
                    "termsConfirmedAt",
                    "paymentConfirmedAt",
                    "titleConfirmedAt",
                    "servicesConfirmedAt",
                    "titleSubmittedAt",
                )
            )
        },
    }


def raw_deal() -> dict[str, Any]:
    return {
        "_id": DEAL_ID,
        "guid": "653a905c-73b2-4e4b-bdf6-0e25b1e71363",
        "status": "active",
        "closingStatus": "initiated",
        "closingFeePayer": "buyer",
        "state": "TX",
        "odometer": "41200",
        "appSource": "bayside-auto",
        "listingId": LISTING_ID,
        "offerId": OFFER_ID,
        "currentOfferStatus": "declined",
        "documentsStatus": "pending",
        "negativeEquity": False,
        "negativeEquityFunded": False,
        "amount": Decimal128("18500.00"),
        "currency": "USD",
        "buyer": party(BUYER_ID, ORG_BUYER, 0),
        "seller": party(SELLER_ID, str(ORG_SELLER), 1),
        "payment": {
            "privateAutoPay": {
                "amount": Decimal128("18500"),
                "transferDate": T1,
                "checkDelivery": "pickup",
                "payoutSourceType": "wallet",
            },
            "cash": {"amount": 250, "transferDate": T1},
            "loan": {"amount": Decimal128("1000.50"), "transferDate": T1},
            "crypto": {"btc": {"amount": 0.01, "transferDate": T1}},
        },
        "documents": [DOC_ID, {"_id": ObjectId(), "status": "signed", "docClassification": "poa"}],
        "dealState": {"documentsStatus": "pending", "closingStatus": "initiated", "buyer": {"status": "joined"}},
        "titleApprovedAt": T1,
        "ownershipType": "financed",
        "payoffType": "LOAN",
        "loanPayoffDocs": [{"fileUrl": "uploads/payoff.pdf", "uploadedAt": T0}, "uploads/payoff-2.pdf"],
        "loanPayoffConfirmed": True,
        "statusHistory": [{"value": "active", "previous": "pending", "date": T0}],
        "createdAt": T0,
        "updatedAt": T1,
        "__v": 3,
        "internalNotes": "never shown to partners",
    }


def raw_offer(status: str = "pending") -> dict[str, Any]:
    return {
        "_id": OFFER_ID,
        "guid": "653a905c-73b2-4e4b-bdf6-0e25b1e71363",
        "status": status,
        "price": Decimal128("17250.00"),
        "currency": "USD",
        "listingId": LISTING_ID,
        "offeredByUserId": BUYER_ID,
        "offeredByOrganizationId": ORG_BUYER,
        "offeredToUserId": SELLER_ID,
        "offeredToOrganizationId": str(ORG_SELLER),
        "externalId": "ext-1",
        "buyerExternalId": "crm-b-1",
        "sellerExternalId": "crm-s-1",
        "appSource": "bayside-auto",
        "dealNowExpiration": T1,
        "titleDeliveryMethod": "InPerson",
        "createdAt": T0,
        "updatedAt": T1,
        "__v": 0,
    }


def raw_listing() -> dict[str, Any]:
    return {
        "_id": LISTING_ID,
        "listingNo": "PA-210431",
        "slug": "2021-honda-civic-pa-210431",
        "title": "2021 Honda Civic EX",
        "status": "live",
        "sellerId": SELLER_ID,
        "organizationId": ORG_SELLER,
        "price": Decimal128("18500"),
        "vehicle": {
            "year": 2021,
            "make": "Honda",
            "model": "Civic",
            "trim": "EX",
            "vin": "1HGBH41JXMN109186",
            "bodyStyle": "Sedan",
            "mileage": 41200,
            "exteriorColor": "Blue",
            "interiorColor": "Black",
            "transmission": "CVT",
            "driveType": "FWD",
            "fuel": "Gasoline",
            "cylinders": "4",
        },
        "ownershipInfo": {"ownershipType": "owned", "vehicleHaveLien": False},
        "condition": "used",
        "appSource": "bayside-auto",
        "createdAt": T0,
        "updatedAt": T1,
        "cashOffer": {"amount": 15000},
    }


def raw_delivery() -> dict[str, Any]:
    return {
        "_id": ObjectId("6a0243d9a30d4d0026d00aaa"),
        "partnerId": "bayside-auto",
        "event": "deal.created",
        "eventId": "a" * 64,
        "attempt": 1,
        "status": "failed",
        "url": "https://bayside-auto.example/hooks",
        "statusCode": 503,
        "attemptedAt": T0,
        "responseBodyExcerpt": "busy",
        "error": "HTTP 503",
        "deadLettered": False,
        "payload": {"id": str(DEAL_ID), "eventId": "a" * 64, "entityType": "deals", "amount": 18500},
    }


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "raw", "spec"),
    [
        (deal_dto, raw_deal, SPEC_DEAL),
        (offer_dto, raw_offer, SPEC_OFFER),
        (listing_dto, raw_listing, SPEC_LISTING),
    ],
    ids=["deal", "offer", "listing"],
)
def test_each_dto_has_exactly_the_spec_example_fields(build, raw, spec):
    out = build(raw())
    assert shape(out) == shape(spec)
    assert list(out) == list(spec)  # the example's order, too
    assert_plain_json(out)


def test_delivery_dto_has_the_spec_fields_plus_event_id_and_attempt():
    out = delivery_dto(raw_delivery())
    assert list(out) == [*SPEC_DELIVERY, "eventId", "attempt"]
    assert out["id"] == "6a0243d9a30d4d0026d00aaa"
    assert out["attemptedAt"] == T0_ISO
    assert out["payload"] == raw_delivery()["payload"]
    assert (out["eventId"], out["attempt"], out["statusCode"]) == ("a" * 64, 1, 503)
    assert "deadLettered" not in out
    assert_plain_json(out)


@pytest.mark.parametrize(
    ("build", "spec"),
    [
        (lambda d: document_dto(d, [file_dto("k", {"signedUrl": "u", "expiresAt": "e"})], "deal"), SPEC_DOCUMENT),
        (lambda d: generated_document_dto(d, [file_dto("k", None)]), SPEC_GENERATED_DOCUMENT),
        (
            lambda d: deal_document_entry(d, [file_dto("k", None)], "documents"),
            {**SPEC_DEAL_DOCUMENTS_ENTRY, "entityType": "documents"},
        ),
    ],
    ids=["document", "generated-document", "deal-documents-entry"],
)
def test_document_shapes_match_the_spec(build, spec):
    document = {
        "_id": DOC_ID,
        "dealId": DEAL_ID,
        "docClassification": "poa",
        "status": "signed",
        "name": "Power of Attorney",
        "manualSignatures": [{"signerRole": "seller", "signedAt": T0}, {"signerRole": "buyer", "signedAt": None}],
    }
    out = build(document)
    assert shape(out) == shape(spec)
    assert out["signers"] == [{"signerRole": "seller", "signedAt": T0_ISO}, {"signerRole": "buyer", "signedAt": None}]
    assert_plain_json(out)


def test_file_dto_without_a_signer_names_the_key_only():
    assert file_dto("deal-docs/a.pdf", None) == {"key": "deal-docs/a.pdf", "url": None, "expiresAt": None}
    link = {"filename": "a.pdf", "signedUrl": "https://x/a.pdf?sig", "expiresAt": T1_ISO}
    assert file_dto("a.pdf", link) == {"key": "a.pdf", "url": "https://x/a.pdf?sig", "expiresAt": T1_ISO}


def test_credit_report_entry_is_the_loan_payoff():
    report = {"_id": DOC_ID, "dealId": DEAL_ID, "manualPayoffInfo": {"status": "confirmed"}}
    entry = deal_document_entry(report, [], "credit_reports")
    assert entry["docClassification"] == "loan-payoff"
    assert entry["status"] == "confirmed"
    assert entry["signers"] == []
    assert entry["entityType"] == "credit_reports"


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def test_deal_values_ids_dates_and_decimals():
    out = deal_dto(raw_deal())
    assert out["id"] == str(DEAL_ID)
    assert out["listingId"] == str(LISTING_ID) and out["offerId"] == str(OFFER_ID)
    assert out["amount"] == 18500 and isinstance(out["amount"], int)
    assert out["payment"]["privateAutoPay"] == {
        "amount": 18500,
        "transferDate": T1_ISO,
        "checkDelivery": "pickup",
        "payoutSourceType": "wallet",
    }
    assert out["payment"]["loan"]["amount"] == 1000.5
    assert out["payment"]["crypto"]["btc"] == {"amount": 0.01, "transferDate": T1_ISO}
    assert out["buyer"]["id"] == str(BUYER_ID)
    assert out["buyer"]["organizationId"] == str(ORG_BUYER)
    assert out["seller"]["organizationId"] == str(ORG_SELLER)  # stored as a string: same output
    assert out["buyer"]["titleConfirmedDate"] == T0_ISO
    assert out["createdAt"] == T0_ISO and out["updatedAt"] == T1_ISO
    assert out["currentOfferStatus"] == "rejected"  # the external offer vocabulary
    assert out["loanPayoffDocs"] == [{"fileUrl": "uploads/payoff.pdf"}, {"fileUrl": "uploads/payoff-2.pdf"}]
    assert out["statusHistory"] == [{"value": "active", "previous": "pending", "date": T0_ISO}]
    assert "internalNotes" not in out and "__v" not in out


def test_deal_documents_references_are_completed_from_their_rows():
    embedded_id = raw_deal()["documents"][1]["_id"]
    rows = {str(DOC_ID): {"_id": DOC_ID, "status": "pending", "docClassification": "addendum"}}
    deal = raw_deal()
    deal["documents"][1] = {"_id": embedded_id, "status": "signed", "docClassification": "poa"}
    out = deal_dto(deal, rows)
    assert out["documents"] == [
        {"id": str(DOC_ID), "status": "pending", "docClassification": "addendum"},
        {"id": str(embedded_id), "status": "signed", "docClassification": "poa"},
    ]
    # Without the rows, a bare reference is an id only.
    assert deal_dto(raw_deal())["documents"][0] == {"id": str(DOC_ID), "status": None, "docClassification": None}


def test_deal_reads_the_trigger_table_names_when_the_dto_names_are_absent():
    deal = {
        "_id": DEAL_ID,
        "dealState": {
            "closingStatus": "acknowledged",
            "documentsStatus": "complete",
            "buyer": {"status": "joined"},
            "seller": {"status": "readyToClose"},
        },
        "payment": {"privateAutoPay": {"amount": Decimal128(Decimal("23500"))}},
        "titleAttachment": {"completedDate": T1},
    }
    out = deal_dto(deal)
    assert out["closingStatus"] == "acknowledged"
    assert out["documentsStatus"] == "complete"
    assert out["dealState"] == {"documentsStatus": "complete"}
    assert out["buyer"]["status"] == "joined" and out["seller"]["status"] == "readyToClose"
    assert out["amount"] == 23500
    assert out["titleApprovedAt"] == T1_ISO


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("declined", "rejected"),
        ("deleted", "cancelled"),
        ("pending", "pending"),
        ("accepted", "accepted"),
        ("rejected", "rejected"),
        (None, None),
    ],
)
def test_offer_status_uses_the_external_vocabulary(stored, shown):
    assert offer_dto(raw_offer(stored))["status"] == shown


@pytest.mark.parametrize(
    ("asked", "stored"),
    [
        ("rejected", ["declined", "rejected"]),
        ("cancelled", ["deleted", "cancelled"]),
        ("pending", ["pending"]),
        ("declined", []),  # partners never see `declined`: it selects nothing
        ("deleted", []),
    ],
)
def test_offer_status_filter_selects_what_the_partner_sees(asked, stored):
    assert sorted(internal_offer_statuses(asked)) == sorted(stored)
    for status in ("declined", "deleted", "rejected", "cancelled", "pending", "accepted"):
        assert (status in internal_offer_statuses(asked)) == (offer_dto(raw_offer(status))["status"] == asked)


def test_offer_values_and_the_mapping_table_names():
    out = offer_dto(raw_offer())
    assert out["price"] == 17250
    assert out["listingId"] == str(LISTING_ID)
    assert out["offeredByUserId"] == str(BUYER_ID) and out["offeredToUserId"] == str(SELLER_ID)
    assert out["offeredByOrganizationId"] == str(ORG_BUYER) and out["offeredToOrganizationId"] == str(ORG_SELLER)
    assert out["dealNowExpiration"] == T1_ISO
    # The spec's mapping table spells them listing / offeredBy / offeredTo / amount: read both.
    legacy = {"_id": OFFER_ID, "listing": LISTING_ID, "offeredBy": BUYER_ID, "offeredTo": SELLER_ID, "amount": 9}
    out = offer_dto(legacy)
    assert (out["listingId"], out["offeredByUserId"], out["offeredToUserId"], out["price"]) == (
        str(LISTING_ID),
        str(BUYER_ID),
        str(SELLER_ID),
        9,
    )


def test_listing_values_and_top_level_vehicle_fallback():
    out = listing_dto(raw_listing())
    assert out["price"] == 18500
    assert out["sellerId"] == str(SELLER_ID) and out["organizationId"] == str(ORG_SELLER)
    assert out["vehicle"]["vin"] == "1HGBH41JXMN109186"
    assert out["ownershipInfo"] == {"ownershipType": "owned", "vehicleHaveLien": False}
    assert "cashOffer" not in out
    flat = listing_dto({"_id": LISTING_ID, "vin": "2T3P1RFV8MW123456", "year": 2021, "make": "Toyota"})
    assert flat["vehicle"]["vin"] == "2T3P1RFV8MW123456"
    assert (flat["vehicle"]["year"], flat["vehicle"]["make"], flat["vehicle"]["model"]) == (2021, "Toyota", None)


@pytest.mark.parametrize(
    ("build", "spec"),
    [(deal_dto, SPEC_DEAL), (offer_dto, SPEC_OFFER), (listing_dto, SPEC_LISTING), (delivery_dto, SPEC_DELIVERY)],
    ids=["deal", "offer", "listing", "delivery"],
)
def test_absent_fields_are_null_and_objects_keep_their_shape(build, spec):
    out = build({"_id": ObjectId("6a0243d9a30d4d0026d00e7c")})
    assert out["id"] == "6a0243d9a30d4d0026d00e7c"
    expected_objects = {k: shape(v) for k, v in spec.items() if isinstance(v, dict) and v}
    for name, nested in expected_objects.items():
        assert shape(out[name]) == nested  # buyer{}, payment{...}, vehicle{...} keep every field
    for path, value in leaves(out).items():
        if path != "id":
            assert value is None, path  # arrays (documents, statusHistory, ...) too
    assert_plain_json(out)


def test_a_string_id_stays_a_string():
    assert deal_dto({"_id": "legacy-deal-7"})["id"] == "legacy-deal-7"
    assert offer_dto({"_id": "legacy-offer-7", "listingId": "legacy-listing"})["listingId"] == "legacy-listing"


def test_dates_already_strings_pass_through():
    # Atlas plain-JSON mode wrote the document: dates as strings, ids as hex.
    out = deal_dto({"_id": str(DEAL_ID), "createdAt": "2026-04-21T14:00:00.000Z"})
    assert out["createdAt"] == "2026-04-21T14:00:00.000Z"
