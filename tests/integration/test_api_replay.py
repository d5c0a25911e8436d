"""`POST /data/webhook-deliveries/{partnerId}/{logId}/replay` re-checks scope on the entity as it is now.

A replay re-signs the event's `documents[]` links for 4 hours, so it must answer the question a
read answers: may this partner read this entity (and these files) today? The handler runs
in-process through the same resolver as Lambda, with the sample world in mongomock.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from distiller.api.routes import app, use_runtime
from distiller.deliver.log import DELIVERIES_COLLECTION
from distiller_tools.local.api_server import DOCUMENTS_BUCKET, api_gateway_event, build_runtime
from distiller_tools.local.pipeline import LocalContext
from distiller_tools.world import in_memory_database, load_world
from tests.integration.test_api import sample_partners, token

ROOT = Path(__file__).resolve().parents[2]
ACME_DEAL = ObjectId("66240a11c3d9e40000000013")  # acme-motors reads it through its organization
ORG_OTHER = "67e446a09d2eb254a3b130e9"
FRONT, BACK = "deals/13/title-front.jpg", "deals/13/title-back.jpg"


def s3_link(key: str) -> str:
    return f"https://{DOCUMENTS_BUCKET}.s3.us-east-2.amazonaws.com/{key}?X-Amz-Expires=14400&X-Amz-Signature=old"


@pytest.fixture
def world():
    partners = sample_partners()
    database = in_memory_database(partners, load_world(ROOT / "events" / "world.json"))
    database["deals"].update_one(
        {"_id": ACME_DEAL},
        {"$set": {"titleAttachment.files": [{"key": FRONT, "name": "front.jpg"}, {"key": BACK, "name": "back.jpg"}]}},
    )
    log_id = ObjectId()
    database[DELIVERIES_COLLECTION].insert_one(
        {
            "_id": log_id,
            "partnerId": "acme-motors",
            "event": "deal.title_approved",
            "eventId": "e" * 64,
            "status": "delivered",
            "attempt": 0,
            "attemptedAt": dt.datetime(2026, 4, 21, 10, tzinfo=dt.UTC),
            "payload": {
                "id": str(ACME_DEAL),
                "entityType": "deals",
                "eventId": "e" * 64,
                "eventKey": "k:acme-motors:deal.title_approved:0",
                "documents": [
                    {"filename": "front.jpg", "signedUrl": s3_link(FRONT), "expiresAt": "2026-04-21T14:00:00.000Z"},
                    {"filename": "back.jpg", "signedUrl": s3_link(BACK), "expiresAt": "2026-04-21T14:00:00.000Z"},
                ],
            },
        }
    )
    queued = io.StringIO()
    use_runtime(build_runtime(database, partners, queued))
    return database, str(log_id), queued


def request(method: str, path: str, partner: str = "acme-motors") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token(partner)}"}
    result = app.resolve(api_gateway_event(method, path, headers, b""), LocalContext("trigger-distiller-api"))
    return result["statusCode"], json.loads(result["body"])


def replay(log_id: str) -> tuple[int, Any]:
    return request("POST", f"/data/webhook-deliveries/acme-motors/{log_id}/replay")


def queued_messages(queued: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line.split("replay queued: ", 1)[1]) for line in queued.getvalue().splitlines()]


def file_keys(message: dict[str, Any]) -> list[str]:
    return [d["signedUrl"].split("?", 1)[0].split(".amazonaws.com/", 1)[1] for d in message["payload"]["documents"]]


def test_a_replay_of_an_entity_in_scope_resigns_its_files(world):
    _, log_id, queued = world

    status, body = replay(log_id)

    assert status == 202 and body["eventId"] == "e" * 64
    [message] = queued_messages(queued)
    assert file_keys(message) == [FRONT, BACK]
    assert all("Signature=old" not in d["signedUrl"] for d in message["payload"]["documents"])


@pytest.mark.parametrize(
    "move_out",
    [
        pytest.param(
            {"$set": {"buyer.organizationId": ORG_OTHER, "seller.organizationId": ORG_OTHER}},
            id="organization-changed",
        ),
        pytest.param({"$unset": {"buyer": "", "seller": ""}}, id="organization-removed"),
    ],
)
def test_a_replay_after_the_entity_left_the_partners_scope_is_404_and_nothing_is_signed(world, move_out):
    database, log_id, queued = world
    assert request("GET", f"/data/deals/acme-motors/{ACME_DEAL}")[0] == 200
    database["deals"].update_one({"_id": ACME_DEAL}, move_out)

    assert request("GET", f"/data/deals/acme-motors/{ACME_DEAL}")[0] == 404
    status, body = replay(log_id)

    assert status == 404 and "not found" in body["error"]
    assert queued.getvalue() == ""
    # The log entry itself stays the partner's to read.
    assert request("GET", f"/data/webhook-deliveries/acme-motors/{log_id}")[0] == 200


def test_a_replay_after_the_entity_is_gone_is_404(world):
    database, log_id, queued = world
    database["deals"].delete_one({"_id": ACME_DEAL})

    assert replay(log_id)[0] == 404 and queued.getvalue() == ""


def test_a_replay_resigns_only_the_files_the_entity_still_carries(world):
    database, log_id, queued = world
    database["deals"].update_one({"_id": ACME_DEAL}, {"$set": {"titleAttachment.files": [{"key": BACK}]}})

    assert replay(log_id)[0] == 202
    [message] = queued_messages(queued)
    assert file_keys(message) == [BACK]


def test_a_replay_never_resigns_a_link_to_another_bucket(world):
    database, log_id, queued = world
    foreign = "https://elsewhere.s3.amazonaws.com/deals/13/title-front.jpg?sig=x"
    database[DELIVERIES_COLLECTION].update_one(
        {"_id": ObjectId(log_id)},
        {"$push": {"payload.documents": {"filename": "x.jpg", "signedUrl": foreign, "expiresAt": None}}},
    )

    assert replay(log_id)[0] == 202
    [message] = queued_messages(queued)
    assert file_keys(message) == [FRONT, BACK]
