"""The partner /data API over real HTTP on 127.0.0.1, through the same Lambda handler (`distiller api`)."""

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest

from distiller.api.routes import openapi_document
from distiller_tools.local.api_server import load_deliveries, start
from distiller_tools.world import in_memory_database, load_partners, load_world

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
SECRETS = {"acme-motors": "acme shared secret", "carmart": "carmart shared secret", "bayside-auto": "bayside"}


def stored(secret: str) -> str:
    return base64.b64encode(secret.encode()).decode()


def sample_partners() -> list[dict]:
    """The sample partner records, those in SECRETS with their (stored, base64) shared secret."""
    partners = json.loads((EVENTS / "partners.json").read_text())
    for record in partners:
        if record["partnerId"] in SECRETS:
            record["sharedSecret"] = stored(SECRETS[record["partnerId"]])
    return partners


def token(partner_id: str, secret: str | None = None, **claims) -> str:
    """Exactly the spec's Python snippet."""
    now = int(time.time())
    key = base64.b64decode(stored(secret or SECRETS[partner_id])).decode("utf-8")
    return jwt.encode({"p": partner_id, "iat": now, "exp": now + 300, **claims}, key, algorithm="HS256")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    partners = sample_partners()
    database = in_memory_database(load_partners_from(partners, tmp_path_factory), load_world(EVENTS / "world.json"))
    log = tmp_path_factory.mktemp("log") / "attempts.jsonl"
    log.write_text(
        "\n".join(
            json.dumps(line)
            for line in [
                delivery("acme-motors", "deal.created", "delivered", "2026-04-21T10:00:00.000Z", 1, ACME_DEAL),
                delivery("acme-motors", "deal.completed", "failed", "2026-04-21T11:00:00.000Z", 2, ACME_DEAL),
                delivery("carmart", "listing.created", "delivered", "2026-04-21T12:00:00.000Z", 3, CARMART_LISTING),
                # held for a paused partner: the operators' status, not one the spec's enum has
                delivery("acme-motors", "deal.completed", "held", "2026-04-21T13:00:00.000Z", 4, ACME_DEAL),
            ]
        )
        + "\n"
    )
    assert load_deliveries(database, log) == 4
    replays: list[str] = []

    class Sink:
        def write(self, text):
            replays.append(text)

        def flush(self):
            pass

    server = start(0, database, partners, Sink())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.url, replays
    server.shutdown()
    server.server_close()


def load_partners_from(records, factory):
    path = factory.mktemp("p") / "partners.json"
    path.write_text(json.dumps(records))
    return load_partners(path)


#: Entities of the sample world (events/world.json) that acme-motors and carmart read.
ACME_DEAL = ("deals", "66240a11c3d9e40000000013")
CARMART_LISTING = ("seller_listings", "66240a11c3d9e40000000011")


def delivery(partner, event, status, at, n, entity):
    return {
        "id": f"{n:024x}",
        "partnerId": partner,
        "event": event,
        "eventId": f"{n:064x}",
        "attempt": 1,
        "status": status,
        "url": f"https://{partner}.example/hooks",
        "statusCode": 200 if status == "delivered" else 500,
        "attemptedAt": at,
        "responseBodyExcerpt": "ok",
        "error": None if status == "delivered" else "HTTP 500",
        "deadLettered": False,
        "payload": {
            "id": entity[1],
            "entityType": entity[0],
            "eventId": f"{n:064x}",
            "eventKey": f"k{n}:{partner}:{event}:0",
        },
    }


def call(url, method="GET", headers=None):
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def get(api, path, partner=None, tok=None):
    url, _ = api
    headers = {"Authorization": f"Bearer {tok or token(partner)}"} if (partner or tok) else {}
    return call(url + path, headers=headers)


@pytest.mark.parametrize("family", ["deals", "offers", "listings"])
def test_lists_are_paged_with_meta(api, family):
    status, body = get(api, f"/data/{family}/acme-motors?_limit=2", "acme-motors")

    assert status == 200
    assert set(body) == {"data", "_meta"}
    meta = body["_meta"]
    assert meta["page"] == 0 and meta["limit"] == 2 and meta["total"] >= len(body["data"])
    assert meta["hasMore"] == (meta["total"] > 2)


def test_limit_above_100_is_capped_and_bad_paging_is_400(api):
    assert get(api, "/data/deals/acme-motors?_limit=500", "acme-motors")[1]["_meta"]["limit"] == 100
    for query in ("_page=-1", "_page=x", "_limit=0", "_limit=abc"):
        status, body = get(api, f"/data/deals/acme-motors?{query}", "acme-motors")
        assert status == 400, query
        assert query.split("=")[0] in body["error"]


def test_details_of_listed_entities_and_404_outside_scope(api):
    _, own = get(api, "/data/deals/acme-motors", "acme-motors")
    _, others = get(api, "/data/deals/carmart", "carmart")
    own_ids = {d["id"] for d in own["data"]}
    foreign = [d["id"] for d in others["data"] if d["id"] not in own_ids]
    assert own_ids and foreign

    for deal_id in own_ids:
        status, deal = get(api, f"/data/deals/acme-motors/{deal_id}", "acme-motors")
        assert status == 200 and deal["id"] == deal_id
    status, body = get(api, f"/data/deals/acme-motors/{foreign[0]}", "acme-motors")
    assert (status, body) == (404, {"error": "deal not found"})
    assert get(api, "/data/deals/acme-motors/000000000000000000000000", "acme-motors")[0] == 404


@pytest.mark.parametrize(
    ("tok", "status", "message"),
    [
        (None, 401, "missing bearer token"),
        ("not.a.token", 401, "malformed"),
        ("carmart", 403, "another partner"),
        ("wrong-secret", 401, "invalid signature"),
    ],
)
def test_authentication_failures(api, tok, status, message):
    if tok == "carmart":
        tok = jwt.encode({"p": "carmart", "exp": int(time.time()) + 60}, SECRETS["acme-motors"], algorithm="HS256")
    elif tok == "wrong-secret":
        tok = token("acme-motors", secret="nope")
    url, _ = api
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}

    got_status, body = call(url + "/data/deals/acme-motors", headers=headers)

    assert got_status == status and message in body["error"]
    assert (tok or "zz") not in body["error"]


def test_deliveries_are_the_partners_own_with_filters(api):
    status, body = get(api, "/data/webhook-deliveries/acme-motors", "acme-motors")
    assert status == 200
    assert [d["event"] for d in body["data"]] == ["deal.completed", "deal.created"]  # newest first
    assert {d["partnerId"] for d in body["data"]} == {"acme-motors"}
    # A held entry is not shown: partners parse the spec's three statuses.
    assert body["_meta"]["total"] == 2 and {d["status"] for d in body["data"]} == {"delivered", "failed"}
    assert get(api, "/data/webhook-deliveries/acme-motors?status=held", "acme-motors")[0] == 400
    assert get(api, f"/data/webhook-deliveries/acme-motors/{4:024x}", "acme-motors")[0] == 404

    _, failed = get(api, "/data/webhook-deliveries/acme-motors?status=failed", "acme-motors")
    assert [d["event"] for d in failed["data"]] == ["deal.completed"]
    _, early = get(api, "/data/webhook-deliveries/acme-motors?dateTo=2026-04-21T10:00:00Z", "acme-motors")
    assert [d["event"] for d in early["data"]] == ["deal.created"]  # bounds are inclusive
    assert get(api, "/data/webhook-deliveries/acme-motors?status=lost", "acme-motors")[0] == 400
    assert get(api, "/data/webhook-deliveries/acme-motors?dateFrom=yesterday", "acme-motors")[0] == 400

    carmart_log = f"{3:024x}"
    assert get(api, f"/data/webhook-deliveries/acme-motors/{carmart_log}", "acme-motors")[0] == 404
    status, one = get(api, f"/data/webhook-deliveries/carmart/{carmart_log}", "carmart")
    assert status == 200 and one["eventId"] == f"{3:064x}"


def test_replay_requeues_the_same_event_id(api):
    url, replays = api
    before = len(replays)
    status, body = call(
        url + f"/data/webhook-deliveries/acme-motors/{1:024x}/replay",
        method="POST",
        headers={"Authorization": f"Bearer {token('acme-motors')}"},
    )

    assert status == 202 and body == {"status": "queued", "eventId": f"{1:064x}", "event": "deal.created"}
    [line] = replays[before:]
    message = json.loads(line.split("replay queued: ", 1)[1])
    assert message["eventId"] == f"{1:064x}" and message["attempt"] == 0 and message["redrive"] > 0
    assert message["eventKey"] == "k1:acme-motors:deal.created:0"


def test_openapi_document_is_committed_and_current():
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert committed == openapi_document(), "run `make openapi`"
    paths = set(committed["paths"])
    assert {
        "/data/deals/{partnerId}",
        "/data/deals/{partnerId}/{dealId}",
        "/data/deals/{partnerId}/{dealId}/documents",
        "/data/offers/{partnerId}",
        "/data/offers/{partnerId}/{offerId}",
        "/data/listings/{partnerId}",
        "/data/listings/{partnerId}/{listingId}",
        "/data/webhook-deliveries/{partnerId}",
        "/data/webhook-deliveries/{partnerId}/{logId}",
        "/data/webhook-deliveries/{partnerId}/{logId}/replay",
        "/data/documents/{partnerId}/{documentId}",
        "/data/generated-documents/{partnerId}/{documentId}",
    } <= paths
    # Each body is described by its model; the errors are those the routes send, never a 422 of
    # powertools' request validation (those are answered 400).
    schemas = committed["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ErrorResponse" in schemas
    for path, operations in committed["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            redirect = responses.pop("302", None)  # GET /sell answers a redirect, without a body
            refs = {code: r["content"]["application/json"]["schema"].get("$ref", "") for code, r in responses.items()}
            successes = [code for code in refs if code.startswith("2")]
            if redirect is not None:
                assert not successes and not redirect.get("content") and "Location" in redirect["headers"]
                success = "302"
            else:
                [success] = successes
                assert refs[success].removeprefix("#/components/schemas/") in schemas, (method, path)
            assert {"401", "403", "429"} <= set(refs), (method, path)
            errors = {code: ref for code, ref in refs.items() if code != success}
            assert set(errors.values()) == {"#/components/schemas/ErrorResponse"}, (method, path)
