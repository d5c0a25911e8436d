"""The /data response models (`distiller.api.models`) against what the API really sends.

The routes return the DTO dicts of `distiller.api.dto`; the models only document them (in
docs/openapi.json). So every response is checked here against its model: it must validate
strictly and serialise back to exactly the same JSON (same fields, order and values), so a DTO
change that breaks the documented shape, or a model that no longer describes the DTO, fails.

- DTOs: those the sample world (tests/integration/test_api_data.py) produces for every partner,
  the spec's examples, fully populated documents and documents with nothing but an `_id`.
- HTTP: every route through the resolver, its 200/202 body against the model the OpenAPI document
  names for it, and every error it can be made to answer against `ErrorResponse`, declared in the
  document for that route, and nothing declared that the route never answers.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from collections import Counter
from typing import Any

import pytest
from bson import ObjectId
from pydantic import BaseModel, ValidationError

from distiller.adapters.lookups import MongoLookups
from distiller.api import models, routes
from distiller.api.dto import (
    deal_document_entry,
    deal_dto,
    delivery_dto,
    document_dto,
    file_dto,
    generated_document_dto,
    listing_dto,
    offer_dto,
)
from distiller.api.models import (
    ErrorResponse,
    PartnerDealDocumentsResponse,
    PartnerDealResponse,
    PartnerDocumentResponse,
    PartnerGeneratedDocumentResponse,
    PartnerListingResponse,
    PartnerOfferResponse,
    WebhookDeliveryResponse,
)
from distiller.api.rate_limit import RateLimit
from distiller.api.routes import ApiLimits, openapi_document
from distiller.deliver.claim_check import INLINE_LIMIT_BYTES
from distiller.deliver.log import DELIVERIES_COLLECTION, DeliveryAttempt
from distiller_tools.local.api_server import api_gateway_event, build_runtime
from distiller_tools.local.pipeline import LocalContext
from tests.integration.test_api import sample_partners, token
from tests.integration.test_api_data import (
    ALL_IDS,
    BOS_SHARED,
    D34,
    DOC_POA,
    L21,
    O2,
    build_database,
    signer_data,
)
from tests.unit.test_api_dto import (
    SPEC_DEAL,
    SPEC_DEAL_DOCUMENTS_ENTRY,
    SPEC_DELIVERY,
    SPEC_DOCUMENT,
    SPEC_GENERATED_DOCUMENT,
    SPEC_LISTING,
    SPEC_OFFER,
    raw_deal,
    raw_delivery,
    raw_listing,
    raw_offer,
)

COMPONENTS = "#/components/schemas/"


def conforms(model: type[BaseModel], body: Any) -> None:
    """`body` is exactly what `model` documents: strictly valid, and the same JSON once serialised."""
    try:
        parsed = model.model_validate(body, strict=True)
    except ValidationError as exc:  # pragma: no cover - the message is the point
        pytest.fail(f"{model.__name__} does not describe {json.dumps(body)[:500]}:\n{exc}")
    assert json.dumps(parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)) == json.dumps(body), (
        model.__name__
    )


# --------------------------------------------------------------------------------------------
# DTOs
# --------------------------------------------------------------------------------------------


@pytest.fixture
def world():
    database = build_database()
    data, _ = signer_data(database)  # files signed: `url` and `expiresAt` are filled in
    return database, data, {p.partner_id: p for p in MongoLookups(database).partners()}


def test_every_dto_of_the_sample_world_is_its_documented_model(world):
    _, data, partners = world
    seen: Counter[str] = Counter()

    def check(model: type[BaseModel], body: Any) -> None:
        conforms(model, body)
        seen[model.__name__] += 1

    for partner in partners.values():
        for read, model in (
            (data.list_deals, PartnerDealResponse),
            (data.list_offers, PartnerOfferResponse),
            (data.list_listings, PartnerListingResponse),
        ):
            for item in read(partner, 0, 100, None).data:
                check(model, item)
        for item in data.list_deliveries(partner, 0, 100).data:
            check(WebhookDeliveryResponse, item)
        for reads, ids in (
            ((data.get_deal, PartnerDealResponse), ALL_IDS["deals"]),
            ((data.deal_documents, PartnerDealDocumentsResponse), ALL_IDS["deals"]),
            ((data.get_offer, PartnerOfferResponse), ALL_IDS["offers"]),
            ((data.get_listing, PartnerListingResponse), ALL_IDS["seller_listings"]),
            ((data.document, PartnerDocumentResponse), ALL_IDS["documents"]),
            ((data.generated_document, PartnerGeneratedDocumentResponse), ALL_IDS["generated"]),
        ):
            read, model = reads
            for entity_id in ids:
                found = read(partner, str(entity_id))
                if found is not None:
                    check(model, found)

    # Every model met real data, documents with signed files among them.
    assert set(seen) == {
        "PartnerDealResponse",
        "PartnerDealDocumentsResponse",
        "PartnerOfferResponse",
        "PartnerListingResponse",
        "PartnerDocumentResponse",
        "PartnerGeneratedDocumentResponse",
        "WebhookDeliveryResponse",
    }


SIGNED = [file_dto("k", {"signedUrl": "https://x/k?sig", "expiresAt": "2026-04-21T18:00:00.000Z"}), file_dto("k", None)]
DOCUMENT = {
    "_id": ObjectId(),
    "dealId": ObjectId(),
    "docClassification": "poa",
    "status": "signed",
    "name": "Power of Attorney",
    "manualSignatures": [{"signerRole": "seller", "signedAt": dt.datetime(2026, 4, 21, tzinfo=dt.UTC)}, {}],
}
BARE = {"_id": ObjectId("6a0243d9a30d4d0026d00e7c")}


@pytest.mark.parametrize(
    ("model", "body"),
    [
        pytest.param(PartnerDealResponse, SPEC_DEAL, id="spec-deal"),
        pytest.param(PartnerOfferResponse, SPEC_OFFER, id="spec-offer"),
        pytest.param(PartnerListingResponse, SPEC_LISTING, id="spec-listing"),
        pytest.param(WebhookDeliveryResponse, {**SPEC_DELIVERY, "eventId": "a" * 64, "attempt": 0}, id="spec-delivery"),
        pytest.param(PartnerDocumentResponse, SPEC_DOCUMENT, id="spec-document"),
        pytest.param(PartnerGeneratedDocumentResponse, SPEC_GENERATED_DOCUMENT, id="spec-generated-document"),
        pytest.param(
            PartnerDealDocumentsResponse,
            {
                "deal": {"id": "string", "guid": "string"},
                "title": SPEC_DOCUMENT["signed"],
                "documents": [{**SPEC_DEAL_DOCUMENTS_ENTRY, "entityType": "documents"}],
            },
            id="spec-deal-documents",
        ),
        pytest.param(PartnerDealResponse, deal_dto(raw_deal()), id="full-deal"),
        pytest.param(PartnerOfferResponse, offer_dto(raw_offer()), id="full-offer"),
        pytest.param(PartnerListingResponse, listing_dto(raw_listing()), id="full-listing"),
        pytest.param(WebhookDeliveryResponse, delivery_dto(raw_delivery()), id="full-delivery"),
        pytest.param(PartnerDocumentResponse, document_dto(DOCUMENT, SIGNED, "deal"), id="full-document"),
        pytest.param(PartnerGeneratedDocumentResponse, generated_document_dto(DOCUMENT, SIGNED), id="full-generated"),
        pytest.param(PartnerDealResponse, deal_dto(BARE), id="bare-deal"),
        pytest.param(PartnerOfferResponse, offer_dto(BARE), id="bare-offer"),
        pytest.param(PartnerListingResponse, listing_dto(BARE), id="bare-listing"),
        pytest.param(WebhookDeliveryResponse, delivery_dto(BARE), id="bare-delivery"),
        pytest.param(PartnerDocumentResponse, document_dto(BARE, [], None), id="bare-document"),
        pytest.param(PartnerGeneratedDocumentResponse, generated_document_dto(BARE, []), id="bare-generated"),
    ],
)
def test_spec_examples_full_and_bare_dtos_are_their_documented_models(model, body):
    conforms(model, body)


@pytest.mark.parametrize("entity_type", ["documents", "platoforms_generated_documents", "credit_reports"])
def test_every_deal_documents_entry_type_is_documented(entity_type):
    entry = deal_document_entry(DOCUMENT, SIGNED, entity_type)
    conforms(models.DealDocumentEntry, entry)


@pytest.mark.parametrize(
    ("model", "body"),
    [
        pytest.param(PartnerDealResponse, {**SPEC_DEAL, "amount": "18500"}, id="amount-as-text"),
        pytest.param(PartnerDealResponse, {**SPEC_DEAL, "createdAt": "yesterday"}, id="date-not-iso"),
        pytest.param(PartnerOfferResponse, {k: v for k, v in SPEC_OFFER.items() if k != "guid"}, id="field-missing"),
        pytest.param(PartnerListingResponse, {**SPEC_LISTING, "vehicle": None}, id="nested-object-null"),
        pytest.param(WebhookDeliveryResponse, {**SPEC_DELIVERY, "eventId": None, "attempt": True}, id="bool-as-int"),
        pytest.param(
            WebhookDeliveryResponse, {**SPEC_DELIVERY, "eventId": None, "attempt": 0, "status": "x"}, id="status"
        ),
    ],
)
def test_a_dto_that_leaves_its_documented_shape_is_refused(model, body):
    with pytest.raises(ValidationError):
        model.model_validate(body, strict=True)


def test_a_dto_field_the_model_does_not_document_fails_the_round_trip():
    with pytest.raises(AssertionError):
        conforms(PartnerOfferResponse, {**SPEC_OFFER, "undocumented": 1})


# --------------------------------------------------------------------------------------------
# Routes, through the resolver
# --------------------------------------------------------------------------------------------

PARTNER = "acme-motors"
INACTIVE = "oldroad-motors"
REPLAYABLE, TOO_LARGE = ObjectId(), ObjectId()
LISTS = {
    "/data/deals/{partnerId}",
    "/data/offers/{partnerId}",
    "/data/listings/{partnerId}",
    "/data/webhook-deliveries/{partnerId}",
}
REPLAY = "/data/webhook-deliveries/{partnerId}/{logId}/replay"
#: Every route with ids acme-motors reads (through its organization) in the test_api_data world.
ROUTES = {
    ("get", "/data/deals/{partnerId}"): {},
    ("get", "/data/deals/{partnerId}/{dealId}"): {"dealId": D34},
    ("get", "/data/deals/{partnerId}/{dealId}/documents"): {"dealId": D34},
    ("get", "/data/offers/{partnerId}"): {},
    ("get", "/data/offers/{partnerId}/{offerId}"): {"offerId": O2},
    ("get", "/data/listings/{partnerId}"): {},
    ("get", "/data/listings/{partnerId}/{listingId}"): {"listingId": L21},
    ("get", "/data/documents/{partnerId}/{documentId}"): {"documentId": DOC_POA},
    ("get", "/data/generated-documents/{partnerId}/{documentId}"): {"documentId": BOS_SHARED},
    ("get", "/data/webhook-deliveries/{partnerId}"): {},
    ("get", "/data/webhook-deliveries/{partnerId}/{logId}"): {"logId": REPLAYABLE},
    ("post", REPLAY): {"logId": REPLAYABLE},
}
#: What each kind of route answers besides its success (and what the document must declare).
EXPECTED_ERRORS = {"list": {400, 401, 403, 429}, "item": {401, 403, 404, 429}, "replay": {401, 403, 404, 422, 429, 503}}


def kind(path: str) -> str:
    return "replay" if path == REPLAY else "list" if path in LISTS else "item"


def secret_of(partner_id: str) -> str:
    record = next(p for p in sample_partners() if p["partnerId"] == partner_id)
    return base64.b64decode(record["sharedSecret"]).decode()


def replayable(log_id: ObjectId, payload_extra: dict[str, Any]) -> dict[str, Any]:
    document = DeliveryAttempt(
        partner_id=PARTNER,
        event="deal.created",
        event_id="f" * 64,
        attempt=0,
        status="delivered",
        url="https://acme-motors.example/hooks",
        attempted_at=dt.datetime(2026, 4, 24, 17, tzinfo=dt.UTC),
        payload={"id": str(D34), "entityType": "deals", "eventKey": "k:acme-motors:deal.created:0", **payload_extra},
        status_code=200,
    ).to_document()
    return {"_id": log_id, **document}


class Api:
    """The resolver over the test_api_data world (+ a replayable and an oversized delivery)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.database = build_database()
        self.database[DELIVERIES_COLLECTION].insert_many(
            [replayable(REPLAYABLE, {}), replayable(TOO_LARGE, {"blob": "x" * (INLINE_LIMIT_BYTES + 1)})]
        )
        self.monkeypatch = monkeypatch
        monkeypatch.setattr(routes, "_runtime", None)  # restored after the test
        self.configure()

    def configure(self, limits: ApiLimits | None = None, *, queue: bool = True) -> None:
        runtime = build_runtime(self.database, sample_partners(), io.StringIO(), limits)
        if not queue:
            runtime.replay_queue = None
        routes.use_runtime(runtime)

    def call(
        self, method: str, template: str, ids: dict[str, Any], *, tok: str | None = "", query: str = ""
    ) -> tuple[int, Any, dict[str, str]]:
        path = template.replace("{partnerId}", PARTNER)
        for name, value in ids.items():
            path = path.replace("{" + name + "}", str(value))
        headers = {} if tok is None else {"Authorization": f"Bearer {tok or token(PARTNER)}"}
        event = api_gateway_event(method.upper(), path + query, headers, b"")
        result = routes.app.resolve(event, LocalContext("trigger-distiller-api"))
        headers = {k: v[-1] for k, v in (result.get("multiValueHeaders") or {}).items() if v}
        return result["statusCode"], json.loads(result["body"]), {**headers, **(result.get("headers") or {})}


@pytest.fixture
def api(monkeypatch):
    return Api(monkeypatch)


@pytest.fixture(scope="module")
def document():
    return openapi_document()


def declared_model(document: dict[str, Any], method: str, path: str, status: int) -> type[BaseModel]:
    response = document["paths"][path][method]["responses"].get(str(status))
    assert response is not None, f"{method.upper()} {path} answers {status}, which the document does not declare"
    ref = response["content"]["application/json"]["schema"]["$ref"]
    return getattr(models, ref.removeprefix(COMPONENTS))


def test_every_data_route_is_exercised_here(document):
    assert {(m, p) for m, p, _ in operations(document)} == set(ROUTES)


@pytest.mark.parametrize(("method", "path"), list(ROUTES), ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_route_answers_the_model_the_document_names(api, document, method, path):
    status, body, _ = api.call(method, path, ROUTES[method, path])

    assert status == (202 if path == REPLAY else 200), body
    conforms(declared_model(document, method, path, status), body)
    if path in LISTS:
        assert body["data"], "an empty list would check nothing of its items"


@pytest.mark.parametrize(("method", "path"), list(ROUTES), ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_error_a_route_answers_is_declared_with_the_error_model(api, document, method, path):
    ids = ROUTES[method, path]
    answered: dict[int, list[Any]] = {}

    def record(status: int, body: Any) -> None:
        answered.setdefault(status, []).append(body)

    record(*api.call(method, path, ids, tok=None)[:2])  # no token
    record(*api.call(method, path, ids, tok=token("carmart"))[:2])  # another partner's token
    inactive = token(INACTIVE, secret_of(INACTIVE))
    record(*api.call(method, path.replace("{partnerId}", INACTIVE), ids, tok=inactive)[:2])
    if path in LISTS:
        record(*api.call(method, path, ids, query="?_page=-1")[:2])
    else:
        record(*api.call(method, path, {name: ObjectId() for name in ids})[:2])
    if path == REPLAY:
        record(*api.call(method, path, {"logId": TOO_LARGE})[:2])
        api.configure(queue=False)
        record(*api.call(method, path, ids)[:2])
    api.configure(ApiLimits(RateLimit(1, 3600), RateLimit(1, 3600)))
    api.call(method, path, ids)
    status, body, headers = api.call(method, path, ids)
    record(status, body)
    assert status == 429 and int(headers["Retry-After"]) > 0

    assert set(answered) == EXPECTED_ERRORS[kind(path)], answered
    declared = {int(code) for code in document["paths"][path][method]["responses"]} - {200, 202}
    assert declared == set(answered)  # declared: every error it answers, and only those
    for status, bodies in answered.items():
        assert declared_model(document, method, path, status) is ErrorResponse
        for body in bodies:
            conforms(ErrorResponse, body)


# --------------------------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------------------------


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The /data operations (the write routes' contract is `tests/unit/test_api_write_contract.py`)."""
    return [
        (method, path, op)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if path.startswith("/data/")
    ]


def schema_ref(response: dict[str, Any]) -> str:
    return response["content"]["application/json"]["schema"]["$ref"]


def test_every_success_is_a_component_model(document):
    schemas = document["components"]["schemas"]
    for method, path, op in operations(document):
        success = {code: response for code, response in op["responses"].items() if code.startswith("2")}
        assert list(success) == (["202"] if path == REPLAY else ["200"]), (method, path)
        [response] = success.values()
        name = schema_ref(response).removeprefix(COMPONENTS)
        assert name in schemas and name != "ErrorResponse", (method, path)
        assert schemas[name]["type"] == "object" and schemas[name]["properties"], name
    # Lists are `{data, _meta}` with their item model.
    deals = schemas["PartnerDealList"]
    assert set(deals["required"]) == {"data", "_meta"}
    assert deals["properties"]["data"]["items"]["$ref"] == COMPONENTS + "PartnerDealResponse"
    assert deals["properties"]["_meta"]["$ref"] == COMPONENTS + "PageMeta"


def test_errors_are_declared_with_the_error_schema_and_no_validation_422(document):
    schemas = document["components"]["schemas"]
    assert schemas["ErrorResponse"]["required"] == ["error"]
    assert {"HTTPValidationError", "ValidationError", "ResponseValidationError"}.isdisjoint(schemas)
    for method, path, op in operations(document):
        errors = {int(code): response for code, response in op["responses"].items() if not code.startswith("2")}
        assert set(errors) == EXPECTED_ERRORS[kind(path)], (method, path)
        for code, response in errors.items():
            assert schema_ref(response) == COMPONENTS + "ErrorResponse", (method, path, code)
            assert response["description"], (method, path, code)
        assert "Retry-After" in errors[429]["headers"]
        assert 422 not in errors or path == REPLAY  # only the replay's own (payload too large) 422


def test_every_reference_in_the_document_resolves(document):
    refs: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    names = {ref.removeprefix(COMPONENTS) for ref in refs}
    assert all(ref.startswith(COMPONENTS) for ref in refs)
    assert names == set(document["components"]["schemas"])  # every one resolves, none is unused
