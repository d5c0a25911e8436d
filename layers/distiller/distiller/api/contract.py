"""The partner API's contract as OpenAPI describes it: the responses each route declares and the
document generated from the routes, cleaned of what powertools declares but the API never sends.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, content_types
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel

from distiller.api.models import ErrorResponse

ERROR_RESPONSES: dict[int, OpenAPIResponse] = {
    400: {"description": "An invalid parameter or body: `error` names each, `fields` maps each to its reason"},
    401: {
        "description": "No bearer token, or one that is malformed, expired, wrongly signed or for an unknown partner"
    },
    403: {
        "description": "The token is for another partner, the partner is inactive, or (leads) the organisation "
        "is not on the partner's lead allowlist"
    },
    404: {"description": "Not found, or outside the partner's webhookScope (the two are not told apart)"},
    409: {
        "description": "A conflict: the callerReferenceId was submitted before (the body names the existing "
        "leadId), or the Idempotency-Key was used with another body or is still in progress"
    },
    422: {"description": "The delivery's payload is too large to queue and no claim-check store is configured"},
    429: {
        "description": "Over the partner's request allowance (or replay allowance); retry after `Retry-After` seconds",
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    },
    503: {"description": "The claim-check store or the delivery queue is unavailable; try again"},
}
"""The error answers a route may declare, each with an `ErrorResponse` body."""

READ_ERRORS = (401, 403, 429)
"""Every route authenticates (401/403) and counts against the partner's allowance (429)."""


def responses(model: type[BaseModel], description: str, *errors: int, status: int = 200) -> dict[int, OpenAPIResponse]:
    """The OpenAPI `responses` of a route: `model` for `status`, `ErrorResponse` for each of `errors`.

    Documentation only: the routes return the DTO dicts and no response model validates them
    (their return annotation stays `dict`). powertools adds a 422 of its own to every route;
    `document_of` removes it (request validation errors are answered 400 by `routes._invalid`).
    """
    declared: dict[int, OpenAPIResponse] = {
        status: {"description": description, "content": {content_types.APPLICATION_JSON: {"model": model}}}
    }
    for code in sorted({*READ_ERRORS, *errors}):
        declared[code] = {
            **ERROR_RESPONSES[code],
            "content": {content_types.APPLICATION_JSON: {"model": ErrorResponse}},
        }
    return declared


def document_of(app: APIGatewayRestResolver, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI document of `app`'s routes, as this API really answers.

    powertools declares a 422 `HTTPValidationError` on every route; this API answers request
    validation errors 400 `ErrorResponse` instead (`routes._invalid`), so that 422 is removed (the
    replay's own 422, an `ErrorResponse`, stays), and so are the component schemas nothing
    references any more (`HTTPValidationError`, `ValidationError`, `ResponseValidationError`).
    """
    document = json.loads(app.get_openapi_json_schema(title=title, version=version))
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if _schema_ref(responses.get("422")) == f"{COMPONENTS}HTTPValidationError":
                del responses["422"]
            _required_body(operation)
            operation.setdefault("security", [{BEARER_SCHEME: []}])
    schemas = document.get("components", {}).get("schemas", {})
    used = _referenced(document.get("paths", {}), schemas)
    for name in [name for name in schemas if name not in used]:
        del schemas[name]
    document.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "HS256/384/512 JWT signed with the partner's shared secret (base64-decoded to UTF-8 text), "
        "with p = the path's partnerId and an exp at most 15 minutes after iat",
    }
    return document


BEARER_SCHEME = "partnerJwt"
"""The security scheme of every route that does not declare its own (GET /sell authenticates inline)."""


def _required_body(operation: dict[str, Any]) -> None:
    """A body the route declares as `Model | None` (documentation only: it is read once the request is
    authenticated) is required: `{"$ref": Model}`, not `anyOf [Model, null]`."""
    content = operation.get("requestBody", {}).get("content", {}).get(content_types.APPLICATION_JSON)
    schema = content.get("schema") if isinstance(content, dict) else None
    if not isinstance(schema, dict):
        return
    refs = [option for option in schema.get("anyOf", ()) if isinstance(option, dict) and "$ref" in option]
    if len(refs) == 1 and len(schema["anyOf"]) == 2 and {"type": "null"} in schema["anyOf"]:
        content["schema"] = refs[0]
        operation["requestBody"]["required"] = True


COMPONENTS = "#/components/schemas/"


def _schema_ref(response: Any) -> str | None:
    if not isinstance(response, dict):
        return None
    schema = response.get("content", {}).get(content_types.APPLICATION_JSON, {}).get("schema", {})
    return schema.get("$ref") if isinstance(schema, dict) else None


def _referenced(root: Any, schemas: dict[str, Any]) -> set[str]:
    """The component schemas `root` references, directly or through other components."""
    found: set[str] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(COMPONENTS) and ref[len(COMPONENTS) :] not in found:
                found.add(ref[len(COMPONENTS) :])
                pending.append(schemas.get(ref[len(COMPONENTS) :]))
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found
