"""Partner payloads, field for field as the spec's payload tables give them.

Every builder takes the raw Mongo document (field names of the spec's /data DTOs, plus the
fields the trigger tables name) and returns plain JSON. The pipeline adds `eventId`,
`eventKey` and `entityType` at the top level.
"""

from __future__ import annotations

from typing import Any

from distiller.ejson import id_string, plain
from distiller.transitions import MISSING, value_at

#: Internal offer statuses renamed for partners (spec: "internal status declined → external rejected").
OFFER_STATUS_FOR_PARTNERS = {"declined": "rejected", "deleted": "cancelled"}


def _get(document: dict[str, Any], *paths: str) -> Any:
    """First present value among `paths` as plain JSON, else None."""
    for path in paths:
        value = value_at(document, path)
        if value is not MISSING:
            return plain(value)
    return None


def _id(document: dict[str, Any], *paths: str) -> str | None:
    for path in paths:
        value = value_at(document, path)
        if value is not MISSING and value is not None:
            return id_string(plain(value))
    return None


def deal_payload(deal: dict[str, Any]) -> dict[str, Any]:
    """Deal event payload: id, guid, status, amount, buyerId, sellerId."""
    return {
        "id": _id(deal, "_id"),
        "guid": _get(deal, "guid"),
        "status": _get(deal, "status"),
        "amount": _get(deal, "payment.privateAutoPay.amount", "amount"),
        "buyerId": _id(deal, "buyer.id", "buyerId"),
        "sellerId": _id(deal, "seller.id", "sellerId"),
    }


def deal_negative_equity_payload(deal: dict[str, Any]) -> dict[str, Any]:
    """Negative-equity events "carry negativeEquity: true on the payload"."""
    return {**deal_payload(deal), "negativeEquity": True}


def offer_payload(offer: dict[str, Any]) -> dict[str, Any]:
    """Offer event payload: id, guid, status (external vocabulary), listingId, amount, buyerId, sellerId.

    The spec's mapping table and its DTO example name the source fields differently
    (`listing`/`offeredBy`/`offeredTo` vs `listingId`/`offeredByUserId`/`offeredToUserId`);
    both are read.
    """
    status = _get(offer, "status")
    return {
        "id": _id(offer, "_id"),
        "guid": _get(offer, "guid"),
        "status": OFFER_STATUS_FOR_PARTNERS.get(status, status) if isinstance(status, str) else status,
        "listingId": _id(offer, "listingId", "listing"),
        "amount": _get(offer, "price", "amount"),
        "buyerId": _id(offer, "offeredByUserId", "offeredBy"),
        "sellerId": _id(offer, "offeredToUserId", "offeredTo"),
    }


def listing_payload(listing: dict[str, Any]) -> dict[str, Any]:
    """Listing event payload; `ownershipType`/`vehicleHaveLien` only when ownership is declared."""
    payload = {
        "id": _id(listing, "_id"),
        "status": _get(listing, "status"),
        "vin": _get(listing, "vehicle.vin", "vin"),
        "year": _get(listing, "vehicle.year", "year"),
        "make": _get(listing, "vehicle.make", "make"),
        "model": _get(listing, "vehicle.model", "model"),
        "trim": _get(listing, "vehicle.trim", "trim"),
        "price": _get(listing, "price"),
        "sellerId": _id(listing, "sellerId"),
    }
    for name in ("ownershipType", "vehicleHaveLien"):
        value = value_at(listing, f"ownershipInfo.{name}")
        if value is not MISSING and value is not None:
            payload[name] = plain(value)
    return payload


def user_payload(user: dict[str, Any]) -> dict[str, Any]:
    """User event payload: id, email, firstName, lastName (top level, else under userDetails)."""
    return {
        "id": _id(user, "_id"),
        "email": _get(user, "email", "userDetails.email"),
        "firstName": _get(user, "firstName", "userDetails.firstName"),
        "lastName": _get(user, "lastName", "userDetails.lastName"),
    }
