"""Raw Mongo documents → the /data response DTOs of the spec, as plain JSON.

Every builder takes the stored document (which uses the DTO field names, see docs/assumptions.md
"Source field names") and returns exactly the fields of the spec's example response: ids as hex
strings, dates ISO 8601 UTC with `Z`, `Decimal128` as numbers. A field the document lacks is
`null`; a nested object of the example (`buyer`, `payment.cash`, `vehicle`, ...) is always
present with its own fields, so a response has the same shape whatever the document holds.
Arrays the document lacks are `null`.

Where the spec names a field in two places (the example's top-level `closingStatus` and the
trigger table's `dealState.closingStatus`), the example's name is read first, then the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from distiller.core.ejson import id_string, plain
from distiller.core.payloads import OFFER_STATUS_FOR_PARTNERS, field_id, field_value, signers_of
from distiller.core.transitions import MISSING, value_at

#: The dates each deal party carries (`buyer{...}`, `seller{...}` in PartnerDealResponse).
PARTY_DATES = (
    "titleConfirmedDate",
    "confirmedDate",
    "infoCompletedAt",
    "termsConfirmedAt",
    "paymentConfirmedAt",
    "titleConfirmedAt",
    "servicesConfirmedAt",
    "titleSubmittedAt",
)

#: PartnerListingResponse `vehicle{...}`, in the example's order.
VEHICLE_FIELDS = (
    "year",
    "make",
    "model",
    "trim",
    "vin",
    "bodyStyle",
    "mileage",
    "exteriorColor",
    "interiorColor",
    "transmission",
    "driveType",
    "fuel",
    "cylinders",
)


def external_offer_status(status: Any) -> Any:
    """An offer status as partners see it (`declined` → `rejected`, `deleted` → `cancelled`)."""
    return OFFER_STATUS_FOR_PARTNERS.get(status, status) if isinstance(status, str) else status


def internal_offer_statuses(status: str) -> list[str]:
    """The stored statuses a partner's `status` filter selects: those shown to it as `status`.

    `rejected` selects `declined` (and a stored `rejected`); `declined`, a name partners never
    see, selects nothing.
    """
    stored = [internal for internal, external in OFFER_STATUS_FOR_PARTNERS.items() if external == status]
    if status not in OFFER_STATUS_FOR_PARTNERS:
        stored.append(status)
    return stored


def _items(document: dict[str, Any], path: str, render: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]] | None:
    """An array of the document rendered item by item; null when the document lacks it."""
    value = value_at(document, path)
    if value is MISSING or value is None:
        return None
    return [render(item) for item in (value if isinstance(value, list) else [value])]


def _party(deal: dict[str, Any], side: str) -> dict[str, Any]:
    return {
        "id": field_id(deal, f"{side}.id", f"{side}Id"),
        "organizationId": field_id(deal, f"{side}.organizationId"),
        # The example's vocabulary (invited/joined/readyToClose) is the one of dealState.<side>.status.
        "status": field_value(deal, f"{side}.status", f"dealState.{side}.status"),
        **{name: field_value(deal, f"{side}.{name}") for name in PARTY_DATES},
    }


def _transfer(deal: dict[str, Any], prefix: str, *extra: str) -> dict[str, Any]:
    return {name: field_value(deal, f"{prefix}.{name}") for name in ("amount", "transferDate", *extra)}


def document_reference(item: Any) -> str | None:
    """The document id of a `deal.documents[]` entry: a bare id, or an object with `_id`/`id`/`documentId`."""
    if isinstance(item, dict):
        return field_id(item, "_id", "id", "documentId")
    return id_string(plain(item))


def _deal_document(item: Any, linked: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """One `documents[]` entry: a reference (id) or an embedded summary, completed from its row."""
    doc_id = document_reference(item)
    own = item if isinstance(item, dict) else {}
    row = linked.get(doc_id or "") or {}
    return {
        "id": doc_id,
        "status": field_value(own, "status") if "status" in own else field_value(row, "status"),
        "docClassification": (
            field_value(own, "docClassification")
            if "docClassification" in own
            else field_value(row, "docClassification")
        ),
    }


def _payoff_doc(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        key = next((item[k] for k in ("fileUrl", "key", "fileKey", "s3Key") if item.get(k) is not None), None)
        return {"fileUrl": plain(key)}
    return {"fileUrl": plain(item)}


def _status_change(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return {
            "value": field_value(item, "value"),
            "previous": field_value(item, "previous"),
            "date": field_value(item, "date"),
        }
    return {"value": plain(item), "previous": None, "date": None}


def deal_dto(deal: dict[str, Any], documents: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """PartnerDealResponse.

    `deal.documents[]` holds references to the `documents` collection; `documents` (the rows,
    by id, that belong to this deal) fills each entry's `status` and `docClassification` when
    the reference does not carry them.
    """
    linked = documents or {}
    return {
        "id": field_id(deal, "_id"),
        "guid": field_value(deal, "guid"),
        "status": field_value(deal, "status"),
        "closingStatus": field_value(deal, "closingStatus", "dealState.closingStatus"),
        "closingFeePayer": field_value(deal, "closingFeePayer"),
        "state": field_value(deal, "state"),
        "odometer": field_value(deal, "odometer"),
        "appSource": field_value(deal, "appSource"),
        "listingId": field_id(deal, "listingId", "listing"),
        "offerId": field_id(deal, "offerId", "offer"),
        "currentOfferStatus": external_offer_status(field_value(deal, "currentOfferStatus")),
        "documentsStatus": field_value(deal, "documentsStatus", "dealState.documentsStatus"),
        "negativeEquity": field_value(deal, "negativeEquity"),
        "negativeEquityFunded": field_value(deal, "negativeEquityFunded"),
        "amount": field_value(deal, "amount", "payment.privateAutoPay.amount"),
        "currency": field_value(deal, "currency"),
        "buyer": _party(deal, "buyer"),
        "seller": _party(deal, "seller"),
        "payment": {
            "privateAutoPay": _transfer(deal, "payment.privateAutoPay", "checkDelivery", "payoutSourceType"),
            "cash": _transfer(deal, "payment.cash"),
            "loan": _transfer(deal, "payment.loan"),
            "crypto": {"btc": _transfer(deal, "payment.crypto.btc")},
        },
        "documents": _items(deal, "documents", lambda item: _deal_document(item, linked)),
        "dealState": {"documentsStatus": field_value(deal, "dealState.documentsStatus", "documentsStatus")},
        "titleApprovedAt": field_value(deal, "titleApprovedAt", "titleAttachment.completedDate"),
        "ownershipType": field_value(deal, "ownershipType"),
        "payoffType": field_value(deal, "payoffType"),
        "loanPayoffDocs": _items(deal, "loanPayoffDocs", _payoff_doc),
        "loanPayoffConfirmed": field_value(deal, "loanPayoffConfirmed"),
        "statusHistory": _items(deal, "statusHistory", _status_change),
        "createdAt": field_value(deal, "createdAt"),
        "updatedAt": field_value(deal, "updatedAt"),
    }


def offer_dto(offer: dict[str, Any]) -> dict[str, Any]:
    """PartnerOfferResponse; `status` in the external vocabulary, like the offer webhooks."""
    return {
        "id": field_id(offer, "_id"),
        "guid": field_value(offer, "guid"),
        "status": external_offer_status(field_value(offer, "status")),
        "price": field_value(offer, "price", "amount"),
        "currency": field_value(offer, "currency"),
        "listingId": field_id(offer, "listingId", "listing"),
        "offeredByUserId": field_id(offer, "offeredByUserId", "offeredBy"),
        "offeredByOrganizationId": field_id(offer, "offeredByOrganizationId"),
        "offeredToUserId": field_id(offer, "offeredToUserId", "offeredTo"),
        "offeredToOrganizationId": field_id(offer, "offeredToOrganizationId"),
        "externalId": field_value(offer, "externalId"),
        "buyerExternalId": field_value(offer, "buyerExternalId"),
        "sellerExternalId": field_value(offer, "sellerExternalId"),
        "appSource": field_value(offer, "appSource"),
        "dealNowExpiration": field_value(offer, "dealNowExpiration"),
        "titleDeliveryMethod": field_value(offer, "titleDeliveryMethod"),
        "createdAt": field_value(offer, "createdAt"),
        "updatedAt": field_value(offer, "updatedAt"),
    }


def listing_dto(listing: dict[str, Any]) -> dict[str, Any]:
    """PartnerListingResponse. Vehicle fields are read under `vehicle.`, else at the top level (as
    the listing webhooks read them), so `vin` on a webhook is always `vehicle.vin` here."""
    return {
        "id": field_id(listing, "_id"),
        "listingNo": field_value(listing, "listingNo"),
        "slug": field_value(listing, "slug"),
        "title": field_value(listing, "title"),
        "status": field_value(listing, "status"),
        "sellerId": field_id(listing, "sellerId"),
        "organizationId": field_id(listing, "organizationId"),
        "price": field_value(listing, "price"),
        "vehicle": {name: field_value(listing, f"vehicle.{name}", name) for name in VEHICLE_FIELDS},
        "ownershipInfo": {
            "ownershipType": field_value(listing, "ownershipInfo.ownershipType"),
            "vehicleHaveLien": field_value(listing, "ownershipInfo.vehicleHaveLien"),
        },
        "condition": field_value(listing, "condition"),
        "appSource": field_value(listing, "appSource"),
        "createdAt": field_value(listing, "createdAt"),
        "updatedAt": field_value(listing, "updatedAt"),
    }


def delivery_dto(log_document: dict[str, Any]) -> dict[str, Any]:
    """A webhook-deliveries item: the spec's fields, plus `eventId` (X-PA-Event-Id) and `attempt`
    (0 for the first POST, 1–3 for the retries)."""
    return {
        "id": field_id(log_document, "_id"),
        "partnerId": field_value(log_document, "partnerId"),
        "event": field_value(log_document, "event"),
        "status": field_value(log_document, "status"),
        "url": field_value(log_document, "url"),
        "statusCode": field_value(log_document, "statusCode"),
        "attemptedAt": field_value(log_document, "attemptedAt"),
        "responseBodyExcerpt": field_value(log_document, "responseBodyExcerpt"),
        "error": field_value(log_document, "error"),
        "payload": field_value(log_document, "payload"),
        "eventId": field_value(log_document, "eventId"),
        "attempt": field_value(log_document, "attempt"),
    }


# --------------------------------------------------------------------------------------------
# Documents: the files come in already signed (`file_dto`), so these stay pure
# --------------------------------------------------------------------------------------------


def file_dto(key: str, link: dict[str, Any] | None) -> dict[str, Any]:
    """`{key, url, expiresAt}`: the stored key and its signed link (`FileLinks.link`), if any."""
    return {
        "key": key,
        "url": (link or {}).get("signedUrl"),
        "expiresAt": (link or {}).get("expiresAt"),
    }


def document_dto(document: dict[str, Any], signed: list[dict[str, Any]], deal_id: str | None) -> dict[str, Any]:
    """GET /data/documents/{partnerId}/{documentId}; `deal_id` is the deal the partner reads it through."""
    return {
        "id": field_id(document, "_id"),
        "dealId": deal_id,
        "docClassification": field_value(document, "docClassification"),
        "status": field_value(document, "status"),
        "signers": signers_of(document),
        "signed": signed,
    }


def generated_document_dto(document: dict[str, Any], signed: list[dict[str, Any]]) -> dict[str, Any]:
    """GET /data/generated-documents/{partnerId}/{documentId}."""
    return {
        "id": field_id(document, "_id"),
        "docClassification": field_value(document, "docClassification"),
        "name": field_value(document, "name", "filename"),
        "signers": signers_of(document),
        "signed": signed,
    }


#: `docClassification` of the deal-documents entry for a credit report's loan payoff files.
LOAN_PAYOFF_CLASSIFICATION = "loan-payoff"


def deal_document_entry(document: dict[str, Any], signed: list[dict[str, Any]], entity_type: str) -> dict[str, Any]:
    """One `documents[]` entry of GET /data/deals/{partnerId}/{dealId}/documents.

    `entityType` (`documents`, `platoforms_generated_documents`, `credit_reports`) says which
    single-document endpoint serves the entry, as it does on webhook payloads.
    """
    is_report = entity_type == "credit_reports"
    return {
        "id": field_id(document, "_id"),
        "docClassification": LOAN_PAYOFF_CLASSIFICATION if is_report else field_value(document, "docClassification"),
        "status": field_value(document, "manualPayoffInfo.status") if is_report else field_value(document, "status"),
        "name": field_value(document, "name", "filename"),
        "signers": signers_of(document),
        "signed": signed,
        "entityType": entity_type,
    }


__all__ = [
    "deal_document_entry",
    "deal_dto",
    "delivery_dto",
    "document_dto",
    "document_reference",
    "external_offer_status",
    "file_dto",
    "generated_document_dto",
    "internal_offer_statuses",
    "listing_dto",
    "offer_dto",
]
