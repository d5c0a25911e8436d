"""DealNow initiation (POST and GET /sell) as pure logic: the request and response models, the
validation both routes share, the deep links, and the listing and offer documents to write.

The ports the routes write and send through (`DealStore`, `IdempotencyStore`, `Mailer`) are
declared here; their MongoDB and SES adapters live in `distiller.adapters`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

from bson import ObjectId
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from distiller.api import fields as field_rules
from distiller.api.errors import ApiError, FieldErrors
from distiller.api.fields import MAX_EMAIL, VIN_LENGTH
from distiller.core.partners import Partner

FIRST_VIN_YEAR, LAST_YEAR = 1981, 2100
"""17-character VINs exist from model year 1981."""
MAX_AMOUNT = 100_000_000
"""Dollars; also keeps an integral amount far inside a 64-bit BSON integer."""
MAX_TEXT = 200
MAX_URL = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

GET_ONLY = ("redirectUrl", "role")
"""Query fields of GET /sell that POST refuses by name (the spec: "GET-only parameters")."""
TEXT_BOOLEANS = ("buyerSendLink", "sellerSendLink")
_WHOLE = re.compile(r"[0-9]{1,9}")
_DECIMAL = re.compile(r"[0-9]{1,12}(\.[0-9]{1,12})?")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}

LINK_PATH = "/deal-now/{guid}?role={role}"
BRANDS = {"dealnow": "DealNow", "pa-app": "PrivateAuto"}
DEALNOW_VALIDITY = dt.timedelta(days=7)
"""How long the seller has to follow the link (`dealNowExpiration`, as in events/flows/c2d_sell.jsonl)."""
UNAVAILABLE_LISTING_STATUSES = ("deactivated", "expired", "sold")
"""A listing in one of these (or soft-deleted) is no longer the vehicle's listing: a stub is made."""


# -- request and response models -----------------------------------------------------------------


def _text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters or line breaks")
    return value


def _number(value: float) -> int | float:
    """An integral amount stays an integer (stored and answered as 18500, not 18500.0)."""
    return int(value) if value.is_integer() else value


Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_text)]
Email = Annotated[
    str,
    Field(min_length=3, max_length=MAX_EMAIL, json_schema_extra={"format": "email"}),
    AfterValidator(_text),
    AfterValidator(field_rules.email),
]


class SellRequest(BaseModel):
    """The POST /sell body (GET /sell's fields, without `redirectUrl` and `role`). JSON types are
    strict: "2021" is not a year, 1 is not true; null is the same as leaving a field out."""

    model_config = ConfigDict(strict=True, extra="forbid", str_strip_whitespace=True)

    vin: Annotated[str, AfterValidator(field_rules.vin)] = Field(
        description="Vehicle Identification Number (17 characters; lower case is accepted and upper-cased)",
        json_schema_extra={"minLength": VIN_LENGTH, "maxLength": VIN_LENGTH, "pattern": "^[A-HJ-NPR-Za-hj-npr-z0-9]+$"},
    )
    buyerName: Text | None = Field(default=None, description="Buyer full name")
    buyerEmail: Email | None = Field(
        default=None,
        description="Buyer email address. Convention: this field describes the OTHER party, the side being "
        "invited via the deal link. If your integration is on the buyer side, do NOT pass your own email here",
    )
    buyerSendLink: bool | None = Field(
        default=None, description="If true, emails the buyer their deal link (requires buyerEmail)"
    )
    sellerName: Text | None = Field(default=None, description="Seller full name")
    sellerEmail: Email | None = Field(
        default=None, description="Seller email address. Same convention as buyerEmail (the OTHER party)"
    )
    sellerSendLink: bool | None = Field(
        default=None, description="If true, emails the seller their deal link (requires sellerEmail)"
    )
    year: Annotated[int, Field(ge=FIRST_VIN_YEAR, le=LAST_YEAR)] | None = Field(
        default=None, description="Vehicle model year. Required if vehicle is not already listed."
    )
    make: Text | None = Field(default=None, description="Vehicle make. Required if vehicle is not already listed.")
    model: Text | None = Field(default=None, description="Vehicle model. Required if vehicle is not already listed.")
    trim: Text | None = Field(default=None, description="Vehicle trim level")
    amount: Annotated[float, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False), AfterValidator(_number)] | None = Field(
        default=None, description="Deal amount in dollars"
    )


class SellLinkRequest(SellRequest):
    """GET /sell's fields: the POST body's plus where to send the browser afterwards."""

    redirectUrl: Annotated[str, Field(min_length=1, max_length=MAX_URL)] | None = Field(
        default=None, description="Where the user is redirected after the deal is created (https)"
    )
    role: Literal["buyer", "seller"] | None = Field(
        default=None, description="Without redirectUrl, whose link the user is redirected to (default: buyer)"
    )


class SellResponse(BaseModel):
    """201 of POST /sell: the reserved deal and the two deep links."""

    dealId: str = Field(
        description="The deal's id (an ObjectId), reserved now: the deal materialises when the seller follows "
        "sellerLink"
    )
    guid: str = Field(description="The deal's guid (also the DealNow offer's guid)")
    buyerLink: str = Field(description="The buyer's deep link (https://app.<host>/...)")
    sellerLink: str = Field(description="The seller's deep link (https://app.<host>/...)")
    emailErrors: dict[str, str] | None = Field(
        default=None,
        description="Only when a requested email could not be sent: buyerEmail/sellerEmail and why; the deal "
        "exists, share the link yourself",
    )


# -- validation ------------------------------------------------------------------------------------


def validate_sell(
    fields: Mapping[str, Any], *, get: bool = False, text_values: bool = False, allow_http: bool = False
) -> SellRequest:
    """The request the fields make, or `FieldErrors` naming every wrong one.

    `get`: GET /sell's fields (`redirectUrl`, `role` allowed); `text_values`: every value is query
    text (Format 3) and is read as the field's type first; `allow_http`: `redirectUrl` may be http.
    """
    errors: dict[str, str] = {}
    values = dict(fields)
    if text_values:
        values = _from_text(values, errors)
    if not get:
        errors.update({name: "GET-only parameter; not accepted by POST /sell" for name in GET_ONLY if name in values})
        values = {name: value for name, value in values.items() if name not in GET_ONLY}
    try:
        request = (SellLinkRequest if get else SellRequest).model_validate(values)
    except ValidationError as exc:
        for name, reason in field_rules.field_errors(exc).items():
            errors.setdefault(name, reason)
        raise FieldErrors(errors) from None
    for role in ("buyer", "seller"):
        if getattr(request, f"{role}SendLink") and getattr(request, f"{role}Email") is None:
            errors[f"{role}Email"] = f"required when {role}SendLink is true"
    if isinstance(request, SellLinkRequest) and request.redirectUrl is not None:
        problem = redirect_problem(request.redirectUrl, allow_http)
        if problem:
            errors["redirectUrl"] = problem
    if errors:
        raise FieldErrors(errors)
    return request


def vehicle_errors(request: SellRequest) -> dict[str, str]:
    """year, make and model are required when the VIN has no listing to attach the deal to."""
    return {
        name: "required: no listing exists for this VIN"
        for name in ("year", "make", "model")
        if getattr(request, name) is None
    }


def _from_text(values: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    """Format 3 query values are text: numbers and booleans are read from it, strictly."""
    read = dict(values)
    for name, value in values.items():
        if not isinstance(value, str):
            continue
        if name == "year":
            if _WHOLE.fullmatch(value):
                read[name] = int(value)
            else:
                errors[name] = "must be a whole number such as 2021"
        elif name == "amount":
            if _DECIMAL.fullmatch(value):
                read[name] = _number(float(value)) if "." in value else int(value)
            else:
                errors[name] = "must be a non-negative number such as 18500 or 18500.50"
        elif name in TEXT_BOOLEANS:
            if value.lower() in _BOOLEANS:
                read[name] = _BOOLEANS[value.lower()]
            else:
                errors[name] = "must be true, false, 1 or 0"
    return {name: value for name, value in read.items() if name not in errors}


def redirect_problem(url: str, allow_http: bool) -> str | None:
    """Why `url` may not be a redirect target (None: it may): an absolute https URL with a host and
    without credentials; http only where `allow_http` (local runs)."""
    schemes = ("https", "http") if allow_http else ("https",)
    allowed = " or ".join(schemes)
    if _CONTROL.search(url) or " " in url or "\\" in url:
        return "must not contain spaces, backslashes or control characters"
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in schemes:
        return f"must be an absolute {allowed} URL"
    if not hostname or not parts.netloc:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials"
    return None


def fingerprint(value: Any) -> str:
    """SHA-256 of the canonical JSON of `value` (key order and whitespace do not matter)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# -- links -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DealLinks:
    buyer: str
    seller: str


def link_origin(link_platform: str, dealnow_domain: str, app_domain: str) -> str:
    """`https://app.<domain>` of the partner's platform: deep links are never on the apex."""
    domain = app_domain if link_platform == "pa-app" else dealnow_domain  # dealnow is the default
    return f"https://app.{domain}"


def deal_links(link_platform: str, guid: str, dealnow_domain: str, app_domain: str) -> DealLinks:
    origin = link_origin(link_platform, dealnow_domain, app_domain)
    buyer, seller = (origin + LINK_PATH.format(guid=guid, role=role) for role in ("buyer", "seller"))
    return DealLinks(buyer, seller)


def link_email(role: str, link: str, name: str | None, vehicle: str, link_platform: str) -> tuple[str, str]:
    """Subject and text of the email that hands one party its deal link."""
    brand = BRANDS.get(link_platform, BRANDS["dealnow"])
    subject = f"{brand}: your deal link for the {vehicle}"
    greeting = f"Hello {name}," if name else "Hello,"
    text = (
        f"{greeting}\n\nYou are invited, as the {role}, to a {brand} deal for the {vehicle}.\n"
        f"Follow this link to continue:\n\n{link}\n\nIf you did not expect this email, you can ignore it.\n"
    )
    return subject, text


# -- documents ---------------------------------------------------------------------------------------


def stored_id(value: str) -> ObjectId | str:
    """An id from a partner record as the app stores it: an ObjectId when it is one's canonical hex."""
    return ObjectId(value) if ObjectId.is_valid(value) and str(ObjectId(value)) == value else value


def vehicle_title(vehicle: Mapping[str, Any]) -> str:
    """The title, e.g. "2021 Honda Civic EX", of a listing's `vehicle` (or a request's fields)."""
    words = [vehicle.get(name) for name in ("year", "make", "model", "trim")]
    return " ".join(str(word) for word in words if word not in (None, "")) or "vehicle"


def stub_listing(request: SellRequest, partner_id: str, listing_id: ObjectId, now: dt.datetime) -> dict[str, Any]:
    """The draft listing a VIN gets when none exists (`listing.created`); the seller completes it."""
    vehicle = {"year": request.year, "make": request.make, "model": request.model, "vin": request.vin}
    if request.trim is not None:
        vehicle["trim"] = request.trim
    listing: dict[str, Any] = {
        "_id": listing_id,
        "title": vehicle_title(vehicle),
        "status": "draft",
        "vehicle": vehicle,
        "appSource": partner_id,
        "createdAt": now,
        "updatedAt": now,
    }
    if request.amount is not None:
        listing["price"] = request.amount
    return listing


def dealnow_offer(
    request: SellRequest,
    partner: Partner,
    listing: Mapping[str, Any],
    *,
    offer_id: ObjectId,
    deal_id: ObjectId,
    guid: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """The dealNowPending offer (`offer.created`): the partner's organisation (and its user) on the buyer
    side, the listing's seller (if it has one yet) on the other; the deal's id and guid reserved."""
    offer: dict[str, Any] = {
        "_id": offer_id,
        "guid": guid,
        "dealId": deal_id,
        "status": "dealNowPending",
        "currency": "USD",
        "listingId": listing["_id"],
        "appSource": partner.partner_id,
        "dealNowExpiration": now + DEALNOW_VALIDITY,
        "createdAt": now,
        "updatedAt": now,
    }
    if request.amount is not None:
        offer["price"] = request.amount
    if partner.organization_user_id:
        offer["offeredByUserId"] = stored_id(partner.organization_user_id)
    if partner.organization_id:
        offer["offeredByOrganizationId"] = stored_id(partner.organization_id)
    if listing.get("sellerId") is not None:
        offer["offeredToUserId"] = listing["sellerId"]
    invited = {
        role: {key: value for key, value in (("name", name), ("email", email)) if value is not None}
        for role, name, email in (
            ("buyer", request.buyerName, request.buyerEmail),
            ("seller", request.sellerName, request.sellerEmail),
        )
    }
    if any(invited.values()):
        offer["dealNowInvitees"] = {role: contact for role, contact in invited.items() if contact}
    return offer


# -- ports -------------------------------------------------------------------------------------------


class StoreUnavailable(ApiError):
    """503: the database could not answer; nothing the request asked for is known to be done."""

    def __init__(self) -> None:
        super().__init__(503, {"error": "the database is unavailable; try again"})


class DealStore(Protocol):
    def find_listing(self, vin: str) -> dict[str, Any] | None:
        """The newest listing of `vin` that is still the vehicle's (not deleted, expired or sold)."""
        ...

    def insert_stub(self, listing: dict[str, Any]) -> dict[str, Any]:
        """Write the VIN's stub listing; returns the stub to use (a concurrent request's, if it claimed first)."""
        ...

    def insert_offer(self, offer: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """What an idempotency key already holds: its request's fingerprint and, once done, its response."""

    fingerprint: str
    response: dict[str, Any] | None


class IdempotencyStore(Protocol):
    def begin(self, key: str, fingerprint: str, lease_until: dt.datetime) -> StoredRequest | None:
        """Claim `key` (None) or return what holds it; the claim lapses at `lease_until` if never completed."""
        ...

    def complete(self, key: str, response: dict[str, Any], keep_until: dt.datetime) -> None: ...

    def release(self, key: str) -> None:
        """Give up an unfinished claim so that a retry can proceed."""
        ...


class MailerError(RuntimeError):
    """The email was not accepted; the text names the provider's error code, never the address or body."""


class Mailer(Protocol):
    def send(self, to: str, subject: str, text: str) -> None:
        """Send a plain-text email; raise `MailerError` on failure."""
        ...
