"""Real pre-signed S3 URLs, fetched over HTTP from moto's S3 in server mode on 127.0.0.1.

moto (5.x) serves pre-signed GETs but checks neither their signature nor their expiry, so a
URL fetched after it expired still works against it. The expiry tests therefore read the
URL itself: `X-Amz-Date` + `X-Amz-Expires` is the instant real S3 stops honouring it, and
that must be the payload's `expiresAt` (see `test_moto_does_not_enforce_expiry`, which
fails, and so tells us, the day moto starts enforcing it: then assert the 403 instead).
"""

import datetime as dt
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlparse

import boto3
import pytest

from distiller.adapters.file_links import FileLinks
from distiller.adapters.lookups import MongoLookups
from distiller.core.pipeline import deliveries_of, distill
from distiller_tools.world import in_memory_database
from tests.factories import as_change, oid, partner, raw_update

REGION = "us-east-2"
BUCKET = "pa-uploads-test"
PREFIX = "deal-docs/"
FRONT = b"\xff\xd8\xff\xe0 title front photo"
BACK = b"\xff\xd8\xff\xe0 title back photo"


@pytest.fixture(scope="module")
def endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        # moto keeps state per process: start from an empty S3
        fetch(f"{url}/moto-api/reset", method="POST")
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3(endpoint):
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    client.put_object(Bucket=BUCKET, Key=f"{PREFIX}deals/da/title-front.jpg", Body=FRONT)
    client.put_object(Bucket=BUCKET, Key=f"{PREFIX}deals/da/title-back.jpg", Body=BACK)
    return client


_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url, method="GET"):
    """GET (or POST) a loopback URL directly, never through a configured proxy."""
    assert url.startswith("http://127.0.0.1:"), f"refusing to fetch a non-loopback URL: {url}"
    with _no_proxy.open(urllib.request.Request(url, method=method), timeout=10) as response:
        return response.status, response.read()


def query_of(url):
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def amz_date(value):
    return dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def iso(value):
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def test_a_signed_link_fetches_the_object_before_it_expires(s3, endpoint):
    link = FileLinks(s3, BUCKET, PREFIX).link("deals/da/title-front.jpg", "title-front.jpg")

    assert link["filename"] == "title-front.jpg"
    assert link["signedUrl"].startswith(f"{endpoint}/{BUCKET}/{PREFIX}deals/da/title-front.jpg?")
    assert fetch(link["signedUrl"]) == (200, FRONT)


def test_an_unsigned_url_is_not_what_we_hand_out(s3):
    link = FileLinks(s3, BUCKET, PREFIX).link("deals/da/title-back.jpg", "title-back.jpg")

    query = query_of(link["signedUrl"])
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert {"X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"} <= set(query)


def test_the_url_expires_four_hours_after_issue_and_expires_at_says_so(s3):
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)

    link = FileLinks(s3, BUCKET, PREFIX).link("deals/da/title-front.jpg", "title-front.jpg")

    after = dt.datetime.now(dt.UTC)
    query = query_of(link["signedUrl"])
    assert query["X-Amz-Expires"] == str(4 * 3600)
    signed_at = amz_date(query["X-Amz-Date"])
    assert before <= signed_at <= after
    url_expiry = signed_at + dt.timedelta(seconds=int(query["X-Amz-Expires"]))
    assert abs(url_expiry - iso(link["expiresAt"])) < dt.timedelta(seconds=2)


def test_a_one_second_link_is_past_its_expiry_two_seconds_later(s3):
    link = FileLinks(s3, BUCKET, PREFIX, lifetime=dt.timedelta(seconds=1)).link(
        "deals/da/title-front.jpg", "title-front.jpg"
    )
    assert fetch(link["signedUrl"]) == (200, FRONT)

    time.sleep(2)

    query = query_of(link["signedUrl"])
    assert query["X-Amz-Expires"] == "1"
    now = dt.datetime.now(dt.UTC)
    assert amz_date(query["X-Amz-Date"]) + dt.timedelta(seconds=1) < now
    assert iso(link["expiresAt"]) < now


def test_moto_does_not_enforce_expiry(s3):
    """Pins the limitation the module docstring works around. If this starts failing because
    moto refuses the expired URL with 403, move that 403 assertion into the test above."""
    link = FileLinks(s3, BUCKET, PREFIX, lifetime=dt.timedelta(seconds=1)).link(
        "deals/da/title-front.jpg", "title-front.jpg"
    )
    time.sleep(2)

    try:
        status, _ = fetch(link["signedUrl"])
    except urllib.error.HTTPError as refused:  # what real S3 does: 403 "Request has expired"
        pytest.fail(f"moto now enforces presigned expiry (HTTP {refused.code}); assert the 403 instead")
    assert status == 200


def test_a_title_approved_change_yields_links_that_fetch_the_title_photos(s3):
    deal = {
        "_id": oid(0xDA),
        "guid": "d30d5242-c880-4534-8c51-0032dde02093",
        "status": "active",
        "appSource": "carmart",
        "buyer": {"id": oid(0xB1)},
        "seller": {"id": oid(0x51)},
        "titleAttachment": {
            "files": [
                {"key": "deals/da/title-front.jpg", "filename": "title-front.jpg"},
                "deals/da/title-back.jpg",
            ]
        },
    }
    done = {**deal, "titleAttachment": {**deal["titleAttachment"], "completedDate": dt.datetime.now(dt.UTC)}}
    change = raw_update(
        "deals",
        {"titleAttachment.completedDate": done["titleAttachment"]["completedDate"]},
        done,
        before=deal,
        document_id=deal["_id"],
    )
    lookups = MongoLookups(in_memory_database([partner("carmart", webhookScope="appSource")], {"deals": [deal]}))

    results = distill([as_change(change)], lookups, file_links=FileLinks(s3, BUCKET, PREFIX))

    [delivery] = deliveries_of(results)
    assert delivery.event == "deal.title_approved"
    documents = delivery.payload["documents"]
    assert [d["filename"] for d in documents] == ["title-front.jpg", "title-back.jpg"]
    assert [fetch(d["signedUrl"]) for d in documents] == [(200, FRONT), (200, BACK)]
    for d in documents:
        assert iso(d["expiresAt"]) - dt.datetime.now(dt.UTC) > dt.timedelta(hours=3, minutes=59)
