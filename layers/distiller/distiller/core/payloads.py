"""Partner payloads, field for field as the spec's payload tables give them.

Every builder takes the raw Mongo document (field names of the spec's /data DTOs, plus the
fields the trigger tables name) and returns plain JSON. The pipeline adds `eventId`,
`eventKey` and `entityType` at the top level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from distiller.core.ejson import WRAPPER_KEYS, id_string, plain
from distiller.core.lazy_ejson import LazyDocument
from distiller.core.plain_read import oid_text, plain_at, plain_parts
from distiller.core.transitions import MISSING, split_path, value_at

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


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class Column:
    """One payload field: its name, the paths it is read from (first present wins), and whether it
    is an id (`field_id`: text, nulls skipped) or a value (`field_value`)."""

    name: str
    paths: tuple[str, ...]
    is_id: bool = False


def value(name: str, *paths: str) -> Column:
    return Column(name, paths or (name,))


def ident(name: str, *paths: str) -> Column:
    return Column(name, paths, is_id=True)


class FieldTable:
    """A payload's columns, compiled once: each path split, one- and two-part first paths marked.

    `read` gives `{name: field_value(...) or field_id(...)}` in column order, with the same values:
    a plain leaf (text, `ObjectId`, a raw `{"$oid": hex}`; for values also null, boolean or 64-bit
    integer) at `field` or, through a raw object, at `field.child` is taken as `plain_parts` would
    answer it; anything else is read by `plain_parts` with the rules of `field_value`/`field_id`.
    Per field, that is no call instead of three, on the ~2 payload bodies built per event.
    """

    __slots__ = ("_compiled", "columns")

    def __init__(self, *columns: Column) -> None:
        self.columns = columns
        compiled = []
        for c in columns:
            first = split_path(c.paths[0])
            parent = first[0] if len(first) <= 2 else None
            child = first[1] if len(first) == 2 else None
            compiled.append((c.name, c.is_id, parent, child, tuple((split_path(p), p) for p in c.paths)))
        self._compiled = tuple(compiled)

    def read(self, document: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        lazy = type(document) is LazyDocument
        flat = lazy or type(document) is dict
        for name, is_id, parent, child, paths in self._compiled:
            if parent is not None and flat:
                found = dict.get(document, parent, MISSING)
                if child is not None:  # `parent.child`: only through a raw object of a lazy document
                    if lazy and type(found) is dict and WRAPPER_KEYS is not None and WRAPPER_KEYS.isdisjoint(found):
                        found = found.get(child, MISSING)
                    else:
                        found = MISSING
                kind = type(found)
                if kind is str:
                    out[name] = found
                    continue
                if kind is ObjectId:
                    out[name] = str(found)
                    continue
                if kind is dict and lazy:  # a raw `{"$oid": hex}`, as `plain_parts` reads it
                    text = oid_text(found)
                    if text is not None:
                        out[name] = text
                        continue
                if not is_id and (found is None or kind is bool or (kind is int and _INT64_MIN <= found <= _INT64_MAX)):
                    out[name] = found
                    continue
            out[name] = _read_id(document, paths) if is_id else _read_value(document, paths)
        return out


def _read_value(document: dict[str, Any], paths: tuple[tuple[tuple[str, ...], str], ...]) -> Any:
    """`field_value` over compiled paths."""
    for parts, path in paths:
        found = plain_parts(document, parts, path)
        if found is not MISSING:
            return found
    return None


def _read_id(document: dict[str, Any], paths: tuple[tuple[tuple[str, ...], str], ...]) -> str | None:
    """`field_id` over compiled paths."""
    for parts, path in paths:
        found = plain_parts(document, parts, path)
        if found is MISSING:
            continue
        if found is None:
            if value_at(document, path) is None:
                continue
            return None
        return found if type(found) is str else id_string(found)
    return None


DEAL_FIELDS = FieldTable(
    ident("id", "_id"),
    value("guid"),
    value("status"),
    value("amount", "payment.privateAutoPay.amount", "amount"),
    ident("buyerId", "buyer.id", "buyerId"),
    ident("sellerId", "seller.id", "sellerId"),
)


def deal_payload(
    deal: dict[str, Any], detail: dict[str, Any] | None = None, linked_deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Deal event payload: id, guid, status, amount, buyerId, sellerId."""
    return DEAL_FIELDS.read(deal)


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
    payload = OFFER_FIELDS.read(offer)
    status = payload["status"]
    if isinstance(status, str):
        payload["status"] = OFFER_STATUS_FOR_PARTNERS.get(status, status)
    return payload


OFFER_FIELDS = FieldTable(
    ident("id", "_id"),
    value("guid"),
    value("status"),
    ident("listingId", "listingId", "listing"),
    value("amount", "price", "amount"),
    ident("buyerId", "offeredByUserId", "offeredBy"),
    ident("sellerId", "offeredToUserId", "offeredTo"),
)


def listing_payload(
    listing: dict[str, Any], detail: dict[str, Any] | None = None, linked_deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Listing event payload. `vehicleHaveLien` is always present (null when unknown); `ownershipType`
    only when ownership is declared, as the spec's table marks it."""
    payload = LISTING_FIELDS.read(listing)
    ownership_type = value_at(listing, "ownershipInfo.ownershipType")
    if ownership_type is not MISSING and ownership_type is not None:
        payload["ownershipType"] = plain(ownership_type)
    payload["vehicleHaveLien"] = field_value(listing, "ownershipInfo.vehicleHaveLien")
    return payload


LISTING_FIELDS = FieldTable(
    ident("id", "_id"),
    value("status"),
    value("vin", "vehicle.vin", "vin"),
    value("year", "vehicle.year", "year"),
    value("make", "vehicle.make", "make"),
    value("model", "vehicle.model", "model"),
    value("trim", "vehicle.trim", "trim"),
    value("price"),
    ident("sellerId", "sellerId"),
)


def user_payload(
    user: dict[str, Any], detail: dict[str, Any] | None = None, linked_deal: dict[str, Any] | None = None
) -> dict[str, Any]:
    """User event payload: id, email, firstName, lastName (top level, else under userDetails)."""
    return USER_FIELDS.read(user)


USER_FIELDS = FieldTable(
    ident("id", "_id"),
    value("email", "email", "userDetails.email"),
    value("firstName", "firstName", "userDetails.firstName"),
    value("lastName", "lastName", "userDetails.lastName"),
)


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
