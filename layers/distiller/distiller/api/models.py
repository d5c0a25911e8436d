"""The /data response bodies as pydantic models: what docs/openapi.json says each route answers.

The routes still return the plain dicts of `distiller.api.dto` (so the JSON sent is exactly what
the builders make); these models describe that JSON. `tests/unit/test_api_models.py` validates
every real response (DTOs from the sample world, and bodies through the resolver) against its
model, and requires the model to serialise it back byte for byte, so a DTO change that breaks the
documented shape fails there.

Every DTO field is always present (a field the stored document lacks is `null`), so every field
here is required, and nullable where the builder can emit `null`. The models accept and ignore
unknown fields, so the document does not forbid fields a later version adds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from distiller.core.clock import parse_instant


def _iso_8601(value: str) -> str:
    parse_instant(value)
    return value


Instant = Annotated[
    str,
    AfterValidator(_iso_8601),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""An ISO 8601 date-time, UTC with `Z` as the API writes it (a date stored as a string passes through)."""

Number = Annotated[int | float, WithJsonSchema({"type": "number"})]
"""A JSON number: integral amounts (and `Decimal128` holding one) are integers, others floats."""

MongoId = Annotated[
    str,
    WithJsonSchema({"type": "string", "description": "The stored _id: an ObjectId's 24-hex string, or the string id"}),
]


class _Response(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


# --------------------------------------------------------------------------------------------
# Errors and paging
# --------------------------------------------------------------------------------------------


class ErrorResponse(_Response):
    """Every error the partner API answers: 400, 401, 403, 404, 409, 422 (replay), 429, 503."""

    error: str = Field(description="What went wrong; a 400 names the offending parameter first")
    fields: dict[str, str] | None = Field(
        default=None, description="400 only: each offending parameter or body field (dotted path) and its reason"
    )
    leadId: str | None = Field(default=None, description="409 of POST /leads only: the lead already submitted")
    callerReferenceId: str | None = Field(default=None, description="409 of POST /leads only: its reference")


class PageMeta(_Response):
    """`_meta` of a list: the page asked for, the page size used (at most 100), the total in scope."""

    page: int
    limit: int
    total: int
    hasMore: bool


# --------------------------------------------------------------------------------------------
# Deals (PartnerDealResponse)
# --------------------------------------------------------------------------------------------


class DealParty(_Response):
    """`buyer` / `seller` of a deal."""

    id: str | None
    organizationId: str | None
    status: str | None = Field(description="invited, joined, readyToClose, ...")
    titleConfirmedDate: Instant | None
    confirmedDate: Instant | None
    infoCompletedAt: Instant | None
    termsConfirmedAt: Instant | None
    paymentConfirmedAt: Instant | None
    titleConfirmedAt: Instant | None
    servicesConfirmedAt: Instant | None
    titleSubmittedAt: Instant | None


class Transfer(_Response):
    amount: Number | None
    transferDate: Instant | None


class PrivateAutoPayTransfer(Transfer):
    checkDelivery: str | None
    payoutSourceType: str | None


class CryptoPayment(_Response):
    btc: Transfer


class DealPayment(_Response):
    privateAutoPay: PrivateAutoPayTransfer
    cash: Transfer
    loan: Transfer
    crypto: CryptoPayment


class DealDocumentReference(_Response):
    """A `documents[]` entry of a deal: the document's id, status and classification."""

    id: str | None
    status: str | None
    docClassification: str | None


class DealState(_Response):
    documentsStatus: str | None


class LoanPayoffDoc(_Response):
    fileUrl: str | None


class StatusChange(_Response):
    value: str | None
    previous: str | None
    date: Instant | None


class PartnerDealResponse(_Response):
    """One deal, as GET /data/deals/{partnerId}/{dealId} answers it."""

    id: MongoId
    guid: str | None
    status: str | None
    closingStatus: str | None
    closingFeePayer: str | None
    state: str | None
    odometer: str | None
    appSource: str | None
    listingId: str | None
    offerId: str | None
    currentOfferStatus: str | None = Field(description="In the partners' offer vocabulary (rejected, cancelled)")
    documentsStatus: str | None
    negativeEquity: bool | None
    negativeEquityFunded: bool | None
    amount: Number | None
    currency: str | None
    buyer: DealParty
    seller: DealParty
    payment: DealPayment
    documents: list[DealDocumentReference] | None
    dealState: DealState
    titleApprovedAt: Instant | None
    ownershipType: str | None
    payoffType: str | None
    loanPayoffDocs: list[LoanPayoffDoc] | None
    loanPayoffConfirmed: bool | None
    statusHistory: list[StatusChange] | None
    createdAt: Instant | None
    updatedAt: Instant | None


class PartnerDealList(_Response):
    """GET /data/deals/{partnerId}: the partner's deals, newest first."""

    data: list[PartnerDealResponse]
    meta: PageMeta = Field(alias="_meta")


# --------------------------------------------------------------------------------------------
# Offers (PartnerOfferResponse)
# --------------------------------------------------------------------------------------------


class PartnerOfferResponse(_Response):
    """One offer, as GET /data/offers/{partnerId}/{offerId} answers it."""

    id: MongoId
    guid: str | None
    status: str | None = Field(description="In the partners' vocabulary: declined is rejected, deleted is cancelled")
    price: Number | None
    currency: str | None
    listingId: str | None
    offeredByUserId: str | None
    offeredByOrganizationId: str | None
    offeredToUserId: str | None
    offeredToOrganizationId: str | None
    externalId: str | None
    buyerExternalId: str | None
    sellerExternalId: str | None
    appSource: str | None
    dealNowExpiration: Instant | None
    titleDeliveryMethod: str | None
    createdAt: Instant | None
    updatedAt: Instant | None


class PartnerOfferList(_Response):
    """GET /data/offers/{partnerId}: the partner's offers, newest first."""

    data: list[PartnerOfferResponse]
    meta: PageMeta = Field(alias="_meta")


# --------------------------------------------------------------------------------------------
# Listings (PartnerListingResponse)
# --------------------------------------------------------------------------------------------


class ListingVehicle(_Response):
    year: Number | None
    make: str | None
    model: str | None
    trim: str | None
    vin: str | None
    bodyStyle: str | None
    mileage: Number | None
    exteriorColor: str | None
    interiorColor: str | None
    transmission: str | None
    driveType: str | None
    fuel: str | None
    cylinders: str | None


class ListingOwnershipInfo(_Response):
    ownershipType: str | None
    vehicleHaveLien: bool | None


class PartnerListingResponse(_Response):
    """One listing, as GET /data/listings/{partnerId}/{listingId} answers it."""

    id: MongoId
    listingNo: str | None
    slug: str | None
    title: str | None
    status: str | None
    sellerId: str | None
    organizationId: str | None
    price: Number | None
    vehicle: ListingVehicle
    ownershipInfo: ListingOwnershipInfo
    condition: str | None
    appSource: str | None
    createdAt: Instant | None
    updatedAt: Instant | None


class PartnerListingList(_Response):
    """GET /data/listings/{partnerId}: the partner's listings, newest first."""

    data: list[PartnerListingResponse]
    meta: PageMeta = Field(alias="_meta")


# --------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------


class SignedFile(_Response):
    """A stored file and its freshly signed link (4 hours); `url` and `expiresAt` are null when
    the API has nothing to sign with."""

    key: str
    url: str | None
    expiresAt: Instant | None


class Signer(_Response):
    signerRole: str | None = Field(description="seller, buyer, ...")
    signedAt: Instant | None = Field(description="null until signed")


class DealRef(_Response):
    id: MongoId
    guid: str | None


class DealDocumentEntry(_Response):
    """One document on a deal; `entityType` names the single-document endpoint that serves it."""

    id: str | None
    docClassification: str | None = Field(description="bill-of-sale, poa, ...; loan-payoff for a credit report")
    status: str | None
    name: str | None
    signers: list[Signer]
    signed: list[SignedFile]
    entityType: Literal["documents", "platoforms_generated_documents", "credit_reports"]


class PartnerDealDocumentsResponse(_Response):
    """GET /data/deals/{partnerId}/{dealId}/documents: title attachment + every document, freshly signed."""

    deal: DealRef
    title: list[SignedFile]
    documents: list[DealDocumentEntry]


class PartnerDocumentResponse(_Response):
    """GET /data/documents/{partnerId}/{documentId}: a `documents` row, read through `dealId`."""

    id: MongoId
    dealId: str | None
    docClassification: str | None
    status: str | None
    signers: list[Signer]
    signed: list[SignedFile]


class PartnerGeneratedDocumentResponse(_Response):
    """GET /data/generated-documents/{partnerId}/{documentId}: a `platoforms_generated_documents` row."""

    id: MongoId
    docClassification: str | None
    name: str | None
    signers: list[Signer]
    signed: list[SignedFile]


# --------------------------------------------------------------------------------------------
# Webhook deliveries
# --------------------------------------------------------------------------------------------


class WebhookDeliveryResponse(_Response):
    """One delivery attempt: the spec's fields, plus `eventId` (X-PA-Event-Id) and `attempt`
    (0 for the first POST, 1-3 for the retries)."""

    id: MongoId
    partnerId: str | None
    event: str | None = Field(description="e.g. deal.created")
    status: Literal["delivered", "failed", "skipped"] | None
    url: str | None
    statusCode: int | None = Field(description="The partner's HTTP status; null when nothing was answered")
    attemptedAt: Instant | None
    responseBodyExcerpt: str | None
    error: str | None
    payload: dict[str, Any] | None = Field(description="The dispatched body")
    eventId: str | None
    attempt: int | None


class WebhookDeliveryList(_Response):
    """GET /data/webhook-deliveries/{partnerId}: the partner's attempts, newest first."""

    data: list[WebhookDeliveryResponse]
    meta: PageMeta = Field(alias="_meta")


class ReplayQueued(_Response):
    """202 of a replay: the event is queued for delivery again, with the same eventId."""

    status: Literal["queued"]
    eventId: str
    event: str


__all__ = [
    "DealDocumentEntry",
    "DealParty",
    "ErrorResponse",
    "PageMeta",
    "PartnerDealDocumentsResponse",
    "PartnerDealList",
    "PartnerDealResponse",
    "PartnerDocumentResponse",
    "PartnerGeneratedDocumentResponse",
    "PartnerListingList",
    "PartnerListingResponse",
    "PartnerOfferList",
    "PartnerOfferResponse",
    "ReplayQueued",
    "SignedFile",
    "Signer",
    "WebhookDeliveryList",
    "WebhookDeliveryResponse",
]
