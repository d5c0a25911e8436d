"""The API's sample requests in events/ (`api_*.json`) through the deployed composition.

`functions/api/app.py` builds its runtime with `api_runtime_from_env` from the API function's
template environment, over moto (Secrets Manager, SES, SQS, S3) and an in-memory database holding
`events/partners.json` and `events/world.json`. The samples are recorded with tokens and a `ts`
long expired: each test re-signs the very same request for now (same claims, same parameters)
and nothing else changes.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import jwt
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from distiller.adapters.secrets import SecretsManagerSharedSecrets
from distiller.api.inline_auth import sign_query
from distiller_tools.world import in_memory_database, load_partners, load_world
from tests.conftest import FakeLambdaContext, load_function

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
REGION = "us-east-2"
SENDER = "deals@dealnow.example"


def sample(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def shared_secret(partner_id: str) -> str:
    (record,) = [p for p in load_partners(EVENTS / "partners.json") if p["partnerId"] == partner_id]
    return record["sharedSecret"]


def with_fresh_token(event: dict[str, Any]) -> dict[str, Any]:
    """The sample with its bearer token re-signed for now: same header, same claims, same lifetime."""
    token = event["headers"]["Authorization"].split()[1]
    claims = jwt.decode(token, options={"verify_signature": False})
    algorithm = jwt.get_unverified_header(token)["alg"]
    now = int(time.time())
    claims |= {"iat": now, "exp": now + (claims["exp"] - claims["iat"])}
    secret = base64.b64decode(shared_secret(claims["p"])).decode("utf-8")
    fresh = jwt.encode(claims, secret, algorithm=algorithm)
    event["headers"]["Authorization"] = event["multiValueHeaders"]["Authorization"][0] = f"Bearer {fresh}"
    return event


def with_fresh_signature(event: dict[str, Any]) -> dict[str, Any]:
    """The signed-query sample with `ts` set to now and `sig` recomputed over the same parameters."""
    params = {k: v for k, v in event["queryStringParameters"].items() if k != "sig"}
    params["ts"] = str(int(time.time()))
    params["sig"] = sign_query(params, shared_secret(event["pathParameters"]["partnerId"]))
    event["queryStringParameters"] = params
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in params.items()}
    return event


@pytest.fixture
def deployed(monkeypatch):
    """The API function as deployed: its template environment, moto for AWS, mongomock for MongoDB."""
    partners = load_partners(EVENTS / "partners.json")
    database = in_memory_database(partners, load_world(EVENTS / "world.json"))
    with mock_aws():
        queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="delivery")["QueueUrl"]
        secrets = boto3.client("secretsmanager", region_name=REGION)
        names = SecretsManagerSharedSecrets()
        for record in partners:
            secrets.create_secret(Name=names.name_for(record["partnerId"]), SecretString=record["sharedSecret"])
        boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
        environment = {
            "MONGODB_URI_SECRET": "trigger-distiller/test/mongo-uri",
            "DELIVERY_QUEUE_URL": queue,
            "DOCUMENTS_BUCKET": "pa-uploads-test",
            "DEALNOW_DOMAIN": "dealnow.example",
            "APP_DOMAIN": "privateauto.example",
            "SES_FROM_ADDRESS": SENDER,
            "AWS_DEFAULT_REGION": REGION,
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr("distiller.runtime.connect_database", lambda settings: database)
        module = load_function("api")
        module._runtime = None  # built by the handler, from the environment above
        yield module, database


def invoke(module: Any, event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    response = module.handler(event, FakeLambdaContext(function_name="trigger-distiller-api"))
    headers = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items() if v}
    headers.update(response.get("headers") or {})
    body = response.get("body")
    return response["statusCode"], headers, json.loads(body) if body else None


def sent_emails() -> list[Any]:
    return ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages


def test_the_post_sell_sample_starts_a_deal_emails_the_seller_and_replays_by_its_key(deployed):
    module, database = deployed
    event = with_fresh_token(sample("api_sell_post.json"))
    offers = database["offers"].count_documents({})

    status, _, body = invoke(module, event)

    assert status == 201, body
    assert set(body) >= {"dealId", "guid", "buyerLink", "sellerLink"}
    for link in (body["buyerLink"], body["sellerLink"]):
        assert urlsplit(link).hostname == "app.dealnow.example"  # bayside-auto: linkPlatform dealnow (default)
        assert body["guid"] in link
    (listing,) = database["seller_listings"].find({"vehicle.vin": "1HGBH41JXMN109186", "appSource": "bayside-auto"})
    (offer,) = database["offers"].find({"guid": body["guid"]})
    assert offer["status"] == "dealNowPending" and offer["listingId"] == listing["_id"]
    assert str(offer["dealId"]) == body["dealId"] and offer["appSource"] == "bayside-auto"
    assert str(offer["offeredByUserId"]) == "6614a0c1e4b0a10000000b01"  # the record's organizationUserId
    (email,) = sent_emails()  # sellerSendLink only: the seller, and only the seller, gets a link
    assert email.destinations["ToAddresses"] == ["john@example.com"]
    assert body["sellerLink"] in email.body and body["buyerLink"] not in email.body

    again_status, again_headers, again = invoke(module, with_fresh_token(sample("api_sell_post.json")))

    assert (again_status, again) == (201, body)  # the same Idempotency-Key and body: the same deal
    assert again_headers.get("Idempotent-Replayed") == "true"
    assert database["offers"].count_documents({}) == offers + 1 and len(sent_emails()) == 1


def test_the_signed_get_sell_sample_redirects_to_the_buyer_link_of_a_new_deal(deployed):
    module, database = deployed
    event = with_fresh_signature(sample("api_sell_get_signed.json"))
    offers = database["offers"].count_documents({})

    status, headers, _ = invoke(module, event)

    assert status == 302, headers
    location = urlsplit(headers["Location"])
    assert location.scheme == "https" and location.hostname == "app.dealnow.example"
    assert parse_qs(location.query)["role"] == ["buyer"]  # ro=buyer
    (offer,) = database["offers"].find({"appSource": "bayside-auto", "status": "dealNowPending"})
    assert offer["guid"] in headers["Location"]
    listing = database["seller_listings"].find_one({"_id": offer["listingId"]})
    assert listing["vehicle"]["vin"] == "2T1BURHE5JC034567" and listing["vehicle"]["make"] == "Toyota"

    replay_status, replay_headers, _ = invoke(module, event)  # the same signed URL again, within its window

    assert (replay_status, replay_headers["Location"]) == (302, headers["Location"])
    assert database["offers"].count_documents({}) == offers + 1


def test_the_lead_samples_submit_then_find_the_lead_and_a_resubmission_is_409(deployed):
    module, database = deployed

    status, headers, created = invoke(module, with_fresh_token(sample("api_leads_post.json")))

    assert status == 201, created
    assert created["callerReferenceId"] == "LDR-98234" and created["status"] == "new"
    assert headers["RateLimit-Limit"] == "30"  # bayside-auto's own leadsRateLimit, not the stack default
    assert int(headers["RateLimit-Remaining"]) == 29

    status, _, found = invoke(module, with_fresh_token(sample("api_leads_get.json")))

    assert status == 200 and found["leadId"] == created["leadId"] and found["status"] == "new"

    status, _, duplicate = invoke(module, with_fresh_token(sample("api_leads_post.json")))

    assert status == 409 and duplicate["leadId"] == created["leadId"]
    assert database["leads"].count_documents({}) == 1
