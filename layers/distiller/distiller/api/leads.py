"""Lead ingestion, free of I/O: the request model partners code against, the stored document, the
bodies answered, and the `LeadStore` port the MongoDB adapter implements.

The request model is strict (a JSON string is never taken for a number, nor a number for a string)
and refuses unknown fields, so a typo in a partner's integration is a 400 naming it rather than a
silently dropped value. Every bound is here, once, and the OpenAPI document shows it.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from bson import ObjectId
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from distiller.api import fields as field_rules
from distiller.api.errors import FieldErrors
from distiller.api.models import Instant
from distiller.core.clock import iso_utc, utc_now

LEADS_COLLECTION = "leads"
NEW = "new"
"""The status of every lead this API creates; later statuses are set by the dealer's side."""
MAX_REFERENCE_LENGTH = 128
"""Longest `callerReferenceId` (and `organizationId`, `listingId`): a CRM record id fits with room to spare."""
MAX_BODY_BYTES = 64 * 1024
"""Largest accepted POST body: every bounded field together fits in a fraction of it."""
EARLIEST_MODEL_YEAR = 1900
MODEL_YEARS_AHEAD = 2
"""Dealers list next year's models before the calendar turns; further ahead is a typo."""
MAX_MILEAGE = 10_000_000

_OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
_PHONE = re.compile(r"\+?[0-9 ().\-]{3,32}(?:\s*(?:x|ext\.?)\s*[0-9]{1,6})?", re.IGNORECASE)
MIN_PHONE_DIGITS = 3
_MULTILINE_CONTROLS = frozenset("\n\r\t")


def _invisible(ch: str) -> bool:
    """Control, format, surrogate, private-use or unassigned characters, and line/paragraph separators."""
    category = unicodedata.category(ch)
    return category.startswith("C") or category in ("Zl", "Zp")


def _one_line(value: str) -> str:
    if any(_invisible(ch) for ch in value):
        raise ValueError("must be printable text on one line (no control characters)")
    return value


def _reference(value: str) -> str:
    _one_line(value)
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    return value


def _free_text(value: str) -> str:
    if any(_invisible(ch) and ch not in _MULTILINE_CONTROLS for ch in value):
        raise ValueError("must be printable text (line breaks and tabs allowed, no other control characters)")
    return value


def _phone(value: str) -> str:
    if not _PHONE.fullmatch(value) or sum(ch.isdigit() for ch in value) < MIN_PHONE_DIGITS:
        raise ValueError("must be a phone number: digits, spaces, + ( ) . - and an optional extension (x123)")
    return value


def _model_year(value: int) -> int:
    latest = utc_now().year + MODEL_YEARS_AHEAD
    if not EARLIEST_MODEL_YEAR <= value <= latest:
        raise ValueError(f"must be from {EARLIEST_MODEL_YEAR} to {latest}")
    return value


def _line(max_length: int, description: str) -> Any:
    return Field(default=None, min_length=1, max_length=max_length, description=description)


Reference = Annotated[str, Field(min_length=1, max_length=MAX_REFERENCE_LENGTH), AfterValidator(_reference)]
"""An identifier the partner or PrivateAuto chose: 1–128 printable characters, no surrounding whitespace."""
Line = Annotated[str, AfterValidator(_one_line)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LeadContact(_Request):
    """Prospect contact information."""

    name: Line | None = _line(200, "Prospect full name")
    email: Annotated[str, AfterValidator(field_rules.email)] | None = _line(254, "Prospect email address")
    phone: Annotated[str, AfterValidator(_phone)] | None = _line(40, "Prospect phone number, e.g. 555-867-5309")
    message: Annotated[str, AfterValidator(_free_text)] | None = _line(
        4000, "The prospect's message to the dealer (line breaks allowed)"
    )


class LeadVehicle(_Request):
    """Vehicle of interest."""

    vin: Annotated[str, AfterValidator(field_rules.vin)] | None = Field(
        default=None,
        min_length=17,
        max_length=17,
        description="Vehicle Identification Number (17 characters, no I, O or Q; stored upper-case)",
    )
    year: Annotated[int, AfterValidator(_model_year)] | None = Field(
        default=None,
        ge=EARLIEST_MODEL_YEAR,
        description=f"Model year, from {EARLIEST_MODEL_YEAR} to {MODEL_YEARS_AHEAD} years after the current one",
    )
    make: Line | None = _line(64, "Vehicle make")
    model: Line | None = _line(64, "Vehicle model")
    trim: Line | None = _line(64, "Vehicle trim level")
    mileage: int | None = Field(default=None, ge=0, le=MAX_MILEAGE, description="Odometer reading in miles")


class LeadRequest(_Request):
    """POST /leads/{partnerId}: a lead for a dealer organisation on the partner's allowlist."""

    callerReferenceId: Reference = Field(
        description="Your own reference ID for this lead (e.g. your CRM record ID), used for idempotent dedup: "
        "resubmitting the same value returns 409 with the existing lead ID. 1–128 printable characters."
    )
    organizationId: Reference = Field(
        description="Target dealer organization ID. Must be on your partner allowlist (403 otherwise)."
    )
    leadCode: Line | None = _line(64, "Lead code tag for categorization (e.g. CONQUEST, SERVICE, TRADE_IN)")
    contact: LeadContact | None = Field(default=None, description="Prospect contact information")
    vehicle: LeadVehicle | None = Field(default=None, description="Vehicle of interest")
    listingId: Reference | None = Field(default=None, description="Link to an existing PrivateAuto listing ID")


class _Response(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class LeadCreated(_Response):
    """201 of POST /leads/{partnerId}."""

    leadId: str = Field(description="The lead's id (24 hex characters)")
    callerReferenceId: str
    status: Literal["new"]
    createdAt: Instant


class LeadResponse(_Response):
    """200 of GET /leads/{partnerId}/{callerReferenceId}: the lead's status and metadata (no contact data)."""

    leadId: str = Field(description="The lead's id (24 hex characters)")
    callerReferenceId: str
    status: str = Field(description="`new` when submitted; updated as the dealer works the lead")
    organizationId: str = Field(description="The dealer organization the lead was submitted to")
    leadCode: str | None
    createdAt: Instant
    updatedAt: Instant


def parse_lead(body: str | None) -> LeadRequest:
    """The POST body as a `LeadRequest`; `FieldErrors` (400) naming each wrong or unknown field otherwise."""
    if body is None or not body.strip():
        raise FieldErrors({"body": "required: a JSON object"})
    if len(body.encode("utf-8")) > MAX_BODY_BYTES:
        reason = f"larger than {MAX_BODY_BYTES} bytes"
        raise FieldErrors({"body": reason})
    try:
        return LeadRequest.model_validate_json(body)
    except ValidationError as exc:
        raise FieldErrors(field_rules.field_errors(exc)) from None


_REFERENCE = TypeAdapter(Reference)


def parse_reference(name: str, text: str) -> str:
    """A reference given outside the body (a path value) under the body's rules; 400 naming `name` otherwise."""
    try:
        return _REFERENCE.validate_python(text)
    except ValidationError as exc:
        raise FieldErrors({name: field_rules.field_errors(exc)["body"]}) from None


def organization_key(organization_id: str) -> str:
    """The form two organisation ids are compared in: an ObjectId's hex in lower case, any other id as is."""
    return organization_id.lower() if _OBJECT_ID.fullmatch(organization_id) else organization_id


def may_submit_to(allowlist: tuple[str, ...], organization_id: str) -> bool:
    """Whether `organization_id` is on the partner's `leadOrganizationIds`."""
    key = organization_key(organization_id)
    return any(organization_key(allowed) == key for allowed in allowlist)


def lead_document(partner_id: str, lead: LeadRequest, now: dt.datetime, lead_id: ObjectId | None = None) -> dict:
    """The `leads` document of a new lead. `appSource` is the partner, as on every entity a partner
    creates; `organizationId` is an ObjectId when it is one (as in `organizations`), else the string."""
    organization = organization_key(lead.organizationId)
    return {
        "_id": lead_id or ObjectId(),
        "partnerId": partner_id,
        "appSource": partner_id,
        "callerReferenceId": lead.callerReferenceId,
        "organizationId": ObjectId(organization) if _OBJECT_ID.fullmatch(organization) else organization,
        "leadCode": lead.leadCode,
        "contact": lead.contact.model_dump(exclude_none=True) if lead.contact else None,
        "vehicle": lead.vehicle.model_dump(exclude_none=True) if lead.vehicle else None,
        "listingId": lead.listingId,
        "status": NEW,
        "createdAt": now,
        "updatedAt": now,
    }


def created_body(document: dict[str, Any]) -> dict[str, Any]:
    """The 201 body (`LeadCreated`)."""
    return {
        "leadId": str(document["_id"]),
        "callerReferenceId": document["callerReferenceId"],
        "status": document["status"],
        "createdAt": iso_utc(document["createdAt"]),
    }


def lead_body(document: dict[str, Any]) -> dict[str, Any]:
    """The GET body (`LeadResponse`)."""
    return {
        "leadId": str(document["_id"]),
        "callerReferenceId": document["callerReferenceId"],
        "status": document["status"],
        "organizationId": str(document["organizationId"]),
        "leadCode": document.get("leadCode"),
        "createdAt": iso_utc(document["createdAt"]),
        "updatedAt": iso_utc(document.get("updatedAt") or document["createdAt"]),
    }


@dataclass(frozen=True, slots=True)
class LeadInsert:
    """What `LeadStore.insert` did: stored `document` (`created`), or found the partner's earlier lead
    with the same callerReferenceId (`document` is that one)."""

    document: dict[str, Any]
    created: bool


class LeadStoreUnavailable(Exception):
    """The store could not be reached: 503, safe to retry (a retry of a stored lead is a 409 naming it)."""


class LeadStore(Protocol):
    def insert(self, document: dict[str, Any]) -> LeadInsert:
        """Store `document` unless the partner already has a lead with its callerReferenceId, atomically."""
        ...

    def find(self, partner_id: str, caller_reference_id: str) -> dict[str, Any] | None:
        """The partner's lead with this callerReferenceId, or None."""
        ...
