"""The write routes (/sell, /leads) answer what docs/openapi.json declares, and it declares them fully.

For each route: its success model and request body model, its security (a bearer token, or GET
/sell's three inline formats), and every error it is made to answer here is declared with the
`ErrorResponse` model, whose body it conforms to.
"""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import jwt
import pytest
from pydantic import BaseModel

from distiller.api import leads as lead_models
from distiller.api import models, routes
from distiller.api import sell as sell_models
from distiller.api.inline_auth import sign_query
from distiller.api.rate_limit import RateLimit
from distiller.api.routes import ApiLimits, openapi_document
from distiller_tools.local.api_server import api_gateway_event, build_runtime
from distiller_tools.local.pipeline import LocalContext
from distiller_tools.world import in_memory_database, load_partners
from tests.integration.test_sample_events import EVENTS
from tests.unit.test_api_models import COMPONENTS, conforms

PARTNER, INACTIVE = "bayside-auto", "oldroad-motors"
SELL, LEADS, LEAD = "/sell/{partnerId}", "/leads/{partnerId}", "/leads/{partnerId}/{callerReferenceId}"
SELL_BODY = {"vin": "5YJ3E1EA7KF317000", "year": 2019, "make": "Tesla", "model": "Model 3", "amount": 31000}
LEAD_BODY = {"callerReferenceId": "CRM-1", "organizationId": "663a1f2b4e8c9a001234bcde"}
SUCCESS = {
    ("post", SELL): (201, "SellResponse"),
    ("get", SELL): (302, None),
    ("post", LEADS): (201, "LeadCreated"),
    ("get", LEAD): (200, "LeadResponse"),
}
BODIES = {("post", SELL): "SellRequest", ("post", LEADS): "LeadRequest"}
#: Declared answers not provoked here: a signed URL opened again while its first request is still in
#: progress (`tests/integration/test_api_sell.py` holds a claim open to get it).
UNPROVOKED = {("get", SELL): {409}}


def model_named(name: str) -> type[BaseModel]:
    for module in (models, sell_models, lead_models):
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"no model {name}")


def secret_of(partner_id: str) -> str:
    (record,) = [p for p in load_partners(EVENTS / "partners.json") if p["partnerId"] == partner_id]
    return base64.b64decode(record["sharedSecret"]).decode("utf-8")


def bearer(partner_id: str = PARTNER, signer: str | None = None) -> str:
    now = int(time.time())
    return jwt.encode({"p": partner_id, "iat": now, "exp": now + 300}, secret_of(signer or partner_id), "HS256")


def signed(partner_id: str, **params: str) -> str:
    params = {"v": SELL_BODY["vin"], "ts": str(int(time.time())), **params}
    record = next(p for p in load_partners(EVENTS / "partners.json") if p["partnerId"] == partner_id)
    query = {**params, "sig": sign_query(params, record["sharedSecret"])}
    return "?" + "&".join(f"{k}={v}" for k, v in query.items())


class Api:
    def __init__(self, limits: ApiLimits | None = None, **without: bool) -> None:
        partners = load_partners(EVENTS / "partners.json")
        self.runtime = build_runtime(in_memory_database(partners), partners, io.StringIO(), limits)
        for service in without:
            setattr(self.runtime, service, None)
        routes.use_runtime(self.runtime)

    def call(self, method: str, path: str, body: Any = None, token: str | None = "", **headers: str) -> tuple:
        if token is not None:
            headers["Authorization"] = f"Bearer {token or bearer()}"
        data = json.dumps(body).encode() if body is not None else b""
        event = api_gateway_event(method.upper(), path, {"Content-Type": "application/json", **headers}, data)
        result = routes.app.resolve(event, LocalContext("trigger-distiller-api"))
        answer = {k: v[-1] for k, v in (result.get("multiValueHeaders") or {}).items() if v}
        answer.update(result.get("headers") or {})
        return result["statusCode"], json.loads(result["body"]) if result.get("body") else None, answer


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setattr(routes, "_runtime", None)  # restored after the test
    return Api


def probe(api: type[Api], method: str, path: str) -> dict[int, list[Any]]:
    """Every answer of the route the tests can provoke: status → bodies."""
    answered: dict[int, list[Any]] = {}

    def record(status: int, body: Any, _headers: Any = None) -> None:
        answered.setdefault(status, []).append(body)

    where = path.replace("{partnerId}", PARTNER).replace("{callerReferenceId}", "CRM-1")
    inactive = where.replace(PARTNER, INACTIVE)
    live = api()
    if (method, path) == ("post", SELL):
        record(*live.call("post", where, SELL_BODY))
        record(*live.call("post", where, {**SELL_BODY, "vin": "I0Q"}))
        record(*live.call("post", where, SELL_BODY, token=None))
        record(*live.call("post", inactive, SELL_BODY, token=bearer(INACTIVE)))
        record(*live.call("post", where, SELL_BODY, **{"Idempotency-Key": "k1"}))
        record(*live.call("post", where, {**SELL_BODY, "amount": 1}, **{"Idempotency-Key": "k1"}))  # 409
        record(*api(sell=True).call("post", where, SELL_BODY))
    elif (method, path) == ("get", SELL):
        record(*live.call("get", where + signed(PARTNER, y="2019", m="Tesla", o="Model3"), token=None))
        record(
            *live.call("get", where + signed(PARTNER, y="2019", m="Tesla", o="Model3", r="javascript:x"), token=None)
        )
        record(*live.call("get", where + "?v=" + SELL_BODY["vin"], token=None))
        record(*live.call("get", inactive + signed(INACTIVE, y="2019", m="Tesla", o="Model3"), token=None))
        record(*api(sell=True).call("get", where + signed(PARTNER, y="2019", m="Tesla", o="Model3"), token=None))
    elif (method, path) == ("post", LEADS):
        record(*live.call("post", where, LEAD_BODY))
        record(*live.call("post", where, {**LEAD_BODY, "contact": {"email": 3}}))
        record(*live.call("post", where, LEAD_BODY, token=None))
        record(*live.call("post", where, {**LEAD_BODY, "organizationId": "663a1f2b4e8c9a001234abcd"}))  # not allowed
        record(*live.call("post", where, LEAD_BODY))  # the same reference again: 409
        record(*api(leads=True).call("post", where, LEAD_BODY))
    else:
        live.call("post", LEADS.replace("{partnerId}", PARTNER), LEAD_BODY)
        record(*live.call("get", where))
        record(*live.call("get", where.replace("CRM-1", "x" * 129)))
        record(*live.call("get", where, token=None))
        record(*live.call("get", inactive, token=bearer(INACTIVE)))
        record(*live.call("get", where.replace("CRM-1", "CRM-unknown")))
        record(*api(leads=True).call("get", where))
    limited = api(ApiLimits(RateLimit(1, 3600), RateLimit(1, 3600)))
    for _ in range(2):
        if method == "get" and path == SELL:
            status, body, headers = limited.call("get", where + signed(PARTNER, y="2019", m="A", o="B"), token=None)
        else:
            status, body, headers = limited.call(method, where, LEAD_BODY if path == LEADS else SELL_BODY)
    assert status == 429 and int(headers["Retry-After"]) > 0
    record(status, body)
    return answered


@pytest.fixture(scope="module")
def document():
    return openapi_document()


def test_the_document_holds_exactly_the_write_routes_besides_data(document):
    written = {(m, p) for p, ops in document["paths"].items() for m in ops if not p.startswith("/data/")}
    assert written == set(SUCCESS)


@pytest.mark.parametrize(("method", "path"), list(SUCCESS), ids=[f"{m} {p}" for m, p in SUCCESS])
def test_each_write_route_answers_only_what_it_declares_with_the_declared_models(api, document, method, path):
    operation = document["paths"][path][method]
    declared = {int(code) for code in operation["responses"]}
    status, model = SUCCESS[method, path]

    answered = probe(api, method, path)

    assert set(answered) == declared - UNPROVOKED.get((method, path), set()), answered
    assert status in answered
    for code, bodies in answered.items():
        schema = operation["responses"][str(code)].get("content", {}).get("application/json", {}).get("schema")
        if code == 302:
            assert schema is None and "Location" in operation["responses"]["302"]["headers"]
            continue
        name = schema["$ref"].removeprefix(COMPONENTS)
        assert name == (model if code == status else "ErrorResponse"), (code, name)
        for body in bodies:
            conforms(model_named(name), body)
    assert "Retry-After" in operation["responses"]["429"]["headers"]


@pytest.mark.parametrize(("method", "path"), list(BODIES), ids=[f"{m} {p}" for m, p in BODIES])
def test_write_bodies_are_required_and_described_by_their_request_model(document, method, path):
    body = document["paths"][path][method]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": COMPONENTS + BODIES[method, path]}
    schema = document["components"]["schemas"][BODIES[method, path]]
    assert schema.get("additionalProperties") is False  # unknown fields are refused, and documented so


def test_get_sell_authenticates_inline_and_every_other_route_with_a_bearer_token(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["partnerJwt"] == {**schemes["partnerJwt"], "type": "http", "scheme": "bearer"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if (method, path) == ("get", SELL):
                alternatives = {name for option in operation["security"] for name in option}
                assert {schemes[name]["name"] for name in alternatives} == {"jwt", "v", "sig"}
                parameters = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
                assert parameters >= {"v", "y", "m", "o", "t", "a", "bn", "be", "bl", "sn", "se", "sl", "r", "ro"}
                assert parameters >= {"jwt", "ts", "sig"}
            else:
                assert operation["security"] == [{"partnerJwt": []}], (method, path)
