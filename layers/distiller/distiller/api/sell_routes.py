"""DealNow initiation: POST /sell/{partnerId} (Bearer JWT) and GET /sell/{partnerId} (inline auth).

Both reserve a deal: a stub listing for the VIN when it has none (`listing.created`), and a
dealNowPending offer with the partner's organisation on the buyer side (`offer.created`) that
holds the deal's id and guid; the deal itself materialises when the seller follows the link.

powertools' request validation is off on both routes, as on /leads: it would run before
authentication. The body or query is validated by `distiller.api.sell` once the request is
authenticated and counted. An `Idempotency-Key` (POST) or the signed URL itself (GET) makes a
retry answer the first request's deal instead of reserving another.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from bson import ObjectId

from distiller.api.auth import INVALID_SIGNATURE
from distiller.api.contract import responses
from distiller.api.errors import ApiError, FieldErrors
from distiller.api.inline_auth import authenticate_inline
from distiller.api.models import ErrorResponse
from distiller.api.routes import _rt, admitted_partner, app, authorized_partner
from distiller.api.sell import (
    DealLinks,
    DealStore,
    IdempotencyStore,
    Mailer,
    MailerError,
    SellLinkRequest,
    SellRequest,
    SellResponse,
    StoreUnavailable,
    deal_links,
    dealnow_offer,
    fingerprint,
    link_email,
    stub_listing,
    validate_sell,
    vehicle_errors,
    vehicle_title,
)
from distiller.core.clock import utc_now
from distiller.core.partners import Partner

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255
IDEMPOTENCY_SECONDS = 24 * 3600
LEASE_SECONDS = 120
"""An unfinished claim lapses after this (longer than the API function may run)."""


@dataclass
class SellServices:
    """What the /sell routes write to and send through."""

    deals: DealStore
    idempotency: IdempotencyStore
    dealnow_domain: str
    """Bare domain of `linkPlatform: dealnow` links (https://app.<this>/...)."""
    app_domain: str
    """Bare domain of `linkPlatform: pa-app` links (https://app.<this>/...)."""
    mailer: Mailer | None = None
    """Sends the links asked for by buyerSendLink/sellerSendLink; None: such requests are refused (503)."""
    allow_http_redirects: bool = False
    """Local runs only: GET /sell may redirect to http:// URLs."""
    clock: Callable[[], dt.datetime] = utc_now


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """A request that must be answered once: by `key` (partner-scoped), for the request `fingerprint`."""

    key: str
    fingerprint: str
    keep_until: dt.datetime
    """How long a completed answer is kept and replayed."""


def _services() -> SellServices:
    services = _rt().sell
    if services is None:
        raise ApiError(503, {"error": "DealNow initiation is not available; try again later"})
    return services


def _declared(model: type[Any], description: str, *errors: int, status: int) -> dict[int, OpenAPIResponse]:
    declared = responses(model, description, *errors, status=status)
    declared[403] = {**declared[403], "description": "The token is for another partner, or the partner is inactive"}
    declared[409] = {
        **declared[409],
        "description": "The Idempotency-Key (POST) or the signed URL (GET) was used with another request, "
        "or its first request is still in progress",
    }
    declared[503] = {
        **declared[503],
        "description": "The database is unavailable, DealNow initiation is not configured, or an email was "
        "asked for and email sending is not configured",
    }
    return declared


_POST_RESPONSES = _declared(SellResponse, "The deal is reserved: its id, guid and links", 400, 409, 503, status=201)
_GET_RESPONSES = _declared(ErrorResponse, "", 400, 409, 503, status=302)
_GET_RESPONSES[302] = {
    "description": "The deal is reserved; to redirectUrl, else to the buyer's link (the seller's with role=seller)",
    "headers": {"Location": {"description": "Where the browser goes next", "schema": {"type": "string"}}},
    "content": {},  # no body (without this, powertools would describe one from the return annotation)
}
_GET_RESPONSES[401] = {
    **_GET_RESPONSES[401],
    "description": "Missing, malformed, expired or wrongly signed inline credentials (jwt, a JWT in v, or ts and sig)",
}


@app.post(
    "/sell/<partnerId>",
    summary="Initiate a DealNow transaction: returns buyer and seller deep links",
    description="If the vehicle is not already listed, year, make and model are required in addition to vin. "
    "redirectUrl and role are GET-only. An optional Idempotency-Key header makes a retry within 24 h answer "
    "the same deal.",
    responses=_POST_RESPONSES,
    enable_validation=False,
)
def sell(
    partnerId: str,
    # Documentation only (validation is off, so these stay None): the body and the header are read
    # once the request is authenticated and counted.
    body: Annotated[SellRequest | None, Body(description="The deal to initiate")] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            description="1-255 printable ASCII characters; the same key and body within 24 h answer the same deal",
        ),
    ] = None,
) -> Response[str]:
    partner = authorized_partner(partnerId)
    services = _services()
    event = app.current_event
    key = _idempotency_key(event.headers.get(IDEMPOTENCY_HEADER))
    fields = _json_object(event.decoded_body)
    request = validate_sell(fields)
    idempotency = None
    if key is not None:
        keep_until = services.clock() + dt.timedelta(seconds=IDEMPOTENCY_SECONDS)
        idempotency = IdempotencyClaim(f"{partner.partner_id}\nkey\n{key}", fingerprint(fields), keep_until)
    result, replayed = initiate(services, partner, request, idempotency)
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(201, content_types.APPLICATION_JSON, json.dumps(result), headers=headers)


@app.get(
    "/sell/<partnerId>",
    summary="Initiate a DealNow transaction via browser redirect (inline auth)",
    description="Format 1: ?jwt=<token>. Format 2: ?v=<token> (a v with dots is a JWT). Format 3: short-key "
    "params (v, y, m, o, t, a, bn, be, bl, sn, se, sl, r, ro) plus ts and sig, the hex HMAC-SHA256 of the "
    "canonical query. The same signed URL opened again answers the same deal.",
    responses=_GET_RESPONSES,
    enable_validation=False,
)
def sell_redirect(
    partnerId: str,
    # Documentation only, as on POST: the whole query is read by `authenticate_inline`.
    v: Annotated[str | None, Query(description="VIN (Format 3) or JWT token (Format 2)")] = None,
    jwt: Annotated[str | None, Query(description="Explicit JWT token (Format 1)")] = None,
) -> Response[str]:
    rt = _rt()
    event = app.current_event
    query = event.multi_value_query_string_parameters or {
        name: [value] for name, value in event.query_string_parameters.items()
    }
    partner, grant = admitted_partner(
        partnerId, lambda secret: authenticate_inline(query, partnerId, secret, rt.auth), INVALID_SIGNATURE
    )
    services = _services()
    request = validate_sell(
        grant.fields, get=True, text_values=grant.format == 3, allow_http=services.allow_http_redirects
    )
    assert isinstance(request, SellLinkRequest)
    keep_until = max(
        services.clock() + dt.timedelta(seconds=IDEMPOTENCY_SECONDS),
        dt.datetime.fromtimestamp(grant.expires_at, tz=dt.UTC),
    )
    idempotency = IdempotencyClaim(f"{partner.partner_id}\ngrant\n{grant.replay_key}", grant.replay_key, keep_until)
    result, _ = initiate(services, partner, request, idempotency)
    target = request.redirectUrl or (result["sellerLink"] if request.role == "seller" else result["buyerLink"])
    return Response(302, None, "", headers={"Location": target, "Cache-Control": "no-store"})


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY or not all(" " <= ch <= "~" for ch in value):
        reason = f"must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        raise FieldErrors({IDEMPOTENCY_HEADER: reason})
    return value


def _json_object(body: str | None) -> dict[str, Any]:
    try:
        value = json.loads(body or "")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        value = None
    if not isinstance(value, dict):
        raise FieldErrors({"body": "expected a JSON object"})
    return value


def initiate(
    services: SellServices, partner: Partner, request: SellRequest, idempotency: IdempotencyClaim | None
) -> tuple[dict[str, Any], bool]:
    """Reserve the deal and answer its body, with whether that is an earlier request's answer (replayed).

    With a claim, the key is claimed before anything is written (insert-first: racing requests are told
    apart by the store, not by a read), completed with the answer, and released if the request fails.
    """
    if (request.buyerSendLink or request.sellerSendLink) and services.mailer is None:
        # Refused before anything is written: nothing is left half-done.
        raise ApiError(503, {"error": "email sending is not configured"})
    if idempotency is not None:
        lease_until = services.clock() + dt.timedelta(seconds=LEASE_SECONDS)
        held = services.idempotency.begin(idempotency.key, idempotency.fingerprint, lease_until)
        if held is not None:
            return _replayed(held.fingerprint, held.response, idempotency), True
    try:
        result = _reserve_deal(services, partner, request)
    except BaseException:
        if idempotency is not None:
            _release(services, idempotency.key)
        raise
    if idempotency is not None:
        try:
            services.idempotency.complete(idempotency.key, result, idempotency.keep_until)
        except StoreUnavailable:  # the deal exists: answer it; a retry after the lease reserves another
            logger.error("idempotency key of partner %s not completed", partner.partner_id)
    return result, False


def _replayed(held_fingerprint: str, response: dict[str, Any] | None, idempotency: IdempotencyClaim) -> dict[str, Any]:
    if held_fingerprint != idempotency.fingerprint:
        raise ApiError(409, {"error": f"{IDEMPOTENCY_HEADER} was already used with a different request body"})
    if response is None:
        raise ApiError(
            409,
            {"error": "the first request with this key or signed URL is still in progress; retry shortly"},
            {"Retry-After": "1"},
        )
    return response


def _release(services: SellServices, key: str) -> None:
    try:
        services.idempotency.release(key)
    except StoreUnavailable:
        logger.error("idempotency key not released; it lapses after %s s", LEASE_SECONDS)


def _reserve_deal(services: SellServices, partner: Partner, request: SellRequest) -> dict[str, Any]:
    now = services.clock()
    listing = services.deals.find_listing(request.vin)
    if listing is None:
        missing = vehicle_errors(request)
        if missing:
            raise FieldErrors(missing)
        listing = services.deals.insert_stub(stub_listing(request, partner.partner_id, ObjectId(), now))
    deal_id, guid = ObjectId(), str(uuid.uuid4())
    services.deals.insert_offer(
        dealnow_offer(request, partner, listing, offer_id=ObjectId(), deal_id=deal_id, guid=guid, now=now)
    )
    links = deal_links(partner.link_platform, guid, services.dealnow_domain, services.app_domain)
    result: dict[str, Any] = {
        "dealId": str(deal_id),
        "guid": guid,
        "buyerLink": links.buyer,
        "sellerLink": links.seller,
    }
    vehicle = vehicle_title(listing.get("vehicle") or {})
    email_errors = _send_links(services.mailer, partner, request, links, vehicle)
    if email_errors:
        result["emailErrors"] = email_errors
    return result


def _send_links(
    mailer: Mailer | None, partner: Partner, request: SellRequest, links: DealLinks, vehicle: str
) -> dict[str, str]:
    """Email each link asked for, only to its own party; a failure is reported, never raised: the deal exists."""
    failed: dict[str, str] = {}
    for role, wanted, to, name, link in (
        ("buyer", request.buyerSendLink, request.buyerEmail, request.buyerName, links.buyer),
        ("seller", request.sellerSendLink, request.sellerEmail, request.sellerName, links.seller),
    ):
        if not wanted or to is None or mailer is None:
            continue
        subject, text = link_email(role, link, name, vehicle, partner.link_platform)
        try:
            mailer.send(to, subject, text)
        except Exception as exc:  # any failure: the deal is reserved and must still be answered
            # A MailerError names the provider's error code only; anything else may hold the address.
            why = str(exc) if isinstance(exc, MailerError) else type(exc).__name__
            logger.warning("DealNow %s link email of partner %s not sent: %s", role, partner.partner_id, why)
            failed[f"{role}Email"] = f"the link could not be emailed; share {role}Link yourself"
    return failed


#: GET /sell's short-key query parameters besides v (documented in the OpenAPI document): type, meaning.
_SHORT_KEY_DOCS: dict[str, tuple[str, str]] = {
    "y": ("integer", "year: vehicle model year (required if the vehicle is not listed)"),
    "m": ("string", "make (required if the vehicle is not listed)"),
    "o": ("string", "model (required if the vehicle is not listed)"),
    "t": ("string", "trim"),
    "a": ("number", "amount: deal amount in dollars"),
    "bn": ("string", "buyerName"),
    "be": ("string", "buyerEmail: the OTHER party's email when it is the buyer invited by the link"),
    "bl": ("boolean", "buyerSendLink: email the buyer their link (requires be)"),
    "sn": ("string", "sellerName"),
    "se": ("string", "sellerEmail: the OTHER party's email when it is the seller invited by the link"),
    "sl": ("boolean", "sellerSendLink: email the seller their link (requires se)"),
    "r": ("string", "redirectUrl: https URL to send the browser to after the deal is created"),
    "ro": ("string", "role: buyer (default) or seller, whose link the browser is sent to without r"),
    "ts": ("integer", "Format 3: current epoch seconds (±300 s)"),
    "sig": (
        "string",
        "Format 3: hex HMAC-SHA256 of the canonical query (every parameter but sig, sorted, "
        "encodeURIComponent k=v joined by &) keyed by the decoded shared secret",
    ),
}
INLINE_SCHEMES: dict[str, dict[str, str]] = {
    "inlineJwt": {"type": "apiKey", "in": "query", "name": "jwt", "description": "Format 1: ?jwt=<JWT>"},
    "inlineJwtInV": {"type": "apiKey", "in": "query", "name": "v", "description": "Format 2: ?v=<JWT> (a v with dots)"},
    "signedQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "sig",
        "description": "Format 3: short-key parameters with ts and sig (see the parameters)",
    },
}


def document_inline_auth(document: dict[str, Any]) -> None:
    """GET /sell in the OpenAPI document: its three inline credentials as alternative security schemes
    (no bearer token), and every short-key parameter of Format 3."""
    operation = document["paths"]["/sell/{partnerId}"]["get"]
    operation["security"] = [{name: []} for name in INLINE_SCHEMES]
    document.setdefault("components", {}).setdefault("securitySchemes", {}).update(INLINE_SCHEMES)
    declared = {parameter["name"] for parameter in operation.get("parameters", [])}
    operation.setdefault("parameters", []).extend(
        {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": meaning}
        for name, (kind, meaning) in _SHORT_KEY_DOCS.items()
        if name not in declared
    )
