"""Property-based fuzzing of the partner API (/data, /sell, /leads) with schemathesis, from docs/openapi.json.

Every generated request goes to the local API on 127.0.0.1 (the same handler as Lambda) with a
valid token for a real partner; whatever the query, path and ids, the answer is never a 5xx.

The in-memory database is laxer than the real driver, so the server's cursors are made as strict
as pymongo about integers (a `skip` beyond 64 bits is an `OverflowError` there), and dates and
integers get explicit boundary strategies: the extremes of what a datetime holds, with the
extreme UTC offsets, and the edges of 32- and 64-bit integers.
"""

import datetime as dt
import threading
import urllib.parse
from pathlib import Path

import bson
import mongomock
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distiller.api.rate_limit import RateLimit
from distiller.api.routes import ApiLimits
from tests.integration.test_api import EVENTS, call, sample_partners, token

ROOT = Path(__file__).resolve().parents[2]
schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json")

OFFSETS = [dt.timedelta(hours=h) for h in (14, -14, 0, 5.5, -12)]
BOUNDARY_INSTANTS = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "0001-01-01T00:00:00-14:00",
            "9999-12-31T23:59:59-14:00",
            "9999-12-31T23:59:59.999999+14:00",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "9999-12-30T00:00:00Z",
            "0001-01-01",
            "9999-12-31",
        ]
    ),
    st.builds(
        lambda moment, offset: moment.replace(tzinfo=dt.timezone(offset)).isoformat(),
        st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
        st.sampled_from(OFFSETS),
    ),
    st.datetimes().map(lambda moment: moment.isoformat()),
)
INT_EDGES = [0, 1, -1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30]
BOUNDARY_INTS = st.one_of(st.sampled_from(INT_EDGES), st.integers())

schemathesis.openapi.format("date-time", BOUNDARY_INSTANTS)


class StrictCursor(mongomock.collection.Cursor):
    """pymongo encodes `skip`/`limit` as BSON integers: beyond 64 bits it raises."""

    def skip(self, count):
        bson.encode({"skip": count})
        return super().skip(count)

    def limit(self, count):
        bson.encode({"limit": count})
        return super().limit(count)


@pytest.fixture(scope="module")
def base_url():

    from distiller_tools.local.api_server import start
    from distiller_tools.world import in_memory_database, load_world

    partners = sample_partners()
    database = in_memory_database(partners, load_world(EVENTS / "world.json"))
    unlimited = ApiLimits(RateLimit(10**9, 1), RateLimit(10**9, 1))  # the fuzzer is one very busy partner
    server = start(0, database, partners, open("/dev/null", "w"), unlimited)  # noqa: SIM115 - lives as long as the server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mongomock.collection, "Cursor", StrictCursor)
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
    assert response.status_code in (200, 201, 202, 302, 400, 401, 403, 404, 409, 429, 503), response.text
    if response.status_code == 302:  # GET /sell's redirect: a Location, no body
        assert response.headers.get("Location") or response.headers.get("location")
        return
    content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])
    assert str(content_type[0] if isinstance(content_type, list) else content_type).startswith("application/json")


def get(base_url: str, path: str, **query: object) -> tuple[int, dict]:
    url = f"{base_url}{path}?{urllib.parse.urlencode(query)}"
    return call(url, headers={"Authorization": f"Bearer {token('acme-motors')}"})


@given(date_from=BOUNDARY_INSTANTS, date_to=BOUNDARY_INSTANTS)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_boundary_dates_are_answered_or_refused_by_name(base_url, date_from, date_to):
    status, body = get(base_url, "/data/webhook-deliveries/acme-motors", dateFrom=date_from, dateTo=date_to)

    assert status in (200, 400), (date_from, date_to, status, body)
    if status == 400:
        assert body["error"].split(":")[0] in ("dateFrom", "dateTo"), body


@pytest.mark.parametrize("family", ["deals", "offers", "listings", "webhook-deliveries"])
@given(page=BOUNDARY_INTS, limit=BOUNDARY_INTS)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_boundary_page_numbers_are_answered_or_refused_by_name(base_url, family, page, limit):
    status, body = get(base_url, f"/data/{family}/acme-motors", _page=page, _limit=limit)

    assert status in (200, 400), (page, limit, status, body)
    if status == 400:
        assert body["error"].split(":")[0] in ("_page", "_limit"), body
    else:
        assert body["_meta"]["page"] == page and body["_meta"]["limit"] == min(limit, 100)


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        pytest.param({"dateFrom": "0001-01-01T00:00:00+14:00"}, "dateFrom", id="year-1-east-of-utc"),
        pytest.param({"dateTo": "9999-12-31T23:59:59-14:00"}, "dateTo", id="year-9999-west-of-utc"),
        pytest.param({"_page": 2**62}, "_page", id="skip-beyond-int64"),
        pytest.param({"_page": 10**7, "_limit": 100}, "_page", id="page-deeper-than-allowed"),
        pytest.param({"event": "x" * 129}, "event", id="event-too-long"),
    ],
)
def test_hostile_query_values_are_400_naming_the_parameter(base_url, query, parameter):
    status, body = get(base_url, "/data/webhook-deliveries/acme-motors", **query)

    assert status == 400 and body["error"].startswith(parameter), body
