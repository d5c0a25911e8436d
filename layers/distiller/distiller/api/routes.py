"""The /data routes: powertools' REST resolver, its validation and its OpenAPI generation.

Every route authenticates first (JWT, `p` = the path's partnerId), then reads through
`PartnerData`, which applies the same webhookScope rules as the distiller's router. Anything
outside the partner's scope is 404, exactly like something that does not exist.

Routes return the plain dicts of `distiller.api.dto`; each declares (`responses=`) the model of
`distiller.api.models` that describes its body and the errors it answers, for the OpenAPI
document only (`openapi_document`, docs/openapi.json).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Query

from distiller.adapters.file_links import FileLinks
from distiller.adapters.queues import MessageQueue, OutgoingMessage
from distiller.api.auth import AuthError, AuthSettings, SharedSecrets, authenticate
from distiller.api.contract import document_of, responses
from distiller.api.data import PartnerData
from distiller.api.dto import delivery_dto
from distiller.api.errors import ApiError, BadRequest, FieldErrors, NotFound, RateLimited
from distiller.api.models import (
    PartnerDealDocumentsResponse,
    PartnerDealList,
    PartnerDealResponse,
    PartnerDocumentResponse,
    PartnerGeneratedDocumentResponse,
    PartnerListingList,
    PartnerListingResponse,
    PartnerOfferList,
    PartnerOfferResponse,
    ReplayQueued,
    WebhookDeliveryList,
    WebhookDeliveryResponse,
)
from distiller.api.rate_limit import DEFAULT_REPLAY_LIMIT, DEFAULT_REQUEST_LIMIT, RateLimit, RateLimiter
from distiller.core.clock import iso_utc, parse_instant, utc_now
from distiller.core.ejson import id_string
from distiller.core.partners import Partner
from distiller.deliver.claim_check import PayloadStore, PayloadTooLarge, PayloadUnavailable
from distiller.deliver.log import PARTNER_STATUSES
from distiller.deliver.message import DeliveryMessage

if TYPE_CHECKING:
    from distiller.api.lead_routes import LeadServices
    from distiller.api.sell_routes import SellServices

API_TITLE = "PrivateAuto Partner API"
API_VERSION = "1.1.2"
MAX_LIMIT = 100
DEFAULT_LIMIT = 50
MAX_PAGE = 1_000_000
"""Deeper pages are refused (400): `_page × _limit` stays far inside a 64-bit `skip`."""
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)
"""Date filters outside [EARLIEST, LATEST] (in UTC) are refused (400), before any arithmetic."""
MAX_TEXT = 128
"""Longest accepted free-text query value (an event name, an eventId)."""


app = APIGatewayRestResolver(enable_validation=True)


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """Requests per partner: every route counts against `requests`; a replay, which makes the
    dispatcher POST to the partner's endpoint, also against the stricter `replays`."""

    requests: RateLimit = DEFAULT_REQUEST_LIMIT
    replays: RateLimit = DEFAULT_REPLAY_LIMIT


@dataclass
class ApiRuntime:
    data: PartnerData
    partners: Callable[[], list[Partner]]
    secrets: SharedSecrets
    auth: AuthSettings
    replay_queue: MessageQueue | None = None
    file_links: FileLinks | None = None
    payloads: PayloadStore | None = None
    """The claim-check store: a replayed payload too large for a queue message goes there."""
    limiter: RateLimiter | None = None
    """Per-partner request limits (None: unlimited, e.g. in unit tests of the reads)."""
    limits: ApiLimits = field(default_factory=ApiLimits)
    sell: SellServices | None = None
    """DealNow initiation (POST and GET /sell); None: those routes answer 503."""
    leads: LeadServices | None = None
    """Lead ingestion (POST and GET /leads); None: those routes answer 503."""


_runtime: ApiRuntime | None = None


def use_runtime(runtime: ApiRuntime) -> None:
    global _runtime
    _runtime = runtime


def _rt() -> ApiRuntime:
    if _runtime is None:
        raise RuntimeError("the API runtime is not configured")
    return _runtime


def _json(status: int, body: Any) -> Response:
    return Response(status, content_types.APPLICATION_JSON, json.dumps(body, default=str))


@app.exception_handler(AuthError)
def _auth_error(error: AuthError) -> Response:
    return _json(error.status, {"error": error.message})


@app.exception_handler(NotFound)
def _not_found(error: NotFound) -> Response:
    return _json(404, {"error": str(error)})


@app.exception_handler(BadRequest)
def _bad_request(error: BadRequest) -> Response:
    return _json(400, {"error": str(error)})


@app.exception_handler(RateLimited)
def _rate_limited(error: RateLimited) -> Response:
    return Response(
        429,
        content_types.APPLICATION_JSON,
        json.dumps({"error": str(error)}),
        headers={"Retry-After": str(error.retry_after_seconds)},
    )


@app.exception_handler(ApiError)
def _api_error(error: ApiError) -> Response:
    return Response(error.status, content_types.APPLICATION_JSON, json.dumps(error.body), headers=error.headers)


@app.exception_handler(RequestValidationError)
def _invalid(error: RequestValidationError) -> Response:
    """400 naming each wrong value: `error` lists them in one line, `fields` maps each to its reason
    (`contact.email`, `_page`; `request` or `body` when no single value is at fault)."""
    fields: dict[str, str] = {}
    for e in error.errors():
        loc = tuple(str(p) for p in e.get("loc", ()))
        name = ".".join(loc[1:]) or (loc[0] if loc else "request")
        fields.setdefault(name, str(e.get("msg", "invalid")).removeprefix("Value error, "))
    return _api_error(FieldErrors(fields))


def authorized_partner(partner_id: str, *, replay: bool = False) -> Partner:
    """Authenticate (Bearer JWT) the request for `partner_id`, count it against the partner's limits, and
    return its record (401/403/429 otherwise)."""
    rt = _rt()
    headers = app.current_event.headers or {}
    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    partner, _ = admitted_partner(
        partner_id, lambda secret: authenticate(authorization, partner_id, secret, rt.auth), "invalid token"
    )
    if replay:
        _within_limit(rt, f"{partner_id}:replays", rt.limits.replays)
    return partner


def admitted_partner[T](partner_id: str, verify: Callable[[str | None], T], unknown: str) -> tuple[Partner, T]:
    """The partner's record and what `verify` made of the request's credentials, given the partner's stored
    shared secret; 401 (`unknown`: the message a wrong secret gets) for an unknown partner, 403 for an
    inactive one, 429 beyond its general allowance, counted only once authenticated.

    An unknown partner costs what a known one does: no secret is fetched for it (a fetch that finds
    nothing is slow and uncached), and `verify` gets None, verifying against a throwaway key.
    """
    rt = _rt()
    partner = next((p for p in rt.partners() if p.partner_id == partner_id), None)
    secret = rt.secrets.shared_secret(partner_id) if partner is not None else None
    verified = verify(secret)
    if partner is None:
        raise AuthError(401, unknown)
    if not partner.active:
        raise AuthError(403, "partner is inactive")
    # Counted once authenticated: nobody can spend another partner's allowance.
    _within_limit(rt, f"{partner_id}:requests", rt.limits.requests)
    return partner, verified


def _within_limit(rt: ApiRuntime, key: str, limit: RateLimit) -> None:
    if rt.limiter is None:
        return
    decision = rt.limiter.acquire(key, limit)
    if not decision.allowed:
        raise RateLimited(decision.retry_after_seconds)


Page = Annotated[int, Query(alias="_page", ge=0, le=MAX_PAGE, description="Zero-based page index")]
Limit = Annotated[
    int, Query(alias="_limit", ge=1, le=2**31 - 1, description="Page size (at most 100; larger values are capped)")
]
Status = Annotated[str | None, Query(max_length=MAX_TEXT, description="Filter by status")]


def _instant_query(description: str) -> Query:
    return Query(max_length=64, description=description, json_schema_extra={"format": "date-time"})


def _page(result: Any, page: int, limit: int) -> dict[str, Any]:
    return {
        "data": result.data,
        "_meta": {"page": page, "limit": limit, "total": result.total, "hasMore": (page + 1) * limit < result.total},
    }


def _listed(partner_id: str, page: int, limit: int, read: Callable[[Partner, int], Any]) -> dict[str, Any]:
    """Authenticate, cap the page size at 100, read, and wrap in `{data, _meta}`."""
    partner = authorized_partner(partner_id)
    limit = min(limit, MAX_LIMIT)
    return _page(read(partner, limit), page, limit)


def _found(value: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if value is None:
        raise NotFound(f"{what} not found")
    return value


@app.get(
    "/data/deals/<partnerId>",
    summary="List the partner's deals",
    responses=responses(PartnerDealList, "A page of deals, newest first", 400),
)
def list_deals(partnerId: str, _page_: Page = 0, _limit_: Limit = DEFAULT_LIMIT, status: Status = None) -> dict:
    return _listed(
        partnerId, _page_, _limit_, lambda partner, limit: _rt().data.list_deals(partner, _page_, limit, status)
    )


@app.get(
    "/data/deals/<partnerId>/<dealId>",
    summary="One deal (PartnerDealResponse)",
    responses=responses(PartnerDealResponse, "The deal", 404),
)
def get_deal(partnerId: str, dealId: str) -> dict:
    return _found(_rt().data.get_deal(authorized_partner(partnerId), dealId), "deal")


@app.get(
    "/data/deals/<partnerId>/<dealId>/documents",
    summary="Every document on a deal, freshly signed",
    responses=responses(PartnerDealDocumentsResponse, "The deal's title attachment and documents", 404),
)
def deal_documents(partnerId: str, dealId: str) -> dict:
    return _found(_rt().data.deal_documents(authorized_partner(partnerId), dealId), "deal")


@app.get(
    "/data/offers/<partnerId>",
    summary="List the partner's offers",
    responses=responses(PartnerOfferList, "A page of offers, newest first", 400),
)
def list_offers(partnerId: str, _page_: Page = 0, _limit_: Limit = DEFAULT_LIMIT, status: Status = None) -> dict:
    return _listed(
        partnerId, _page_, _limit_, lambda partner, limit: _rt().data.list_offers(partner, _page_, limit, status)
    )


@app.get(
    "/data/offers/<partnerId>/<offerId>",
    summary="One offer (PartnerOfferResponse)",
    responses=responses(PartnerOfferResponse, "The offer", 404),
)
def get_offer(partnerId: str, offerId: str) -> dict:
    return _found(_rt().data.get_offer(authorized_partner(partnerId), offerId), "offer")


@app.get(
    "/data/listings/<partnerId>",
    summary="List the partner's listings",
    responses=responses(PartnerListingList, "A page of listings, newest first", 400),
)
def list_listings(partnerId: str, _page_: Page = 0, _limit_: Limit = DEFAULT_LIMIT, status: Status = None) -> dict:
    return _listed(
        partnerId, _page_, _limit_, lambda partner, limit: _rt().data.list_listings(partner, _page_, limit, status)
    )


@app.get(
    "/data/listings/<partnerId>/<listingId>",
    summary="One listing (PartnerListingResponse)",
    responses=responses(PartnerListingResponse, "The listing", 404),
)
def get_listing(partnerId: str, listingId: str) -> dict:
    return _found(_rt().data.get_listing(authorized_partner(partnerId), listingId), "listing")


@app.get(
    "/data/documents/<partnerId>/<documentId>",
    summary="One document (documents collection)",
    responses=responses(PartnerDocumentResponse, "The document", 404),
)
def get_document(partnerId: str, documentId: str) -> dict:
    return _found(_rt().data.document(authorized_partner(partnerId), documentId), "document")


@app.get(
    "/data/generated-documents/<partnerId>/<documentId>",
    summary="One generated document",
    responses=responses(PartnerGeneratedDocumentResponse, "The generated document", 404),
)
def get_generated_document(partnerId: str, documentId: str) -> dict:
    return _found(_rt().data.generated_document(authorized_partner(partnerId), documentId), "generated document")


def _instant(name: str, text: str | None) -> dt.datetime | None:
    """An ISO 8601 query value as a UTC instant within [EARLIEST, LATEST]; 400 naming `name` otherwise."""
    if text is None:
        return None
    try:
        value = parse_instant(text)
    except ValueError:
        raise BadRequest(f"{name}: not an ISO 8601 date-time, or out of range") from None
    if not EARLIEST <= value <= LATEST:
        raise BadRequest(f"{name}: out of range (from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d})")
    return value


@app.get(
    "/data/webhook-deliveries/<partnerId>",
    summary="The partner's webhook delivery attempts, newest first",
    responses=responses(WebhookDeliveryList, "A page of delivery attempts, newest first", 400),
)
def list_deliveries(
    partnerId: str,
    _page_: Page = 0,
    _limit_: Limit = DEFAULT_LIMIT,
    status: Annotated[str | None, Query(max_length=MAX_TEXT, description="delivered, failed or skipped")] = None,
    event: Annotated[str | None, Query(max_length=MAX_TEXT, description="Event name, e.g. deal.created")] = None,
    dateFrom: Annotated[str | None, _instant_query("ISO 8601: attempts at or after")] = None,
    dateTo: Annotated[str | None, _instant_query("ISO 8601: attempts at or before")] = None,
    eventId: Annotated[
        str | None, Query(max_length=MAX_TEXT, description="The delivery's eventId (X-PA-Event-Id)")
    ] = None,
) -> dict:
    partner = authorized_partner(partnerId)
    if status is not None and status not in PARTNER_STATUSES:
        raise BadRequest(f"status: must be one of {', '.join(PARTNER_STATUSES)}")
    date_from, date_to = _instant("dateFrom", dateFrom), _instant("dateTo", dateTo)
    if date_from and date_to and date_from > date_to:
        raise BadRequest("dateFrom: must not be after dateTo")
    limit = min(_limit_, MAX_LIMIT)
    result = _rt().data.list_deliveries(
        partner, _page_, limit, status=status, event=event, date_from=date_from, date_to=date_to, event_id=eventId
    )
    return _page(result, _page_, limit)


@app.get(
    "/data/webhook-deliveries/<partnerId>/<logId>",
    summary="One delivery attempt with its dispatched body",
    responses=responses(WebhookDeliveryResponse, "The delivery attempt", 404),
)
def get_delivery(partnerId: str, logId: str) -> dict:
    return delivery_dto(_found(_rt().data.get_delivery(authorized_partner(partnerId), logId), "delivery"))


@app.post(
    "/data/webhook-deliveries/<partnerId>/<logId>/replay",
    summary="Deliver this event again, with the same eventId (document links freshly signed)",
    responses=responses(ReplayQueued, "Queued for delivery", 404, 422, 503, status=202),
)
def replay_delivery(partnerId: str, logId: str) -> tuple[dict, int]:
    rt = _rt()
    partner = authorized_partner(partnerId, replay=True)
    attempt = _found(rt.data.get_delivery(partner, logId), "delivery")
    payload = dict(attempt.get("payload") or {})
    # The same scope check as the reads, on the entity as it is now: what the partner may no
    # longer read is not re-sent, let alone re-signed.
    files = rt.data.readable_files(partner, str(payload.get("entityType") or ""), id_string(payload.get("id")) or "")
    if files is None:
        raise NotFound("the event's entity is not found")
    if isinstance(payload.get("documents"), list):
        payload["documents"] = _readable_documents(rt.file_links, payload["documents"], files)
    now = utc_now()
    message = DeliveryMessage(
        partner_id=attempt["partnerId"],
        event=attempt["event"],
        event_id=attempt["eventId"],
        event_key=str(payload.get("eventKey") or attempt.get("eventKey") or ""),
        payload=payload,
        emitted_at=iso_utc(now),
        # A new round of attempts, distinct from every earlier one (so it is POSTed even if the
        # event was delivered before): the replay's request time, in seconds.
        redrive=max(int(now.timestamp()), int(attempt.get("redrive") or 0) + 1),
    )
    try:
        message = message.claim_checked(rt.payloads)
    except PayloadTooLarge as exc:
        return {"error": f"this delivery cannot be replayed: {exc}"}, 422
    except PayloadUnavailable:
        return {"error": "the claim-check store is unavailable; try again"}, 503
    if rt.replay_queue is None or rt.replay_queue.send([OutgoingMessage(message.to_body())]):
        return {"error": "the delivery queue is unavailable; try again"}, 503
    return {"status": "queued", "eventId": message.event_id, "event": message.event}, 202


def _readable_documents(file_links: FileLinks | None, documents: list[Any], files: list[tuple[str, str]]) -> list[Any]:
    """The event's `documents[]` that are still among the entity's files, freshly signed; a file the
    entity no longer carries is left out (it is not the partner's to read any more)."""
    if file_links is None:  # nothing to sign with: nothing is handed out again
        return []
    current = {file_links.stored_key(key) for key, _ in files}
    kept = []
    for document in documents:
        if not isinstance(document, dict) or not isinstance(document.get("signedUrl"), str):
            continue
        if file_links.stored_key(document["signedUrl"]) not in current:
            continue
        fresh = file_links.link(document["signedUrl"].split("?", 1)[0], str(document.get("filename") or ""))
        kept.append(fresh if fresh.get("expiresAt") else document)
    return kept


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the routes (`make openapi` writes it to docs/openapi.json)."""
    document = document_of(app, API_TITLE, API_VERSION)
    sell_routes.document_inline_auth(document)
    return document


# The write routes register on the same `app` (and so join its OpenAPI document).
from distiller.api import lead_routes, sell_routes  # noqa: E402, F401
