"""Partner payloads, field for field as the spec's payload tables give them.

Every builder takes the raw Mongo document (field names of the spec's /data DTOs, plus the
fields the trigger tables name) and returns plain JSON. The pipeline adds `eventId`,
`eventKey` and `entityType` at the top level.
"""

from __future__ import annotations

from typing import Any

from distiller.core.ejson import id_string, plain
from distiller.core.lazy_ejson import LazyDocument
from distiller.core.plain_read import plain_at
from distiller.core.transitions import MISSING, value_at

#: Internal offer statuses renamed for partners (spec: "internal status declined → external rejected").
OFFER_STATUS_FOR_PARTNERS = {"declined": "rejected", "deleted": "cancelled"}


def field_value(document: dict[str, Any], *paths: str) -> Any:
    """First present value among `paths` as plain JSON, else None."""
    for path in paths:
        if "." not in path and (type(document) is LazyDocument or type(document) is dict):
            # A top-level text, null or boolean: `plain_at`'s answer without its call (most fields).
            value = dict.get(document, path, MISSING)
            kind = type(value)
            if kind is str or value is None or kind is bool:
                return value
        value = plain_at(document, path)
        if value is not MISSING:
            return value
    return None


def field_id(document: dict[str, Any], *paths: str) -> str | None:
    """First id among `paths` that is present and not null, as text (`id_string`), else None."""
    for path in paths:
        value = plain_at(document, path)
        if value is MISSING:
            continue
        if value is None:
            if value_at(document, path) is None:
                continue  # a null field: the next path may hold the id
            return None  # a value with no JSON form (NaN, ...), as `plain` gives it
        return value if type(value) is str else id_string(value)
    return None


def deal_payload(
    deal: dict[str, Any], detail: dict[str, Any] | None = None, linked_deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Deal event payload: id, guid, status, amount, buyerId, sellerId."""
    return {
        "id": field_id(deal, "_id"),
        "guid": field_value(deal, "guid"),
        "status": field_value(deal, "status"),
        "amount": field_value(deal, "payment.privateAutoPay.amount", "amount"),
        "buyerId": field_id(deal, "buyer.id", "buyerId"),
        "sellerId": field_id(deal, "seller.id", "sellerId"),
    }


def deal_negative_equity_payload(
    deal: dict[str, Any], detail: dict[str, Any] | None = None, linked_deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Negative-equity events "carry negativeEquity: true on the payload"."""
    return {**deal_payload(deal), "negativeEquity": True}


def offer_payload(
    offer: dict[str, Any], detail: dict[str, Any] | None = None, linked_deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Offer event payload: id, guid, status (external vocabulary), listingId, amount, buyerId, sellerId.

    The spec's mapping table and its DTO example name the source fields differently
    (`listing`/`offeredBy`/`offeredTo` vs `listingId`/`offeredByUserId`/`offeredToUserId`);
    both are read.
    """
    status = field_value(offer, "status")
    return {
        "id": field_id(offer, "_id"),
        "guid": field_value(offer, "guid"),
        "status": OFFER_STATUS_FOR_PARTNERS.get(status, status) if isinstance(status, str) else status,
        "listingId": field_id(offer, "listingId", "listing"),
        "amount": field_value(offer, "price", "amount"),
        "buyerId": field_id(offer, "offeredByUserId", "offeredBy"),
        "sellerId": field_id(offer, "offeredToUserId", "offeredTo"),
    }


def listing_payload(
    listing: dict[str, Any], detail: dict[str, Any] | None = None, linked_deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Listing event payload. `vehicleHaveLien` is always present (null when unknown); `ownershipType`
    only when ownership is declared, as the spec's table marks it."""
    payload = {
        "id": field_id(listing, "_id"),
        "status": field_value(listing, "status"),
        "vin": field_value(listing, "vehicle.vin", "vin"),
        "year": field_value(listing, "vehicle.year", "year"),
        "make": field_value(listing, "vehicle.make", "make"),
        "model": field_value(listing, "vehicle.model", "model"),
        "trim": field_value(listing, "vehicle.trim", "trim"),
        "price": field_value(listing, "price"),
        "sellerId": field_id(listing, "sellerId"),
    }
    ownership_type = value_at(listing, "ownershipInfo.ownershipType")
    if ownership_type is not MISSING and ownership_type is not None:
        payload["ownershipType"] = plain(ownership_type)
    payload["vehicleHaveLien"] = field_value(listing, "ownershipInfo.vehicleHaveLien")
    return payload


def user_payload(
    user: dict[str, Any], detail: dict[str, Any] | None = None, linked_deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """User event payload: id, email, firstName, lastName (top level, else under userDetails)."""
    return {
        "id": field_id(user, "_id"),
        "email": field_value(user, "email", "userDetails.email"),
        "firstName": field_value(user, "firstName", "userDetails.firstName"),
        "lastName": field_value(user, "lastName", "userDetails.lastName"),
    }


def signers_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every signer slot, in slot order: `signerRole` and `signedAt` (null until signed)."""
    slots = value_at(document, "manualSignatures")
    if not isinstance(slots, list):
        return []
    return [
        {
            "signerRole": plain(slot.get("signerRole", slot.get("role"))) if isinstance(slot, dict) else None,
            "signedAt": plain(slot.get("signedAt")) if isinstance(slot, dict) else None,
        }
        for slot in slots
    ]


def signature_payload(
    document: dict[str, Any], detail: dict[str, Any] | None = None, linked_deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`document.*` payload: id, dealId, docClassification, signers (+ `slot` that was just signed)."""
    payload = {
        "id": field_id(document, "_id"),
        "dealId": field_id(document, "dealId", "deal", "sharedDeals.0"),
        "docClassification": field_value(document, "docClassification"),
        "signers": signers_of(document),
    }
    if detail and "slot" in detail:
        payload["slot"] = detail["slot"]
    return payload


def approved_document_payload(
    document: dict[str, Any], detail: dict[str, Any] | None = None, linked_deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Legacy `deal.poa_approved` / `deal.bill_of_sale_approved`: the document, not the deal."""
    return {
        "id": field_id(document, "_id"),
        "dealId": field_id(document, "dealId", "deal", "sharedDeals.0"),
        "status": field_value(document, "status"),
        "docClassification": field_value(document, "docClassification"),
    }


def linked_deal_payload(
    document: dict[str, Any], detail: dict[str, Any] | None = None, linked_deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The deal payload of the deal an entity belongs to (`deal.loan_payoff_confirmed`): `id` is the deal's."""
    return deal_payload(linked_deal or {})


def loan_payoff_docs_payload(
    report: dict[str, Any], detail: dict[str, Any] | None = None, linked_deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`deal.loan_payoff_docs`: the linked deal's payload, except that `id` is the credit report's (the
    spec's stated exception), plus `dealId` so the deal can be fetched without a second lookup."""
    deal = linked_deal or {}
    return {
        **deal_payload(deal),
        "id": field_id(report, "_id"),
        "dealId": field_id(deal, "_id") or field_id(report, "dealId", "deal"),
    }


def file_refs(value: Any) -> list[tuple[str, str]]:
    """(storage key, filename) for each file in a field: strings are keys; objects carry
    `key`/`fileKey`/`fileUrl`/`s3Key` and optionally `filename`/`name`."""
    items = value if isinstance(value, list) else [value]
    refs = []
    for item in items:
        key: Any = None
        filename: Any = None
        if isinstance(item, str):
            key = item
        elif isinstance(item, dict):
            key = next((item[k] for k in ("key", "fileKey", "s3Key", "fileUrl") if isinstance(item.get(k), str)), None)
            filename = item.get("filename") or item.get("name")
        if key:
            refs.append((key, str(filename) if filename else key.rsplit("/", 1)[-1]))
    return refs


def files_at(*paths: str) -> Any:
    """A `Row.files` reader: the files found at the first of `paths` the document has."""

    def read(document: dict[str, Any]) -> list[tuple[str, str]]:
        for path in paths:
            value = value_at(document, path)
            if value is not MISSING and value is not None:
                return file_refs(value)
        return []

    return read
