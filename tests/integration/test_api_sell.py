"""POST and GET /sell/{partnerId} (DealNow initiation) through the API's resolver, in process.

The database is mongomock (the sample world and partners, bayside-auto with its organisation user),
SES is moto's: every email is read back from moto's backend. The listing and offer a request writes
are distilled by the real pipeline into the partner's `listing.created` and `offer.created`.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import boto3
import mongomock
import pytest
from bson import ObjectId
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

import distiller.api.auth as auth_module
from distiller.adapters.dealnow import MongoDealStore
from distiller.adapters.idempotency import IDEMPOTENCY_COLLECTION, MongoIdempotencyStore
from distiller.adapters.lookups import MongoLookups
from distiller.adapters.mailer import SesMailer
from distiller.api.errors import ApiError
from distiller.api.inline_auth import canonical_query, sign_query
from distiller.api.rate_limit import RateLimit
from distiller.api.routes import ApiLimits, app, use_runtime
from distiller.api.sell import StoreUnavailable, fingerprint, validate_sell
from distiller.api.sell_routes import IdempotencyClaim, SellServices, initiate
from distiller.core.model import ChangeEvent
from distiller.core.partners import partner_from_record
from distiller.core.pipeline import deliveries_of, distill
from distiller_tools.local.api_server import api_gateway_event, build_runtime
from distiller_tools.local.pipeline import LocalContext
from distiller_tools.world import in_memory_database, load_world
from tests.integration.test_api import EVENTS, SECRETS, sample_partners, token
from tests.integration.test_api_limits import CountingSecrets
from tests.unit import test_api_auth as matrix

REGION = "us-east-2"
SENDER = "deals@dealnow.example"
BAYSIDE, CARMART, ACME, INACTIVE = "bayside-auto", "carmart", "acme-motors", "oldroad-motors"
BAYSIDE_ORG, BAYSIDE_USER = "663a1f2b4e8c9a001234bcde", "6614a0c1e4b0a10000000b01"
NEW_VIN = "5YJ3E1EA7KF317000"
LISTED_VIN, LISTED_ID, LISTED_SELLER = "1HGBH41JXMN109186", "66240a11c3d9e40000000001", "6614a0c1e4b0a10000000c01"
SOLD_VIN = "2T3P1RFV8MW123456"
VEHICLE = {"year": 2019, "make": "Tesla", "model": "Model 3", "trim": "Long Range"}


class FrozenClock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Api:
    database: Any
    runtime: Any
    services: SellServices
    clock: FrozenClock
    partners: list[dict[str, Any]]

    def post(
        self, partner: str, body: Any, *, tok: str | None = "", key: str | None = None, raw: str | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {"Content-Type": "application/json"}
        if tok is not None:
            headers["Authorization"] = f"Bearer {tok or token(partner)}"
        if key is not None:
            headers["Idempotency-Key"] = key
        data = (raw if raw is not None else json.dumps(body)).encode()
        return answer(app.resolve(api_gateway_event("POST", f"/sell/{partner}", headers, data), CONTEXT))

    def get(self, partner: str, query: str) -> tuple[int, Any, dict[str, str]]:
        event = api_gateway_event("GET", f"/sell/{partner}?{query}", {}, b"")
        return answer(app.resolve(event, CONTEXT))

    def count(self, collection: str, query: dict[str, Any] | None = None) -> int:
        return self.database[collection].count_documents(query or {})

    def reserved(self, partner: str) -> int:
        """DealNow offers of the partner (the sample world holds accepted offers of its own)."""
        return self.count("offers", {"appSource": partner, "status": "dealNowPending"})

    def offer(self, deal_id: str) -> dict[str, Any]:
        [offer] = self.database["offers"].find({"dealId": ObjectId(deal_id)})
        return offer

    def secret(self, partner: str) -> str:
        return next(p["sharedSecret"] for p in self.partners if p["partnerId"] == partner)


CONTEXT = LocalContext("trigger-distiller-api")


def answer(result: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    headers = {k: v[-1] for k, v in (result.get("multiValueHeaders") or {}).items() if v}
    headers.update(result.get("headers") or {})
    body = result.get("body") or ""
    return result["statusCode"], json.loads(body) if body else None, headers


def sent_messages() -> list[Any]:
    return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)


@pytest.fixture
def api() -> Iterator[Api]:
    partners = sample_partners()
    for record in partners:
        if record["partnerId"] == BAYSIDE:
            record["organizationUserId"] = BAYSIDE_USER
    with mock_aws():
        ses = boto3.client("sesv2", region_name=REGION)
        ses.create_email_identity(EmailIdentity=SENDER)
        database = in_memory_database(partners, load_world(EVENTS / "world.json"))
        runtime = build_runtime(database, partners, io.StringIO())
        runtime.secrets = CountingSecrets({p["partnerId"]: p["sharedSecret"] for p in partners})
        clock = FrozenClock()
        idempotency = MongoIdempotencyStore(database[IDEMPOTENCY_COLLECTION])
        idempotency.ensure_indexes()
        services = SellServices(
            deals=MongoDealStore(database),
            idempotency=idempotency,
            dealnow_domain="dealnow.com",
            app_domain="privateauto.com",
            mailer=SesMailer(ses, SENDER),
            clock=clock,
        )
        runtime.sell = services
        use_runtime(runtime)
        yield Api(database, runtime, services, clock, partners)


def new_vehicle(**extra: Any) -> dict[str, Any]:
    return {"vin": NEW_VIN, **VEHICLE, "amount": 18500, **extra}


def assert_app_link(link: str, domain: str, guid: str, role: str) -> None:
    parts = urlsplit(link)
    assert (parts.scheme, parts.hostname) == ("https", f"app.{domain}")
    assert parts.hostname != domain  # never the apex
    assert guid in parts.path and parse_qs(parts.query) == {"role": [role]}


# -- POST: what a deal reservation writes and answers ----------------------------------------------------


def test_post_reserves_a_deal_on_a_stub_listing_with_the_partner_org_on_the_buyer_side(api):
    status, body, _ = api.post(BAYSIDE, new_vehicle())

    assert status == 201, body
    assert set(body) == {"dealId", "guid", "buyerLink", "sellerLink"}
    assert ObjectId.is_valid(body["dealId"]) and uuid.UUID(body["guid"]).version == 4
    assert_app_link(body["buyerLink"], "dealnow.com", body["guid"], "buyer")  # bayside: linkPlatform default
    assert_app_link(body["sellerLink"], "dealnow.com", body["guid"], "seller")
    [listing] = api.database["seller_listings"].find({"vehicle.vin": NEW_VIN})
    assert listing["status"] == "draft" and listing["appSource"] == BAYSIDE
    assert listing["vehicle"] == {**VEHICLE, "vin": NEW_VIN} and listing["price"] == 18500
    offer = api.offer(body["dealId"])
    assert offer["guid"] == body["guid"] and offer["status"] == "dealNowPending"
    assert offer["listingId"] == listing["_id"] and offer["appSource"] == BAYSIDE and offer["price"] == 18500
    assert offer["offeredByUserId"] == ObjectId(BAYSIDE_USER)
    assert offer["offeredByOrganizationId"] == ObjectId(BAYSIDE_ORG)
    assert offer["createdAt"] == api.clock.now.replace(tzinfo=offer["createdAt"].tzinfo)


def test_the_written_documents_distill_into_listing_created_and_offer_created_for_the_partner(api):
    _, body, _ = api.post(BAYSIDE, new_vehicle())
    listing = api.database["seller_listings"].find_one({"vehicle.vin": NEW_VIN})
    offer = api.offer(body["dealId"])
    changes = [
        ChangeEvent(f"token-{i}", "insert", collection, document["_id"], full_document=document)
        for i, (collection, document) in enumerate([("seller_listings", listing), ("offers", offer)])
    ]

    deliveries = deliveries_of(distill(changes, MongoLookups(api.database)))

    assert [(d.partner_id, d.event) for d in deliveries] == [(BAYSIDE, "listing.created"), (BAYSIDE, "offer.created")]
    listing_payload, offer_payload = (d.payload for d in deliveries)
    assert listing_payload["vin"] == NEW_VIN and listing_payload["status"] == "draft"
    assert offer_payload["guid"] == body["guid"] and offer_payload["status"] == "dealNowPending"
    assert offer_payload["listingId"] == str(listing["_id"]) and offer_payload["buyerId"] == BAYSIDE_USER


@pytest.mark.parametrize(
    ("partner", "domain", "events"),
    [
        # appSource scope, no organisation: both events through appSource.
        (CARMART, "dealnow.com", ["listing.created", "offer.created"]),
        # organization scope: the offer carries the partner's organisation; the stub listing has no
        # owner in it (the seller is a consumer), so it is not this partner's listing event.
        (ACME, "privateauto.com", ["offer.created"]),
    ],
)
def test_each_partner_gets_its_platforms_links_and_the_events_its_scope_allows(api, partner, domain, events):
    status, body, _ = api.post(partner, new_vehicle())
    assert status == 201, body
    assert_app_link(body["buyerLink"], domain, body["guid"], "buyer")
    assert_app_link(body["sellerLink"], domain, body["guid"], "seller")
    listing = api.database["seller_listings"].find_one({"vehicle.vin": NEW_VIN})
    offer = api.offer(body["dealId"])

    changes = [
        ChangeEvent("t1", "insert", "seller_listings", listing["_id"], full_document=listing),
        ChangeEvent("t2", "insert", "offers", offer["_id"], full_document=offer),
    ]
    deliveries = deliveries_of(distill(changes, MongoLookups(api.database)))

    assert [d.event for d in deliveries if d.partner_id == partner] == events


def test_a_vin_already_listed_gets_its_listing_and_its_seller_and_needs_no_vehicle(api):
    listings_before = api.count("seller_listings")

    status, body, _ = api.post(CARMART, {"vin": LISTED_VIN.lower(), "amount": 18000})

    assert status == 201, body
    assert api.count("seller_listings") == listings_before  # no stub
    offer = api.offer(body["dealId"])
    assert offer["listingId"] == ObjectId(LISTED_ID) and offer["offeredToUserId"] == ObjectId(LISTED_SELLER)


def test_the_newest_live_listing_of_the_vin_is_used_and_sold_or_deleted_ones_are_not(api):
    older, newer, deleted = ObjectId(), ObjectId(), ObjectId()
    base = {"vehicle": {"vin": NEW_VIN, **VEHICLE}, "status": "live"}
    api.database["seller_listings"].insert_many(
        [
            {**base, "_id": older, "createdAt": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
            {**base, "_id": newer, "createdAt": dt.datetime(2026, 2, 1, tzinfo=dt.UTC)},
            {**base, "_id": deleted, "createdAt": dt.datetime(2026, 3, 1, tzinfo=dt.UTC), "deleted": True},
        ]
    )

    _, body, _ = api.post(CARMART, {"vin": NEW_VIN})
    assert api.offer(body["dealId"])["listingId"] == newer

    # The world's RAV4 listing is sold: it is no longer the vehicle's listing, so a stub is needed.
    status, refused, _ = api.post(CARMART, {"vin": SOLD_VIN})
    assert status == 400 and set(refused["fields"]) == {"year", "make", "model"}
    assert "no listing" in refused["fields"]["year"]
    status, body, _ = api.post(CARMART, {"vin": SOLD_VIN, **VEHICLE})
    assert status == 201
    assert api.database["seller_listings"].count_documents({"vehicle.vin": SOLD_VIN, "status": "draft"}) == 1


@pytest.mark.parametrize(
    ("body", "raw", "fields"),
    [
        ({"vin": NEW_VIN, **VEHICLE, "year": "2019"}, None, {"year"}),
        ({"vin": NEW_VIN[:10], **VEHICLE}, None, {"vin"}),
        ({"vin": "5YJ3E1EA7KF31700O", **VEHICLE}, None, {"vin"}),
        ({**VEHICLE}, None, {"vin"}),
        (
            {"vin": NEW_VIN, **VEHICLE, "redirectUrl": "https://x.example", "role": "buyer"},
            None,
            {"redirectUrl", "role"},
        ),
        ({"vin": NEW_VIN, **VEHICLE, "foo": 1}, None, {"foo"}),
        ({"vin": NEW_VIN, **VEHICLE, "amount": -1}, None, {"amount"}),
        ({"vin": NEW_VIN, **VEHICLE, "buyerSendLink": True}, None, {"buyerEmail"}),
        ({"vin": NEW_VIN, **VEHICLE, "sellerSendLink": "true", "sellerEmail": "j@x.co"}, None, {"sellerSendLink"}),
        ({"vin": NEW_VIN, "year": 2019}, None, {"make", "model"}),
        (None, "{not json", {"body"}),
        (None, '["vin"]', {"body"}),
        (None, "", {"body"}),
    ],
)
def test_a_refused_body_is_400_naming_each_field_and_writes_nothing(api, body, raw, fields):
    before = (api.count("seller_listings"), api.count("offers"))

    status, answer_body, _ = api.post(CARMART, body, raw=raw)

    assert status == 400
    assert set(answer_body) == {"error", "fields"} and set(answer_body["fields"]) == fields
    assert all(name in answer_body["error"] for name in fields)
    assert (api.count("seller_listings"), api.count("offers")) == before
    assert sent_messages() == []


def test_without_sell_services_the_routes_answer_503(api):
    api.runtime.sell = None

    status, body, _ = api.post(CARMART, new_vehicle())

    assert status == 503 and "not available" in body["error"]


class FailingDeals:
    def find_listing(self, vin: str) -> None:
        raise StoreUnavailable()


def test_a_database_failure_is_503_not_500(api):
    api.services.deals = FailingDeals()  # type: ignore[assignment]

    status, body, _ = api.post(CARMART, new_vehicle())

    assert status == 503 and body == {"error": "the database is unavailable; try again"}


# -- POST: authentication, as /data -------------------------------------------------------------------------


def test_post_authenticates_like_data(api):
    inactive_secret = base64.b64decode(api.secret(INACTIVE)).decode()
    other = token(CARMART, SECRETS[BAYSIDE])  # signed with bayside's secret, for carmart

    assert api.post(BAYSIDE, new_vehicle(), tok=None)[:2] == (401, {"error": "missing bearer token"})
    assert api.post(BAYSIDE, new_vehicle(), tok=token(CARMART))[:2] == (401, {"error": "invalid signature"})
    assert api.post(BAYSIDE, new_vehicle(), tok=other)[:2] == (403, {"error": "token is for another partner"})
    assert api.post(INACTIVE, new_vehicle(), tok=token(INACTIVE, inactive_secret))[:2] == (
        403,
        {"error": "partner is inactive"},
    )
    api.runtime.secrets.asked.clear()
    assert api.post("nobody", new_vehicle(), tok=token("nobody", "whatever"))[:2] == (
        401,
        {"error": "invalid signature"},
    )
    assert "nobody" not in api.runtime.secrets.asked  # no secret lookup for an unknown partner
    assert api.count("seller_listings", {"vehicle.vin": NEW_VIN}) == 0
    assert api.count("offers", {"status": "dealNowPending"}) == 0


@pytest.fixture(scope="module")
def matrix_runtime():
    """One runtime for every matrix row (each row sets the partner, its secret and the auth settings)."""
    database = mongomock.MongoClient(tz_aware=True)["privateauto"]
    runtime = build_runtime(database, [], io.StringIO())
    runtime.sell = SellServices(
        MongoDealStore(database), MongoIdempotencyStore(database[IDEMPOTENCY_COLLECTION]), "dealnow.com", "app.com"
    )
    return runtime, database


@pytest.mark.parametrize("row", matrix.MATRIX, ids=[row.id for row in matrix.MATRIX])
def test_the_jwt_attack_matrix_holds_for_post_sell(matrix_runtime, monkeypatch, row):
    runtime, database = matrix_runtime
    use_runtime(runtime)
    monkeypatch.setattr(auth_module, "time", SimpleNamespace(time=lambda: matrix.NOW))
    record = {"partnerId": matrix.PARTNER, "webhookScope": "appSource"}
    known = row.secret is not None
    runtime.partners = lambda: [partner_from_record(record)] if known else []
    runtime.secrets = CountingSecrets({matrix.PARTNER: row.secret} if known else {})
    runtime.auth = row.auth
    authorization = row.authorization()
    headers = {"Content-Type": "application/json"} | ({"Authorization": authorization} if authorization else {})
    event = api_gateway_event("POST", f"/sell/{matrix.PARTNER}", headers, json.dumps(new_vehicle()).encode())
    offers = database["offers"].count_documents({})

    status, body, _ = answer(app.resolve(event, CONTEXT))

    if row.status is None:
        assert status == 201, body
        assert database["offers"].count_documents({}) == offers + 1
        return
    assert status == row.status and row.keyword.lower() in body["error"].lower(), body
    assert set(body) == {"error"}
    matrix._assert_leaks_nothing(body["error"], authorization)
    assert database["offers"].count_documents({}) == offers


def test_post_counts_against_the_partners_general_allowance(api):
    api.runtime.limits = ApiLimits(RateLimit(2, 60), RateLimit(1, 60))

    statuses = [api.post(CARMART, new_vehicle())[0] for _ in range(3)]

    assert statuses == [201, 201, 429]
    assert api.reserved(CARMART) == 2


# -- POST: emails -------------------------------------------------------------------------------------------


def test_each_link_is_emailed_only_to_its_own_party(api):
    status, body, _ = api.post(
        BAYSIDE,
        new_vehicle(
            buyerName="Jane Buyer",
            buyerEmail="jane@example.com",
            buyerSendLink=True,
            sellerName="John Seller",
            sellerEmail="john@example.com",
            sellerSendLink=True,
        ),
    )

    assert status == 201 and "emailErrors" not in body
    by_recipient = {m.destinations["ToAddresses"][0]: m for m in sent_messages()}
    assert set(by_recipient) == {"jane@example.com", "john@example.com"}
    for recipient, link, other, name in (
        ("jane@example.com", body["buyerLink"], body["sellerLink"], "Jane Buyer"),
        ("john@example.com", body["sellerLink"], body["buyerLink"], "John Seller"),
    ):
        message = by_recipient[recipient]
        assert message.source == SENDER and message.destinations["ToAddresses"] == [recipient]
        assert message.subject == "DealNow: your deal link for the 2019 Tesla Model 3 Long Range"
        assert link in message.body and other not in message.body and name in message.body


def test_an_email_is_sent_only_when_asked_for(api):
    status, body, _ = api.post(
        BAYSIDE, new_vehicle(buyerEmail="jane@example.com", sellerEmail="john@example.com", sellerSendLink=True)
    )

    assert status == 201
    [message] = sent_messages()
    assert message.destinations["ToAddresses"] == ["john@example.com"] and body["sellerLink"] in message.body


def test_asking_for_an_email_without_a_mailer_is_503_before_anything_is_written(api):
    api.services.mailer = None
    before = (api.count("seller_listings"), api.count("offers"))

    status, body, _ = api.post(BAYSIDE, new_vehicle(buyerEmail="jane@example.com", buyerSendLink=True))

    assert (status, body) == (503, {"error": "email sending is not configured"})
    assert (api.count("seller_listings"), api.count("offers")) == before
    assert api.post(BAYSIDE, new_vehicle(buyerEmail="jane@example.com"))[0] == 201  # no email asked: fine


def test_an_ses_failure_after_the_writes_still_answers_the_deal_with_email_errors(api, caplog):
    api.services.mailer = SesMailer(boto3.client("sesv2", region_name=REGION), "unverified@nowhere.example")

    status, body, _ = api.post(
        BAYSIDE, new_vehicle(buyerEmail="jane@example.com", buyerSendLink=True, sellerEmail="john@example.com")
    )

    assert status == 201
    assert body["emailErrors"] == {"buyerEmail": "the link could not be emailed; share buyerLink yourself"}
    assert api.offer(body["dealId"])["guid"] == body["guid"]  # the deal is not lost
    assert sent_messages() == []
    assert "jane@example.com" not in caplog.text and "MessageRejected" in caplog.text


# -- POST: Idempotency-Key ----------------------------------------------------------------------------------


def test_the_same_key_and_body_answer_the_same_deal_once(api):
    first = api.post(BAYSIDE, new_vehicle(sellerEmail="john@example.com", sellerSendLink=True), key="order-1")
    again = api.post(BAYSIDE, new_vehicle(sellerEmail="john@example.com", sellerSendLink=True), key="order-1")

    assert first[0] == again[0] == 201 and first[1] == again[1]
    assert "Idempotent-Replayed" not in first[2] and again[2]["Idempotent-Replayed"] == "true"
    assert api.reserved(BAYSIDE) == 1
    assert api.count("seller_listings", {"vehicle.vin": NEW_VIN}) == 1
    assert len(sent_messages()) == 1  # the replay sends nothing
    # Another key, or none, is another deal.
    assert api.post(BAYSIDE, new_vehicle(), key="order-2")[1]["dealId"] != first[1]["dealId"]


def test_the_key_is_stored_with_the_body_hash_the_answer_and_a_ttl(api):
    body = new_vehicle()
    _, answer_body, _ = api.post(BAYSIDE, body, key="order-1")

    [stored] = api.database[IDEMPOTENCY_COLLECTION].find()
    assert stored["_id"] == f"{BAYSIDE}\nkey\norder-1"
    assert stored["fingerprint"] == fingerprint(body) and stored["response"] == answer_body
    assert stored["expiresAt"] == api.clock.now + dt.timedelta(hours=24)
    ttl = api.database[IDEMPOTENCY_COLLECTION].index_information()["ttl_expires_at"]
    assert ttl["key"] == [("expiresAt", 1)] and ttl["expireAfterSeconds"] == 0


def test_the_same_key_with_another_body_is_409(api):
    api.post(BAYSIDE, new_vehicle(amount=18500), key="order-1")

    status, body, _ = api.post(BAYSIDE, new_vehicle(amount=19000), key="order-1")

    assert status == 409 and "different request body" in body["error"]
    assert api.reserved(BAYSIDE) == 1


def test_keys_are_per_partner(api):
    ours = api.post(BAYSIDE, new_vehicle(), key="shared")[1]
    theirs = api.post(CARMART, new_vehicle(), key="shared")[1]

    assert ours["dealId"] != theirs["dealId"]


@pytest.mark.parametrize("key", ["", "x" * 256, "clé", "tab\there"])
def test_a_malformed_key_is_400_naming_the_header(api, key):
    status, body, _ = api.post(BAYSIDE, new_vehicle(), key=key)

    assert status == 400 and set(body["fields"]) == {"Idempotency-Key"}
    assert api.reserved(BAYSIDE) == 0


def test_a_key_of_255_printable_characters_is_accepted(api):
    assert api.post(BAYSIDE, new_vehicle(), key="k" * 254 + "~")[0] == 201


class FlakyDeals:
    """The real store, failing its first offer insert."""

    def __init__(self, inner: MongoDealStore) -> None:
        self.inner, self.failures = inner, 1

    def find_listing(self, vin: str) -> dict[str, Any] | None:
        return self.inner.find_listing(vin)

    def insert_stub(self, listing: dict[str, Any]) -> dict[str, Any]:
        return self.inner.insert_stub(listing)

    def insert_offer(self, offer: dict[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable()
        self.inner.insert_offer(offer)


def test_a_failed_request_releases_its_key_so_a_retry_proceeds(api):
    api.services.deals = FlakyDeals(MongoDealStore(api.database))  # type: ignore[assignment]

    failed = api.post(BAYSIDE, new_vehicle(), key="order-1")
    retried = api.post(BAYSIDE, new_vehicle(), key="order-1")

    assert failed[0] == 503 and retried[0] == 201
    assert api.count("seller_listings", {"vehicle.vin": NEW_VIN}) == 1  # the retry reused the stub
    assert api.offer(retried[1]["dealId"])["appSource"] == BAYSIDE


def test_a_lapsed_unfinished_claim_is_taken_over(api):
    # A request that died mid-way left its claim; its lease is over (the TTL monitor may lag).
    key = f"{BAYSIDE}\nkey\norder-1"
    stale = api.clock.now - dt.timedelta(seconds=1)
    api.database[IDEMPOTENCY_COLLECTION].insert_one(
        {"_id": key, "fingerprint": fingerprint(new_vehicle()), "state": "in_progress", "expiresAt": stale}
    )
    api.services.idempotency = MongoIdempotencyStore(api.database[IDEMPOTENCY_COLLECTION], clock=api.clock)

    status, body, _ = api.post(BAYSIDE, new_vehicle(), key="order-1")

    assert status == 201
    assert api.database[IDEMPOTENCY_COLLECTION].find_one({"_id": key})["response"] == body


class GatedDeals:
    """The real store, holding each caller in `find_listing` until the gate opens."""

    def __init__(self, inner: MongoDealStore) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.gate = threading.Event()

    def find_listing(self, vin: str) -> dict[str, Any] | None:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return self.inner.find_listing(vin)

    def insert_stub(self, listing: dict[str, Any]) -> dict[str, Any]:
        return self.inner.insert_stub(listing)

    def insert_offer(self, offer: dict[str, Any]) -> None:
        self.inner.insert_offer(offer)


def test_the_same_key_while_the_first_request_is_in_progress_is_409(api):
    deals = GatedDeals(MongoDealStore(api.database))
    api.services.deals = deals  # type: ignore[assignment]
    first: queue.Queue = queue.Queue()
    # Both requests are the very same event, so the resolver's shared current event cannot mix them up.
    worker = threading.Thread(target=lambda: first.put(api.post(BAYSIDE, new_vehicle(), key="order-1")))
    worker.start()
    assert deals.entered.wait(30)

    status, body, headers = api.post(BAYSIDE, new_vehicle(), key="order-1")
    deals.gate.set()
    worker.join(30)

    assert status == 409 and "in progress" in body["error"] and headers["Retry-After"] == "1"
    created = first.get(timeout=30)
    assert created[0] == 201
    assert api.post(BAYSIDE, new_vehicle(), key="order-1")[1] == created[1]
    assert api.reserved(BAYSIDE) == 1


@pytest.fixture
def atomic_inserts(monkeypatch):
    """MongoDB checks `_id` uniqueness atomically; mongomock checks, then stores. Serialised here as the
    server does, so that racing claims are decided by the store and never by luck."""
    lock = threading.Lock()
    insert = mongomock.collection.Collection._insert

    def serialised(self, *args, **kwargs):
        with lock:
            return insert(self, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "_insert", serialised)


class RacingCollection:
    """The idempotency collection, holding every claim until all racers have made theirs, so that they
    reach the database together (a store that read before it claimed would see no claim, every time)."""

    def __init__(self, inner: Any, racers: int) -> None:
        self.inner = inner
        self.together = threading.Barrier(racers)

    def insert_one(self, document: dict[str, Any]) -> Any:
        self.together.wait(30)
        return self.inner.insert_one(document)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_concurrent_requests_with_one_key_reserve_one_deal(api, atomic_inserts):
    partner = next(p for p in api.runtime.partners() if p.partner_id == BAYSIDE)
    request = validate_sell(new_vehicle())
    claim = IdempotencyClaim(f"{BAYSIDE}\nkey\nrace", fingerprint(new_vehicle()), api.clock.now + dt.timedelta(days=1))
    racers = 8
    collection = api.database[IDEMPOTENCY_COLLECTION]
    api.services.idempotency = MongoIdempotencyStore(RacingCollection(collection, racers))  # type: ignore[arg-type]
    deals = GatedDeals(MongoDealStore(api.database))
    api.services.deals = deals  # type: ignore[assignment]
    outcomes: queue.Queue = queue.Queue()

    def race() -> None:
        try:
            outcomes.put(initiate(api.services, partner, request, claim))
        except ApiError as error:
            outcomes.put(error)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    # Everyone but the one holding the key is answered while it is still held in the store.
    losers = [outcomes.get(timeout=30) for _ in range(racers - 1)]
    deals.gate.set()
    for thread in threads:
        thread.join(30)
    winner = outcomes.get(timeout=30)

    assert all(isinstance(o, ApiError) and o.status == 409 and "in progress" in o.body["error"] for o in losers)
    result, replayed = winner
    assert not replayed and api.reserved(BAYSIDE) == 1
    api.services.idempotency = MongoIdempotencyStore(collection)
    assert initiate(api.services, partner, request, claim) == (result, True)


# -- GET: inline auth, the three formats, redirects ----------------------------------------------------------


def signed(api: Api, partner: str, params: dict[str, Any], secret: str | None = None) -> str:
    """Format 3 exactly as the spec's Node snippet builds it: canonical query plus `&sig=`."""
    params = {k: str(v) for k, v in {**params, "ts": int(time.time())}.items()}
    return canonical_query(params) + "&sig=" + sign_query(params, secret or api.secret(partner))


SHORT = {"v": NEW_VIN, "y": 2019, "m": "Tesla", "o": "Model 3", "a": 18500, "be": "jane@example.com"}


def test_format_3_signed_query_redirects_to_the_buyer_link(api):
    status, body, headers = api.get(BAYSIDE, signed(api, BAYSIDE, SHORT))

    assert status == 302 and body is None
    offer = api.database["offers"].find_one({"appSource": BAYSIDE, "status": "dealNowPending"})
    assert_app_link(headers["Location"], "dealnow.com", offer["guid"], "buyer")
    assert offer["price"] == 18500 and offer["offeredByUserId"] == ObjectId(BAYSIDE_USER)
    assert api.database["seller_listings"].find_one({"_id": offer["listingId"]})["vehicle"]["year"] == 2019
    assert sent_messages() == []


def test_role_seller_redirects_to_the_seller_link_and_redirect_url_wins(api):
    _, _, seller = api.get(CARMART, signed(api, CARMART, {**SHORT, "ro": "seller"}))
    guid = api.database["offers"].find_one({"appSource": CARMART, "status": "dealNowPending"})["guid"]
    assert_app_link(seller["Location"], "dealnow.com", guid, "seller")

    status, _, redirect = api.get(CARMART, signed(api, CARMART, {**SHORT, "r": "https://yoursite.com/thanks?a=1"}))
    assert status == 302 and redirect["Location"] == "https://yoursite.com/thanks?a=1"


def test_format_1_and_2_tokens_carry_json_fields(api):
    full = token(ACME, vin=NEW_VIN, year=2019, make="Tesla", model="Model 3", role="seller")
    status, _, headers = api.get(ACME, urlencode({"jwt": full}))
    assert status == 302
    assert urlsplit(headers["Location"]).hostname == "app.privateauto.com"  # acme: linkPlatform pa-app
    assert parse_qs(urlsplit(headers["Location"]).query) == {"role": ["seller"]}

    short = token(CARMART, v=NEW_VIN, y=2019, m="Tesla", o="Model 3", r="https://carmart.example/done")
    status, _, headers = api.get(CARMART, urlencode({"v": short}))
    assert status == 302 and headers["Location"] == "https://carmart.example/done"

    strict = token(CARMART, v=NEW_VIN, y="2019", m="Tesla", o="Model 3")  # JSON: a string is not a year
    status, body, _ = api.get(CARMART, urlencode({"v": strict}))
    assert status == 400 and set(body["fields"]) == {"year"}


@pytest.mark.parametrize("fmt", ["signed query", "jwt"])
def test_a_replayed_signed_url_answers_the_same_deal(api, fmt):
    query = (
        signed(api, CARMART, SHORT)
        if fmt == "signed query"
        else urlencode({"jwt": token(CARMART, vin=NEW_VIN, year=2019, make="Tesla", model="Model 3")})
    )

    first = api.get(CARMART, query)
    again = api.get(CARMART, query)

    assert first[0] == again[0] == 302 and first[2]["Location"] == again[2]["Location"]
    assert api.reserved(CARMART) == 1
    assert api.count("seller_listings", {"vehicle.vin": NEW_VIN}) == 1
    [stored] = api.database[IDEMPOTENCY_COLLECTION].find()
    assert stored["expiresAt"] >= api.clock.now + dt.timedelta(hours=24)


@pytest.mark.parametrize(
    "target",
    [
        "javascript:alert(document.cookie)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "/thanks",
        "//evil.example/",
        "https://",
        "https://user:pw@yoursite.com/",
        "http://yoursite.com/thanks",
    ],
)
def test_unsafe_redirect_targets_are_400_and_write_nothing(api, target):
    status, body, headers = api.get(CARMART, signed(api, CARMART, {**SHORT, "r": target}))

    assert status == 400 and set(body["fields"]) == {"redirectUrl"} and "Location" not in headers
    assert api.reserved(CARMART) == 0


def test_http_redirects_only_when_the_local_switch_is_on(api):
    api.services.allow_http_redirects = True

    status, _, headers = api.get(CARMART, signed(api, CARMART, {**SHORT, "r": "http://127.0.0.1:3000/done"}))

    assert status == 302 and headers["Location"] == "http://127.0.0.1:3000/done"


@pytest.mark.parametrize(
    ("param", "value", "field"),
    [("y", "20x9", "year"), ("a", "18,500", "amount"), ("bl", "yes", "buyerSendLink"), ("ro", "admin", "role")],
)
def test_format_3_values_that_are_not_their_type_are_400_naming_the_field(api, param, value, field):
    status, body, _ = api.get(CARMART, signed(api, CARMART, {**SHORT, param: value}))

    assert status == 400 and set(body["fields"]) == {field}


def test_get_emails_the_links_asked_for(api):
    status, _, headers = api.get(BAYSIDE, signed(api, BAYSIDE, {**SHORT, "bl": "true", "se": "j@x.co", "sl": "1"}))

    assert status == 302
    recipients = sorted(m.destinations["ToAddresses"][0] for m in sent_messages())
    assert recipients == ["j@x.co", "jane@example.com"]
    buyer = next(m for m in sent_messages() if m.destinations["ToAddresses"] == ["jane@example.com"])
    assert headers["Location"] in buyer.body


def test_failed_inline_auth_is_401_naming_the_check_and_echoing_nothing(api):
    good = signed(api, BAYSIDE, SHORT)
    sig = parse_qs(good)["sig"][0]
    forged = good.replace(sig, "0" * 64)
    expired = canonical_query({"v": NEW_VIN, "ts": "1000000000"})
    expired += "&sig=" + sign_query({"v": NEW_VIN, "ts": "1000000000"}, api.secret(BAYSIDE))
    wrong_key = signed(api, BAYSIDE, SHORT, secret=base64.b64encode(b"not the secret").decode())
    cases = {
        forged: "invalid signature",
        wrong_key: "invalid signature",
        expired: "expired",
        f"v={NEW_VIN}": "missing credentials",
        "jwt=" + quote(token(CARMART, SECRETS[BAYSIDE])): None,  # a token for another partner: 403
    }
    for query, check in cases.items():
        status, body, _ = api.get(BAYSIDE, query)
        assert set(body) == {"error"}
        if check is None:
            assert (status, body["error"]) == (403, "token is for another partner")
            continue
        assert status == 401 and check in body["error"], body
        for secret_part in (sig, api.secret(BAYSIDE), base64.b64decode(api.secret(BAYSIDE)).decode()):
            assert secret_part not in body["error"]
    assert api.reserved(BAYSIDE) == 0


def test_get_for_an_unknown_or_inactive_partner(api):
    api.runtime.secrets.asked.clear()
    status, body, _ = api.get("nobody", signed(api, "nobody", SHORT, secret=api.secret(CARMART)))
    assert (status, body) == (401, {"error": "invalid signature"})
    assert "nobody" not in api.runtime.secrets.asked

    status, body, _ = api.get(INACTIVE, signed(api, INACTIVE, SHORT))
    assert (status, body) == (403, {"error": "partner is inactive"})


def test_get_counts_against_the_partners_general_allowance(api):
    api.runtime.limits = ApiLimits(RateLimit(2, 60), RateLimit(1, 60))
    query = signed(api, CARMART, SHORT)

    statuses = [api.get(CARMART, query)[0] for _ in range(3)]

    assert statuses == [302, 302, 429]
    assert api.reserved(CARMART) == 1  # the second was the same signed URL


def test_the_openapi_document_describes_both_routes(api):
    from distiller.api.routes import openapi_document

    operations = openapi_document()["paths"]["/sell/{partnerId}"]
    post, get = operations["post"], operations["get"]
    assert set(post["responses"]) == {"201", "400", "401", "403", "409", "429", "503"}
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("SellRequest")
    assert {p["name"] for p in post["parameters"]} == {"partnerId", "idempotency-key"}
    assert set(get["responses"]) == {"302", "400", "401", "403", "409", "429", "503"}
    assert "Location" in get["responses"]["302"]["headers"]
    assert {p["name"] for p in get["parameters"]} >= {"partnerId", "v", "jwt", "ts", "sig", "r", "ro"}


class LinedUpDeals:
    """The real store, letting no caller past `find_listing` until all have looked (none finds a listing)."""

    def __init__(self, inner: MongoDealStore, racers: int) -> None:
        self.inner = inner
        self.together = threading.Barrier(racers)

    def find_listing(self, vin: str) -> dict[str, Any] | None:
        found = self.inner.find_listing(vin)
        self.together.wait(30)
        return found

    def insert_stub(self, listing: dict[str, Any]) -> dict[str, Any]:
        return self.inner.insert_stub(listing)

    def insert_offer(self, offer: dict[str, Any]) -> None:
        self.inner.insert_offer(offer)


def test_concurrent_requests_without_a_key_for_an_unlisted_vin_share_one_stub(api, atomic_inserts):
    partner = next(p for p in api.runtime.partners() if p.partner_id == BAYSIDE)
    request = validate_sell(new_vehicle())
    racers = 4
    api.services.deals = LinedUpDeals(MongoDealStore(api.database), racers)  # type: ignore[assignment]
    outcomes: queue.Queue = queue.Queue()
    threads = [
        threading.Thread(target=lambda: outcomes.put(initiate(api.services, partner, request, None)))
        for _ in range(racers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    deals = [outcomes.get(timeout=1)[0]["dealId"] for _ in range(racers)]
    assert len(set(deals)) == racers  # four deals, as asked
    [stub] = api.database["seller_listings"].find({"vehicle.vin": NEW_VIN})
    assert {api.offer(deal)["listingId"] for deal in deals} == {stub["_id"]}


def test_a_claimed_stub_not_yet_written_is_written_once_and_used(api):
    from distiller.api.sell import stub_listing

    stub = stub_listing(validate_sell(new_vehicle()), BAYSIDE, ObjectId(), api.clock.now)
    store = MongoDealStore(api.database)
    claimed = {"_id": f"stub:{NEW_VIN}", "listing": stub, "expiresAt": api.clock.now + dt.timedelta(minutes=10)}
    api.database["dealnow_stub_claims"].insert_one(claimed)  # its claimant died before writing it

    status, body, _ = api.post(BAYSIDE, new_vehicle())

    assert status == 201
    [written] = api.database["seller_listings"].find({"vehicle.vin": NEW_VIN})
    assert written["_id"] == stub["_id"] and api.offer(body["dealId"])["listingId"] == stub["_id"]
    assert store.insert_stub(stub)["_id"] == stub["_id"]  # again: nothing more is written
    assert api.count("seller_listings", {"vehicle.vin": NEW_VIN}) == 1


def test_a_claim_whose_stub_was_sold_meanwhile_gives_way_to_a_new_stub(api):
    first = api.post(BAYSIDE, new_vehicle())[1]
    sold = api.offer(first["dealId"])["listingId"]
    api.database["seller_listings"].update_one({"_id": sold}, {"$set": {"status": "sold"}})

    status, body, _ = api.post(BAYSIDE, new_vehicle())

    assert status == 201
    fresh = api.offer(body["dealId"])["listingId"]
    assert fresh != sold and api.count("seller_listings", {"vehicle.vin": NEW_VIN}) == 2
    claim = api.database["dealnow_stub_claims"].find_one({"_id": f"stub:{NEW_VIN}"})
    assert claim["listing"]["_id"] == fresh


def test_of_two_requests_finding_a_stale_claim_one_swaps_it_and_both_use_one_stub(api):
    from distiller.api.sell import stub_listing

    first = api.post(BAYSIDE, new_vehicle())[1]
    sold = api.offer(first["dealId"])["listingId"]
    api.database["seller_listings"].update_one({"_id": sold}, {"$set": {"status": "sold"}})
    store = MongoDealStore(api.database)
    request = validate_sell(new_vehicle())
    ours, theirs = (stub_listing(request, BAYSIDE, ObjectId(), api.clock.now) for _ in range(2))

    # Both found no live listing; the first to swap the stale claim wins, the second takes its stub.
    assert store.insert_stub(ours)["_id"] == ours["_id"]
    assert store.insert_stub(theirs)["_id"] == ours["_id"]

    assert api.count("seller_listings", {"vehicle.vin": NEW_VIN, "status": "draft"}) == 1
