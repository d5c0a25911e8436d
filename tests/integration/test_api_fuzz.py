"""Property-based fuzzing of the /data HTTP surface with schemathesis, from the committed OpenAPI document.

Every generated request goes to the local API on 127.0.0.1 (the same handler as Lambda) with a
valid token for a real partner; whatever the query, path and ids, the answer is never a 5xx.
"""

import threading
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.integration.test_api import EVENTS, SECRETS, stored, token

ROOT = Path(__file__).resolve().parents[2]
schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json")


@pytest.fixture(scope="module")
def base_url():
    import json

    from distiller.local.api_server import start
    from distiller.world import in_memory_database, load_world

    partners = json.loads((EVENTS / "partners.json").read_text())
    for record in partners:
        if record["partnerId"] in SECRETS:
            record["sharedSecret"] = stored(SECRETS[record["partnerId"]])
    database = in_memory_database(partners, load_world(EVENTS / "world.json"))
    server = start(0, database, partners, open("/dev/null", "w"))  # noqa: SIM115 - lives as long as the server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.url
    server.shutdown()
    server.server_close()


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_api_fail(case, base_url):
    case.path_parameters = {**(case.path_parameters or {}), "partnerId": "acme-motors"}
    response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {token('acme-motors')}"})

    assert response.status_code < 500 or response.status_code == 503, (
        case.method,
        case.formatted_path,
        case.query,
        response.status_code,
        response.headers,
    )
    assert response.status_code in (200, 202, 400, 401, 403, 404, 503), response.text
    content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])
    assert str(content_type[0] if isinstance(content_type, list) else content_type).startswith("application/json")
