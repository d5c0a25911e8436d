"""Lead ingestion through the partner API's resolver, in-process, as API Gateway invokes it.

POST /leads/{partnerId} and GET /leads/{partnerId}/{callerReferenceId} over a mongomock database with
the real adapters: `MongoLeadStore` (its unique index is what deduplicates) and `MongoRateLimiter`
(its counters are what every container shares), on a fixed clock.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import types
from dataclasses import dataclass
from typing import Any

import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect

from distiller.adapters.leads import REFERENCE_INDEX, MongoLeadStore
from distiller.adapters.lookups import MongoLookups
from distiller.adapters.rate_limits import MongoRateLimiter
from distiller.api import auth as auth_module
from distiller.api import routes
from distiller.api.auth import AuthSettings, StaticSharedSecrets
from distiller.api.data import PartnerData
from distiller.api.lead_routes import LeadServices
from distiller.api.leads import LEADS_COLLECTION, LeadResponse, LeadStoreUnavailable
from distiller.api.rate_limit import DEFAULT_LEADS_LIMIT, RATE_LIMITS_COLLECTION, RateLimit
from distiller.api.routes import ApiRuntime, openapi_document
from distiller.core.clock import utc_now
from distiller_tools.local.api_server import api_gateway_event
from distiller_tools.local.pipeline import LocalContext
from distiller_tools.world import in_memory_database
from tests.integration.test_api import sample_partners, token
from tests.unit.test_api_auth import MATRIX, NOW, OTHER, PARTNER, STORED, Row, _assert_leaks_nothing
from tests.unit.test_leads import SPEC_EXAMPLE

ORG = "663a1f2b4e8c9a001234abcd"
LEGACY_ORG = "dealer-legacy-7"
NOT_ALLOWED_ORG = "663a1f2b4e8c9a001234ffff"
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class Clock:
    """Epoch seconds for `MongoRateLimiter`, moved by hand: three quarters into the next hour.

    Ahead of the present, because the windows' `expiresAt` follow this clock and mongomock expires them
    by the real one (a window that ended by the real clock would vanish under the test). At a fixed
    point of an hour, so that the waits the tests compute do not depend on when they run.
    """

    def __init__(self) -> None:
        self.now = float((int(time.time()) // 3600 + 1) * 3600 + 2700)

    def __call__(self) -> float:
        return self.now


def partner_records() -> list[dict[str, Any]]:
    """The sample partners with lead allowlists: acme-motors (default limit), carmart (2 per hour),
    bayside-auto (another allowlist), oldroad-motors (inactive)."""
    records = {record["partnerId"]: record for record in sample_partners()}
    records["acme-motors"]["leadOrganizationIds"] = [ORG, LEGACY_ORG]
    records["carmart"]["leadOrganizationIds"] = [{"$oid": ORG}]
    records["carmart"]["leadsRateLimit"] = {"requests": 2, "perSeconds": 3600}
    records["bayside-auto"]["leadOrganizationIds"] = [LEGACY_ORG]
    records["oldroad-motors"]["leadOrganizationIds"] = [ORG]
    return list(records.values())


def runtime_over(database: Any, clock: Clock, default_limit: RateLimit = DEFAULT_LEADS_LIMIT) -> ApiRuntime:
    """One container's runtime: its own store, limiter and partner cache over the shared database."""
    store = MongoLeadStore(database[LEADS_COLLECTION])
    store.ensure_indexes()
    limiter = MongoRateLimiter(database[RATE_LIMITS_COLLECTION], clock=clock)
    limiter.ensure_indexes()
    return ApiRuntime(
        data=PartnerData(database),
        partners=MongoLookups(database).partners,
        secrets=StaticSharedSecrets.from_partner_records(partner_records()),
        auth=AuthSettings(),
        leads=LeadServices(store, limiter, default_limit),
    )


@dataclass
class World:
    database: Any
    clock: Clock
    monkeypatch: pytest.MonkeyPatch

    def use(self, runtime: ApiRuntime) -> ApiRuntime:
        self.monkeypatch.setattr(routes, "_runtime", runtime)  # restored after the test
        return runtime

    def leads(self, **query: Any) -> list[dict[str, Any]]:
        return list(self.database[LEADS_COLLECTION].find(query))


@pytest.fixture
def world(monkeypatch):
    database = in_memory_database(partner_records())
    world = World(database, Clock(), monkeypatch)
    world.use(runtime_over(database, world.clock))
    return world


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def send(
    method: str, path: str, authorization: str | None, body: str | None = None, overrides: dict | None = None
) -> Answer:
    """The request as API Gateway's REST proxy event (`overrides` replaces parts of it), through the resolver."""
    headers = {} if authorization is None else {"Authorization": authorization}
    request = api_gateway_event(method, path, headers, (body or "").encode())
    result = routes.app.resolve({**request, **(overrides or {})}, LocalContext("trigger-distiller-api"))
    answered = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    answered.update({k.lower(): v[-1] for k, v in (result.get("multiValueHeaders") or {}).items() if v})
    return Answer(result["statusCode"], json.loads(result["body"]), answered)


def post(partner: str, lead: dict[str, Any] | str, authorization: str | None = "") -> Answer:
    body = lead if isinstance(lead, str) else json.dumps(lead)
    return send("POST", f"/leads/{partner}", f"Bearer {token(partner)}" if authorization == "" else authorization, body)


def get(partner: str, reference: str, authorization: str | None = "") -> Answer:
    bearer = f"Bearer {token(partner)}" if authorization == "" else authorization
    return send("GET", f"/leads/{partner}/{reference}", bearer)


def lead(reference: str = "LDR-98234", organization: str = ORG, **fields: Any) -> dict[str, Any]:
    return {**SPEC_EXAMPLE, "callerReferenceId": reference, "organizationId": organization, **fields}


def rate_headers(answer: Answer) -> tuple[int, int, int]:
    return tuple(int(answer.headers[name]) for name in RATE_HEADERS)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# POST: created, deduplicated
# --------------------------------------------------------------------------------------------


def test_a_lead_is_created_and_stored(world):
    created = post("acme-motors", lead())

    assert created.status == 201, created.body
    assert set(created.body) == {"leadId", "callerReferenceId", "status", "createdAt"}
    assert created.body["callerReferenceId"] == "LDR-98234" and created.body["status"] == "new"
    assert INSTANT.fullmatch(created.body["createdAt"])
    [stored] = world.leads()
    assert str(stored["_id"]) == created.body["leadId"]
    assert stored["partnerId"] == stored["appSource"] == "acme-motors"
    assert stored["organizationId"] == ObjectId(ORG)
    assert stored["contact"] == SPEC_EXAMPLE["contact"] and stored["vehicle"] == SPEC_EXAMPLE["vehicle"]
    assert stored["listingId"] == SPEC_EXAMPLE["listingId"] and stored["leadCode"] == "CONQUEST"
    assert stored["status"] == "new" and stored["createdAt"] == stored["updatedAt"]
    assert stored["createdAt"].isoformat(timespec="milliseconds").replace("+00:00", "Z") == created.body["createdAt"]
    limit, remaining, reset = rate_headers(created)
    assert (limit, remaining) == (60, 59) and 1 <= reset <= 60


def test_an_organization_id_that_is_no_object_id_is_stored_as_given(world):
    assert post("acme-motors", lead(organization=LEGACY_ORG)).status == 201

    assert world.leads()[0]["organizationId"] == LEGACY_ORG


def test_the_same_reference_again_is_409_naming_the_existing_lead(world):
    first = post("acme-motors", lead())
    again = post("acme-motors", lead(leadCode="SERVICE", organization=LEGACY_ORG))  # another body, same reference

    assert again.status == 409
    assert again.body["leadId"] == first.body["leadId"] and again.body["callerReferenceId"] == "LDR-98234"
    assert "already submitted" in again.body["error"]
    assert rate_headers(again)[:2] == (60, 58)
    [stored] = world.leads()
    assert stored["leadCode"] == "CONQUEST"  # the first lead stands as it was


def test_references_are_per_partner(world):
    acme = post("acme-motors", lead(organization=LEGACY_ORG))
    bayside = post("bayside-auto", lead(organization=LEGACY_ORG))

    assert (acme.status, bayside.status) == (201, 201)
    assert acme.body["leadId"] != bayside.body["leadId"]
    assert len(world.leads(callerReferenceId="LDR-98234")) == 2


class OneAtATime:
    """A collection whose operations run one at a time, each atomic as on a MongoDB server (mongomock
    checks a unique index after inserting, so two concurrent inserts could refuse each other).

    With `threads`, no thread goes past its first operation before every thread has made its own:
    the worst interleaving for a read-then-write, made certain rather than left to the scheduler.
    """

    def __init__(self, collection: Any, threads: int = 1) -> None:
        self._collection = collection
        self._lock = threading.Lock()
        self._first_done = threading.Barrier(threads, timeout=30)  # a safety net, never reached when correct
        self._seen = threading.local()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._collection, name)
        if not callable(attribute):
            return attribute

        def locked(*args: Any, **kwargs: Any) -> Any:
            first, self._seen.before = not getattr(self._seen, "before", False), True
            try:
                with self._lock:
                    return attribute(*args, **kwargs)
            finally:
                if first:
                    self._first_done.wait()

        return locked


def run_together(count: int, work: Any) -> list[Any]:
    start, results, lock = threading.Barrier(count), [], threading.Lock()

    def one() -> None:
        start.wait()
        result = work()
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_duplicates_make_one_lead_and_409s_naming_it(world):
    runtime = routes._runtime
    runtime.leads.store = MongoLeadStore(OneAtATime(world.database[LEADS_COLLECTION], threads=8))
    runtime.leads.limiter = MongoRateLimiter(OneAtATime(world.database[RATE_LIMITS_COLLECTION]), clock=world.clock)
    # The resolver keeps the current event on itself (one request per container, as in Lambda), so the
    # threads send the very same request: only the store's answers can differ.
    body, bearer = json.dumps(lead()), f"Bearer {token('acme-motors')}"

    answers = run_together(8, lambda: send("POST", "/leads/acme-motors", bearer, body))

    assert sorted(a.status for a in answers) == [201] + [409] * 7
    [created] = [a for a in answers if a.status == 201]
    assert {a.body["leadId"] for a in answers} == {created.body["leadId"]}
    assert len(world.leads()) == 1


def test_concurrent_containers_inserting_one_reference_store_one_lead(world):
    collection = OneAtATime(world.database[LEADS_COLLECTION], threads=8)
    containers = [MongoLeadStore(collection) for _ in range(8)]  # one store per container
    documents = iter([{"_id": ObjectId(), "partnerId": "p", "callerReferenceId": "r", "n": n} for n in range(8)])
    pairs = [(store, next(documents)) for store in containers]
    turn = iter(pairs)
    turn_lock = threading.Lock()

    def insert() -> Any:
        with turn_lock:
            store, document = next(turn)
        return store.insert(document)

    outcomes = run_together(8, insert)

    [winner] = [o for o in outcomes if o.created]
    assert all(o.document["_id"] == winner.document["_id"] for o in outcomes)
    assert world.database[LEADS_COLLECTION].count_documents({"callerReferenceId": "r"}) == 1


def test_the_unique_index_on_partner_and_reference_is_what_deduplicates(world):
    index = world.database[LEADS_COLLECTION].index_information()[REFERENCE_INDEX]

    assert index["key"] == [("partnerId", 1), ("callerReferenceId", 1)] and index["unique"] is True


# --------------------------------------------------------------------------------------------
# POST: refused
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("organization", [NOT_ALLOWED_ORG, "dealer-legacy-8", ORG.upper()[:-1] + "E"])
def test_an_organization_off_the_allowlist_is_403_and_counted(world, organization):
    refused = post("acme-motors", lead(organization=organization))

    assert refused.status == 403 and "allowlist" in refused.body["error"]
    assert rate_headers(refused)[:2] == (60, 59)
    assert world.leads() == []


def test_an_allowlisted_object_id_is_matched_whatever_its_case(world):
    assert post("acme-motors", lead(organization=ORG.upper())).status == 201
    assert post("carmart", lead(reference="c-1")).status == 201  # carmart's allowlist holds {"$oid": ORG}


def test_a_partner_without_an_allowlist_may_submit_to_nobody(world):
    assert post("bayside-auto", lead(organization=ORG)).status == 403


def test_an_invalid_body_is_400_naming_each_field_and_counted(world):
    body = lead(extra=1, contact={"email": "nope", "fax": "555"}, vehicle={"year": "2019", "mileage": -1})

    refused = post("acme-motors", body)

    assert refused.status == 400
    assert set(refused.body["fields"]) == {"extra", "contact.email", "contact.fax", "vehicle.year", "vehicle.mileage"}
    assert refused.body["fields"]["contact.fax"] == "unknown field"
    assert rate_headers(refused)[:2] == (60, 59)
    assert world.leads() == []


@pytest.mark.parametrize("body", ["", "{", "[]"])
def test_a_body_that_is_no_json_object_is_400_naming_body(world, body):
    refused = post("acme-motors", body)

    assert refused.status == 400 and list(refused.body["fields"]) == ["body"]


def test_a_base64_encoded_body_is_read_as_json(world):
    encoded = base64.b64encode(json.dumps(lead()).encode()).decode()

    bearer = f"Bearer {token('acme-motors')}"

    created = send("POST", "/leads/acme-motors", bearer, overrides={"body": encoded, "isBase64Encoded": True})

    assert created.status == 201, created.body


def test_an_inactive_partner_is_403_before_anything_is_counted(world):
    inactive = next(r for r in partner_records() if r["partnerId"] == "oldroad-motors")
    bearer = f"Bearer {token('oldroad-motors', secret=base64.b64decode(inactive['sharedSecret']).decode())}"

    for answer in (post("oldroad-motors", lead(), bearer), get("oldroad-motors", "LDR-98234", bearer)):
        assert answer.status == 403 and "inactive" in answer.body["error"]
        assert not set(RATE_HEADERS) & set(answer.headers)
    assert world.leads() == [] and world.database[RATE_LIMITS_COLLECTION].count_documents({}) == 0


def test_without_lead_services_the_routes_answer_503_after_authentication(world):
    routes._runtime.leads = None

    assert post("acme-motors", lead()).status == 503
    assert get("acme-motors", "LDR-98234").status == 503
    assert post("acme-motors", lead(), authorization=None).status == 401


class Unreachable:
    """A collection whose server is gone; the driver's message quotes the document, as it can."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise AutoReconnect(f"connection lost while writing {args!r}")

        return fail


def test_an_unreachable_store_is_503_and_logs_no_lead_data(world, caplog):
    routes._runtime.leads.store = MongoLeadStore(Unreachable())

    with caplog.at_level(logging.WARNING):
        posted, got = post("acme-motors", lead()), get("acme-motors", "LDR-98234")

    assert (posted.status, got.status) == (503, 503)
    assert "try again" in posted.body["error"] and rate_headers(posted)[0] == 60
    assert "AutoReconnect" in caplog.text and "acme-motors" in caplog.text
    assert "jane@example.com" not in caplog.text + json.dumps(posted.body)
    with pytest.raises(LeadStoreUnavailable):
        MongoLeadStore(Unreachable()).find("p", "r")


# --------------------------------------------------------------------------------------------
# The lead allowance
# --------------------------------------------------------------------------------------------


def test_over_the_allowance_is_429_with_retry_after_and_ratelimit_headers(world):
    assert [post("carmart", lead(reference=f"c-{n}")).status for n in range(2)] == [201, 201]

    refused = post("carmart", lead(reference="c-2"))

    assert refused.status == 429 and "rate limit" in refused.body["error"]
    wait = int(refused.headers["retry-after"])
    assert wait > 0
    assert rate_headers(refused) == (2, 0, wait)
    assert len(world.leads(partnerId="carmart")) == 2
    assert post("acme-motors", lead()).status == 201  # each partner has its own allowance
    assert get("carmart", "c-0").status == 200  # a lookup does not spend the lead allowance
    world.clock.now += wait
    assert post("carmart", lead(reference="c-2")).status == 201


def test_the_partner_record_limit_wins_over_the_stack_default(world):
    world.use(runtime_over(world.database, world.clock, default_limit=RateLimit(1, 60)))

    acme = [post("acme-motors", lead(reference=f"a-{n}")) for n in range(2)]
    carmart = post("carmart", lead(reference="c-0"))

    assert [a.status for a in acme] == [201, 429] and rate_headers(acme[0])[:2] == (1, 0)
    assert carmart.status == 201 and rate_headers(carmart)[:2] == (2, 1)


def test_every_authenticated_post_counts_before_its_body_is_read(world):
    assert [post("carmart", "{").status, post("carmart", lead(organization=NOT_ALLOWED_ORG)).status] == [400, 403]

    refused = post("carmart", lead(reference="c-0"))

    assert refused.status == 429 and world.leads() == []


def test_unauthenticated_posts_never_spend_a_partners_allowance(world):
    forged = f"Bearer {token('carmart', secret='not the secret')}"
    answers = [post("carmart", lead(reference=f"f-{n}"), forged) for n in range(5)]

    assert {a.status for a in answers} == {401}
    assert not any(set(RATE_HEADERS) & set(a.headers) for a in answers)
    assert rate_headers(post("carmart", lead(reference="c-0")))[:2] == (2, 1)


def test_the_allowance_is_shared_by_every_container(world):
    container_a = runtime_over(world.database, world.clock)
    container_b = runtime_over(world.database, world.clock)
    assert container_a.leads.limiter is not container_b.leads.limiter

    answers = []
    for n, container in enumerate([container_a, container_b, container_a, container_b]):
        world.use(container)
        answers.append(post("carmart", lead(reference=f"c-{n}")))

    assert [a.status for a in answers] == [201, 201, 429, 429]
    assert [rate_headers(a)[1] for a in answers] == [1, 0, 0, 0]
    assert len(world.leads()) == 2


# --------------------------------------------------------------------------------------------
# GET
# --------------------------------------------------------------------------------------------


def test_a_lead_is_found_by_its_reference(world):
    created = post("acme-motors", lead(reference="CRM 42/ä"))

    found = get("acme-motors", "CRM%2042%2F%C3%A4")

    assert found.status == 200, found.body
    assert found.body == {
        **created.body,
        "organizationId": ORG,
        "leadCode": "CONQUEST",
        "updatedAt": created.body["createdAt"],
    }
    assert LeadResponse.model_validate(found.body).model_dump() == found.body
    assert not set(RATE_HEADERS) & set(found.headers)


def test_another_partners_reference_is_not_found_like_an_unknown_one(world):
    assert post("acme-motors", lead(organization=LEGACY_ORG)).status == 201

    others = get("bayside-auto", "LDR-98234")
    unknown = get("acme-motors", "LDR-00000")

    assert (others.status, unknown.status) == (404, 404)
    assert others.body == unknown.body == {"error": "lead not found"}


@pytest.mark.parametrize(
    ("reference", "reason"),
    [("x" * 129, "at most 128"), ("LDR%0A1", "printable"), ("%20LDR", "whitespace")],
)
def test_a_bad_path_reference_is_400_naming_it(world, reference, reason):
    refused = get("acme-motors", reference)

    assert refused.status == 400 and list(refused.body["fields"]) == ["callerReferenceId"]
    assert reason in refused.body["fields"]["callerReferenceId"]


# --------------------------------------------------------------------------------------------
# Authentication: the JWT matrix of tests/unit/test_api_auth.py on both routes
# --------------------------------------------------------------------------------------------


def matrix_world(monkeypatch: pytest.MonkeyPatch, row: Row) -> Any:
    """PARTNER of the auth matrix with a lead allowlist, verified at the matrix's NOW."""
    monkeypatch.setattr(auth_module, "time", types.SimpleNamespace(time=lambda: NOW))
    database = in_memory_database([{"partnerId": PARTNER, "leadOrganizationIds": [ORG]}, {"partnerId": OTHER}])
    runtime = runtime_over(database, Clock())
    runtime.secrets = StaticSharedSecrets({PARTNER: STORED} if row.secret else {})
    runtime.auth = row.auth
    monkeypatch.setattr(routes, "_runtime", runtime)
    return database


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("row", MATRIX, ids=[row.id for row in MATRIX])
def test_the_jwt_matrix_holds_on_the_lead_routes(monkeypatch, row, method):
    database = matrix_world(monkeypatch, row)
    if method == "GET":
        runtime = routes._runtime
        runtime.leads.store.insert(
            {
                "_id": ObjectId(),
                "partnerId": PARTNER,
                "callerReferenceId": "r-1",
                "organizationId": ORG,
                "status": "new",
                "createdAt": utc_now(),
            }
        )
    authorization = row.authorization()
    path = f"/leads/{PARTNER}" if method == "POST" else f"/leads/{PARTNER}/r-1"

    answer = send(method, path, authorization, json.dumps(lead(reference="r-2")) if method == "POST" else None)

    if row.status is None:
        assert answer.status == (201 if method == "POST" else 200), answer.body
        return
    assert answer.status == row.status and row.keyword.lower() in answer.body["error"].lower(), answer.body
    _assert_leaks_nothing(json.dumps(answer.body), authorization)
    assert not set(RATE_HEADERS) & set(answer.headers)
    assert database[LEADS_COLLECTION].count_documents({"callerReferenceId": "r-2"}) == 0
    assert database[RATE_LIMITS_COLLECTION].count_documents({}) == 0


# --------------------------------------------------------------------------------------------
# The OpenAPI document
# --------------------------------------------------------------------------------------------


def test_the_document_describes_both_routes():
    document = openapi_document()
    submit = document["paths"]["/leads/{partnerId}"]["post"]
    lookup = document["paths"]["/leads/{partnerId}/{callerReferenceId}"]["get"]
    schemas = document["components"]["schemas"]

    body_refs = json.dumps(submit["requestBody"])
    assert "#/components/schemas/LeadRequest" in body_refs
    assert schemas["LeadRequest"]["additionalProperties"] is False
    assert set(submit["responses"]) == {"201", "400", "401", "403", "409", "429", "503"}
    assert submit["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/LeadCreated")
    for code in ("201", "400", "403", "409", "429", "503"):
        assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(
            submit["responses"][code]["headers"]
        )
    assert "Retry-After" in submit["responses"]["429"]["headers"]
    assert set(lookup["responses"]) == {"200", "400", "401", "403", "404", "429", "503"}
    assert lookup["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/LeadResponse")
    [reference] = [p for p in lookup["parameters"] if p["name"] == "callerReferenceId"]
    assert reference["schema"]["maxLength"] == 128 and reference["schema"]["minLength"] == 1
