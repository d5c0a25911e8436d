"""Lead ingestion: POST /leads/{partnerId} and GET /leads/{partnerId}/{callerReferenceId}.

Both authenticate exactly as /data (`routes.authorized_partner`). A POST then counts against the
partner's lead allowance (its `leadsRateLimit`, else the stack default) before its body is even
read, so malformed, refused and duplicate submissions cost what a created lead does and nobody
probes the allowlist or the references for free. Every answer after that count carries
`RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.

powertools' request validation is off on these two routes because it would run before
authentication (an anonymous caller would get a 400 describing the body, and an uncounted one);
the body and the path value are validated by `distiller.api.leads` after the count instead.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from distiller.api.contract import responses
from distiller.api.errors import ApiError, NotFound
from distiller.api.leads import (
    MAX_REFERENCE_LENGTH,
    LeadCreated,
    LeadRequest,
    LeadResponse,
    LeadStore,
    LeadStoreUnavailable,
    created_body,
    lead_body,
    lead_document,
    may_submit_to,
    parse_lead,
    parse_reference,
)
from distiller.api.rate_limit import DEFAULT_LEADS_LIMIT, RateDecision, RateLimit, RateLimiter
from distiller.api.routes import _rt, app, authorized_partner
from distiller.core.clock import utc_now
from distiller.core.partners import Partner


@dataclass
class LeadServices:
    """What the /leads routes write to and count with."""

    store: LeadStore
    limiter: RateLimiter
    """Counts lead submissions per partner across every container (`MongoRateLimiter` when deployed)."""
    default_limit: RateLimit = DEFAULT_LEADS_LIMIT
    """For partners whose record has no `leadsRateLimit` (`LEADS_RATE_LIMIT`)."""
    clock: Callable[[], dt.datetime] = utc_now

    def limit_for(self, partner: Partner) -> RateLimit:
        if partner.leads_rate_limit is None:
            return self.default_limit
        requests, per_seconds = partner.leads_rate_limit
        return RateLimit(requests, per_seconds)


def rate_limit_headers(limit: RateLimit, decision: RateDecision) -> dict[str, str]:
    """The IETF draft's RateLimit-* headers of the lead allowance, after one request was counted (or refused)."""
    return {
        "RateLimit-Limit": str(limit.requests),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_seconds),
    }


_RATE_LIMIT_HEADERS: dict[str, Any] = {
    "RateLimit-Limit": {"description": "Lead submissions allowed per window", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "Lead submissions left in the window", "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "Seconds until the allowance grows again", "schema": {"type": "integer"}},
}


def _counted(declared: dict[int, OpenAPIResponse]) -> dict[int, OpenAPIResponse]:
    """`declared` with the RateLimit-* headers on every answer given after the count (401 and an
    authentication 403 come before it and carry none; a 403 of the allowlist does)."""
    counted: dict[int, OpenAPIResponse] = {}
    for code, response in declared.items():
        headers = response.get("headers", {}) if code == 401 else {**response.get("headers", {}), **_RATE_LIMIT_HEADERS}
        counted[code] = {**response, "headers": headers} if headers else response
    return counted


def _services() -> LeadServices:
    services = _rt().leads
    if services is None:
        raise ApiError(503, {"error": "lead ingestion is not available; try again later"})
    return services


@app.post(
    "/leads/<partnerId>",
    summary="Submit a lead for a dealer organization on your allowlist (idempotent by callerReferenceId)",
    responses=_counted(responses(LeadCreated, "The lead was created", 400, 403, 409, 503, status=201)),
    enable_validation=False,
)
def submit_lead(
    partnerId: str,
    # Documents the body in OpenAPI only: validation is off here, so this stays None and the body
    # is parsed by `parse_lead` once the request is authenticated and counted.
    lead: Annotated[LeadRequest | None, Body(description="The lead")] = None,
) -> Response[dict]:
    partner = authorized_partner(partnerId)
    services = _services()
    limit = services.limit_for(partner)
    decision = services.limiter.acquire(f"{partner.partner_id}:leads", limit)
    headers = rate_limit_headers(limit, decision)
    if not decision.allowed:
        wait = decision.retry_after_seconds
        raise ApiError(
            429, {"error": f"lead rate limit exceeded; retry after {wait} s"}, {"Retry-After": str(wait), **headers}
        )
    try:
        request = parse_lead(app.current_event.decoded_body)
        if not may_submit_to(partner.lead_organization_ids, request.organizationId):
            raise ApiError(403, {"error": "organizationId: not on this partner's lead allowlist"})
        outcome = services.store.insert(lead_document(partner.partner_id, request, services.clock()))
    except LeadStoreUnavailable as exc:
        raise ApiError(503, {"error": str(exc)}, headers) from None
    except ApiError as error:
        error.headers = {**error.headers, **headers}
        raise
    if not outcome.created:
        existing = created_body(outcome.document)
        raise ApiError(
            409,
            {
                "error": "callerReferenceId already submitted; leadId is the existing lead",
                "leadId": existing["leadId"],
                "callerReferenceId": existing["callerReferenceId"],
            },
            headers,
        )
    return Response(201, content_types.APPLICATION_JSON, json.dumps(created_body(outcome.document)), headers=headers)


@app.get(
    "/leads/<partnerId>/<callerReferenceId>",
    summary="Look up a lead by your callerReferenceId: its status and metadata",
    responses=responses(LeadResponse, "The lead", 400, 404, 503),
    enable_validation=False,
)
def get_lead(
    partnerId: str,
    callerReferenceId: Annotated[
        str,
        Path(
            min_length=1,
            max_length=MAX_REFERENCE_LENGTH,
            description="Your reference ID for the lead, the same value you passed on submission (percent-encoded)",
        ),
    ],
) -> dict:
    partner = authorized_partner(partnerId)
    services = _services()
    # REST API Gateway hands the path over still percent-encoded: the reference is decoded once.
    reference = parse_reference("callerReferenceId", unquote(callerReferenceId))
    try:
        document = services.store.find(partner.partner_id, reference)
    except LeadStoreUnavailable as exc:
        raise ApiError(503, {"error": str(exc)}) from None
    if document is None:  # another partner's reference is not found either
        raise NotFound("lead not found")
    return lead_body(document)
