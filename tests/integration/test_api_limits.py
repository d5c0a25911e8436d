"""Per-partner limits on the partner API, and what an unknown partner costs.

The stage-wide API Gateway throttle is shared by every partner; these limits are each partner's
own: every route counts against one allowance, a replay (which makes the dispatcher POST to the
partner's endpoint) also against a stricter one. Refusals are 429 with `Retry-After`. The handler
runs in-process through the same resolver as Lambda, with an in-memory limiter on a fake clock.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from distiller.api.auth import StaticSharedSecrets
from distiller.api.rate_limit import InMemoryRateLimiter, RateLimit
from distiller.api.routes import ApiLimits, app, use_runtime
from distiller.deliver.log import DELIVERIES_COLLECTION
from distiller.runtime import api_limits
from distiller.settings import ApiSettings, SettingsError
from distiller_tools.local.api_server import api_gateway_event, build_runtime
from distiller_tools.local.pipeline import LocalContext
from distiller_tools.world import in_memory_database, load_world
from tests.integration.test_api import sample_partners, token

ROOT = Path(__file__).resolve().parents[2]
ACME_DEAL = "66240a11c3d9e40000000013"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class CountingSecrets(StaticSharedSecrets):
    def __init__(self, secrets: dict[str, str]) -> None:
        super().__init__(secrets)
        self.asked: list[str] = []

    def shared_secret(self, partner_id: str) -> str | None:
        self.asked.append(partner_id)
        return super().shared_secret(partner_id)


@pytest.fixture
def api():
    partners = sample_partners()
    database = in_memory_database(partners, load_world(ROOT / "events" / "world.json"))
    log_id = ObjectId()
    database[DELIVERIES_COLLECTION].insert_one(
        {
            "_id": log_id,
            "partnerId": "acme-motors",
            "event": "deal.created",
            "eventId": "e" * 64,
            "status": "delivered",
            "attempt": 0,
            "attemptedAt": dt.datetime(2026, 4, 21, 10, tzinfo=dt.UTC),
            "payload": {"id": ACME_DEAL, "entityType": "deals", "eventId": "e" * 64, "eventKey": "k"},
        }
    )
    runtime = build_runtime(database, partners, io.StringIO(), ApiLimits(RateLimit(3, 60), RateLimit(1, 60)))
    clock = Clock()
    runtime.limiter = InMemoryRateLimiter(clock=clock)
    runtime.secrets = CountingSecrets({p["partnerId"]: p["sharedSecret"] for p in partners if "sharedSecret" in p})
    use_runtime(runtime)
    return runtime, clock, str(log_id)


def request(method: str, path: str, bearer: str) -> dict[str, Any]:
    event = api_gateway_event(method, path, {"Authorization": f"Bearer {bearer}"}, b"")
    return app.resolve(event, LocalContext("trigger-distiller-api"))


def retry_after(result: dict[str, Any]) -> int:
    """`Retry-After` of a REST proxy response (API Gateway REST answers with `multiValueHeaders`)."""
    headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    headers.update({k.lower(): v[-1] for k, v in (result.get("multiValueHeaders") or {}).items()})
    return int(headers["retry-after"])


def get_deals(partner: str, bearer: str | None = None) -> dict[str, Any]:
    return request("GET", f"/data/deals/{partner}", bearer or token(partner))


def test_a_partner_over_its_allowance_gets_429_with_retry_after_and_others_do_not(api):
    _, clock, _ = api
    assert [get_deals("acme-motors")["statusCode"] for _ in range(3)] == [200, 200, 200]

    refused = get_deals("acme-motors")

    assert refused["statusCode"] == 429
    wait = retry_after(refused)
    assert 1 <= wait <= 60
    assert "rate limit" in json.loads(refused["body"])["error"]
    assert get_deals("carmart")["statusCode"] == 200  # each partner has its own allowance
    clock.now += wait
    assert get_deals("acme-motors")["statusCode"] == 200


def test_replays_have_a_stricter_allowance_of_their_own(api):
    _, _, log_id = api
    replay = f"/data/webhook-deliveries/acme-motors/{log_id}/replay"

    assert request("POST", replay, token("acme-motors"))["statusCode"] == 202
    second = request("POST", replay, token("acme-motors"))

    assert second["statusCode"] == 429 and retry_after(second) >= 1
    assert get_deals("acme-motors")["statusCode"] == 200  # reads still have room


def test_unauthenticated_requests_never_spend_a_partners_allowance(api):
    forged = token("acme-motors", secret="not the secret")
    assert {get_deals("acme-motors", forged)["statusCode"] for _ in range(10)} == {401}

    assert get_deals("acme-motors")["statusCode"] == 200


def test_an_unknown_partner_is_refused_without_a_secret_lookup(api):
    runtime, _, _ = api
    unknown = token("acme-motors", p="nobody-here")

    assert get_deals("nobody-here", unknown)["statusCode"] == 401
    assert get_deals("acme-motors")["statusCode"] == 200
    # A secret lookup that finds nothing is slow and uncached: an unknown partner never makes one,
    # so it is not told apart from a known partner by its latency.
    assert runtime.secrets.asked == ["acme-motors"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, ApiLimits(), id="defaults"),
        pytest.param(
            {"API_RATE_LIMIT": "100/10", "API_REPLAY_RATE_LIMIT": "5/60"},
            ApiLimits(RateLimit(100, 10), RateLimit(5, 60)),
            id="configured",
        ),
    ],
)
def test_limits_come_from_the_environment(env, expected):
    base = {"DELIVERY_QUEUE_URL": "https://sqs.example/q", "DOCUMENTS_BUCKET": "docs"}
    assert api_limits(ApiSettings.from_env({**base, **env})) == expected


def test_a_malformed_limit_fails_the_cold_start_naming_the_variable():
    with pytest.raises(SettingsError, match="API_REPLAY_RATE_LIMIT"):
        ApiSettings.from_env({"DELIVERY_QUEUE_URL": "q", "DOCUMENTS_BUCKET": "d", "API_REPLAY_RATE_LIMIT": "lots"})
