"""Document, signature and loan-payoff payloads, file references, and signed file links."""

import datetime as dt
import json
from urllib.parse import parse_qs, urlparse

import boto3
import pytest

from distiller.adapters.file_links import LINK_LIFETIME, FileLinks
from distiller.core.payloads import (
    approved_document_payload,
    file_refs,
    files_at,
    linked_deal_payload,
    loan_payoff_docs_payload,
    signature_payload,
)
from tests.factories import oid

T0 = dt.datetime(2026, 4, 21, 14, 0, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 4, 21, 14, 5, 30, 123456, tzinfo=dt.UTC)
DOC_ID, DEAL_A, DEAL_B, REPORT_ID = oid(0xD0C), oid(0xDA), oid(0xDB), oid(0xC8)

POA = {
    "_id": DOC_ID,
    "dealId": DEAL_A,
    "docClassification": "poa",
    "status": "signed",
    "manualSignatures": [
        {"signerRole": "seller", "userId": oid(0x51), "signedAt": T0},
        {"signerRole": "co-seller", "userId": oid(0x52), "signedAt": None},
        {"role": "buyer", "userId": oid(0xB1), "signedAt": T1},
    ],
}


def as_json(payload):
    """What the partner parses: the payload must be plain JSON."""
    return json.loads(json.dumps(payload))


# --- signature_payload ---


def test_signature_payload_lists_every_slot_with_null_until_signed():
    assert as_json(signature_payload(POA)) == {
        "id": str(DOC_ID),
        "dealId": str(DEAL_A),
        "docClassification": "poa",
        "signers": [
            {"signerRole": "seller", "signedAt": "2026-04-21T14:00:00.000Z"},
            {"signerRole": "co-seller", "signedAt": None},
            {"signerRole": "buyer", "signedAt": "2026-04-21T14:05:30.123Z"},
        ],
    }


def test_signature_payload_field_order_then_slot_when_given():
    payload = signature_payload(POA, {"slot": 2})

    assert list(payload) == ["id", "dealId", "docClassification", "signers", "slot"]
    assert payload["slot"] == 2


@pytest.mark.parametrize("detail", [None, {}], ids=["no-detail", "empty-detail"])
def test_signature_payload_has_no_slot_without_one(detail):
    assert "slot" not in signature_payload(POA, detail)


def test_slot_zero_is_kept():
    assert signature_payload(POA, {"slot": 0})["slot"] == 0


def test_generated_document_deal_id_is_its_first_shared_deal():
    bill_of_sale = {
        "_id": DOC_ID,
        "docClassification": "bill-of-sale",
        "sharedDeals": [DEAL_B, DEAL_A],
        "manualSignatures": [{"signerRole": "seller", "signedAt": None}],
    }

    assert signature_payload(bill_of_sale)["dealId"] == str(DEAL_B)


def test_signature_payload_of_a_document_without_signers_or_deal():
    assert as_json(signature_payload({"_id": DOC_ID})) == {
        "id": str(DOC_ID),
        "dealId": None,
        "docClassification": None,
        "signers": [],
    }


def test_signers_in_plain_json_mode_pass_through_strings():
    document = {**POA, "_id": str(DOC_ID), "dealId": str(DEAL_A)}
    document["manualSignatures"] = [{"signerRole": "seller", "signedAt": "2026-04-21T14:00:00.000Z"}]

    payload = signature_payload(document)

    assert payload["id"] == str(DOC_ID)
    assert payload["signers"] == [{"signerRole": "seller", "signedAt": "2026-04-21T14:00:00.000Z"}]


def test_a_malformed_slot_is_listed_with_nulls():
    document = {**POA, "manualSignatures": [None, {"signerRole": "buyer", "signedAt": T0}]}

    assert signature_payload(document)["signers"] == [
        {"signerRole": None, "signedAt": None},
        {"signerRole": "buyer", "signedAt": "2026-04-21T14:00:00.000Z"},
    ]


# --- approved_document_payload (deal.poa_approved / deal.bill_of_sale_approved) ---


def test_approved_document_payload_is_the_document_not_the_deal():
    payload = approved_document_payload(POA)

    assert list(payload) == ["id", "dealId", "status", "docClassification"]
    assert as_json(payload) == {
        "id": str(DOC_ID),
        "dealId": str(DEAL_A),
        "status": "signed",
        "docClassification": "poa",
    }


def test_approved_document_payload_ignores_the_slot_detail():
    assert "slot" not in approved_document_payload(POA, {"slot": 1})
    assert "signers" not in approved_document_payload(POA)


def test_approved_bill_of_sale_reads_its_deal_from_shared_deals():
    bill_of_sale = {"_id": DOC_ID, "sharedDeals": [DEAL_B], "status": "completed", "docClassification": "bill-of-sale"}

    assert approved_document_payload(bill_of_sale) == {
        "id": str(DOC_ID),
        "dealId": str(DEAL_B),
        "status": "completed",
        "docClassification": "bill-of-sale",
    }


# --- loan payoff payloads: deal payloads of the linked deal ---

LINKED_DEAL = {
    "_id": DEAL_A,
    "guid": "d30d5242-c880-4534-8c51-0032dde02093",
    "status": "active",
    "payment": {"privateAutoPay": {"amount": 18500}},
    "buyer": {"id": oid(0xB1)},
    "seller": {"id": oid(0x51)},
}
DEAL_FIELDS = {
    "guid": "d30d5242-c880-4534-8c51-0032dde02093",
    "status": "active",
    "amount": 18500,
    "buyerId": str(oid(0xB1)),
    "sellerId": str(oid(0x51)),
}


@pytest.mark.parametrize("deal_field", ["dealId", "deal"])
def test_loan_payoff_docs_payload_is_the_deal_payload_with_the_report_id(deal_field):
    report = {"_id": REPORT_ID, deal_field: DEAL_A, "manualPayoffInfo": {"status": "pending"}}

    payload = loan_payoff_docs_payload(report, None, LINKED_DEAL)

    assert list(payload) == ["id", "guid", "status", "amount", "buyerId", "sellerId", "dealId"]
    assert payload == {"id": str(REPORT_ID), **DEAL_FIELDS, "dealId": str(DEAL_A)}


def test_loan_payoff_docs_payload_status_is_the_deal_status_not_the_payoff_status():
    report = {"_id": REPORT_ID, "dealId": DEAL_A, "manualPayoffInfo": {"status": "pending"}}

    assert loan_payoff_docs_payload(report, None, {**LINKED_DEAL, "status": "sold"})["status"] == "sold"


def test_loan_payoff_confirmed_payload_is_an_ordinary_deal_payload():
    report = {"_id": REPORT_ID, "dealId": DEAL_A, "manualPayoffInfo": {"status": "confirmed"}}

    payload = linked_deal_payload(report, None, LINKED_DEAL)

    assert payload == {"id": str(DEAL_A), **DEAL_FIELDS}


def test_loan_payoff_payloads_without_a_linked_deal_name_every_field():
    report = {"_id": REPORT_ID, "dealId": DEAL_A}

    assert loan_payoff_docs_payload(report) == {
        "id": str(REPORT_ID),
        "guid": None,
        "status": None,
        "amount": None,
        "buyerId": None,
        "sellerId": None,
        "dealId": str(DEAL_A),
    }


# --- file_refs / files_at ---


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("deals/d1/title-front.jpg", [("deals/d1/title-front.jpg", "title-front.jpg")]),
        ("title-front.jpg", [("title-front.jpg", "title-front.jpg")]),
        (["a/1.jpg", "b/2.jpg"], [("a/1.jpg", "1.jpg"), ("b/2.jpg", "2.jpg")]),
        ({"key": "k/x.pdf", "filename": "X.pdf"}, [("k/x.pdf", "X.pdf")]),
        ({"fileKey": "k/x.pdf", "name": "X.pdf"}, [("k/x.pdf", "X.pdf")]),
        ({"s3Key": "k/x.pdf"}, [("k/x.pdf", "x.pdf")]),
        ({"fileUrl": "uploads/c8/payoff.pdf", "filename": "payoff.pdf"}, [("uploads/c8/payoff.pdf", "payoff.pdf")]),
        ({"key": "k/1.pdf", "fileKey": "k/2.pdf", "s3Key": "k/3.pdf", "fileUrl": "k/4.pdf"}, [("k/1.pdf", "1.pdf")]),
        ({"fileKey": "k/2.pdf", "s3Key": "k/3.pdf", "fileUrl": "k/4.pdf"}, [("k/2.pdf", "2.pdf")]),
        ({"s3Key": "k/3.pdf", "fileUrl": "k/4.pdf"}, [("k/3.pdf", "3.pdf")]),
        ({"filename": "f.pdf", "name": "n.pdf", "key": "k"}, [("k", "f.pdf")]),
        ({"filename": "", "name": "n.pdf", "key": "k"}, [("k", "n.pdf")]),
        ({"key": None, "fileKey": "k/2.pdf"}, [("k/2.pdf", "2.pdf")]),
        ({"key": 42, "fileUrl": "k/4.pdf"}, [("k/4.pdf", "4.pdf")]),
        ({"filename": "orphan.pdf"}, []),
        ({"key": ""}, []),
        ("", []),
        (None, []),
        ([], []),
        ([None, 7, "ok/z.pdf", {"name": "no-key"}], [("ok/z.pdf", "z.pdf")]),
    ],
    ids=[
        "string",
        "string-without-folder",
        "list-of-strings",
        "key+filename",
        "fileKey+name",
        "s3Key-alone-filename-from-key",
        "fileUrl+filename",
        "key-wins",
        "fileKey-before-s3Key",
        "s3Key-before-fileUrl",
        "filename-before-name",
        "empty-filename-falls-back-to-name",
        "null-key-skipped-for-next",
        "non-string-key-skipped",
        "no-key-skipped",
        "empty-key-skipped",
        "empty-string",
        "missing",
        "empty-list",
        "mixed-list",
    ],
)
def test_file_refs(value, expected):
    assert file_refs(value) == expected


def test_files_at_reads_the_first_present_path():
    read = files_at("titleAttachment.files", "titleAttachment.images")

    assert read({"titleAttachment": {"images": ["i/1.jpg"]}}) == [("i/1.jpg", "1.jpg")]
    assert read({"titleAttachment": {"files": ["f/1.jpg"], "images": ["i/1.jpg"]}}) == [("f/1.jpg", "1.jpg")]
    assert read({"titleAttachment": {"files": None, "images": ["i/1.jpg"]}}) == [("i/1.jpg", "1.jpg")]
    assert read({}) == []


# --- FileLinks ---


class RecordingS3:
    """Stands in for the boto3 client: records what would be presigned."""

    def __init__(self):
        self.calls = []

    def generate_presigned_url(self, operation, Params, ExpiresIn):
        self.calls.append((operation, Params, ExpiresIn))
        return f"https://{Params['Bucket']}.s3.us-east-2.amazonaws.com/{Params['Key']}?X-Amz-Expires={ExpiresIn}"


def fixed(instant):
    return lambda: instant


@pytest.mark.parametrize(
    ("prefix", "key", "expected"),
    [
        ("deal-docs/", "deals/d1/title-front.jpg", "deal-docs/deals/d1/title-front.jpg"),
        ("deal-docs/", "/deals/d1/title-front.jpg", "deal-docs/deals/d1/title-front.jpg"),
        ("deal-docs/", "deal-docs/deals/d1/title-front.jpg", "deal-docs/deals/d1/title-front.jpg"),
        ("", "deals/d1/title-front.jpg", "deals/d1/title-front.jpg"),
        ("", "/deals/d1/title-front.jpg", "deals/d1/title-front.jpg"),
    ],
    ids=["prefixed", "leading-slash-stripped", "already-prefixed-kept", "no-prefix", "no-prefix-leading-slash"],
)
def test_object_key(prefix, key, expected):
    assert FileLinks(RecordingS3(), "pa-uploads", prefix).object_key(key) == expected


def test_link_shape_and_expiry_four_hours_after_the_clock():
    s3 = RecordingS3()
    links = FileLinks(s3, "pa-uploads", "deal-docs/", clock=fixed(T0))

    link = links.link("deals/d1/title-front.jpg", "title-front.jpg")

    assert list(link) == ["filename", "signedUrl", "expiresAt"]
    assert link == {
        "filename": "title-front.jpg",
        "signedUrl": "https://pa-uploads.s3.us-east-2.amazonaws.com/deal-docs/deals/d1/title-front.jpg?X-Amz-Expires=14400",
        "expiresAt": "2026-04-21T18:00:00.000Z",
    }
    assert s3.calls == [("get_object", {"Bucket": "pa-uploads", "Key": "deal-docs/deals/d1/title-front.jpg"}, 4 * 3600)]
    assert dt.timedelta(hours=4) == LINK_LIFETIME


def test_expires_at_is_iso_utc_with_milliseconds_and_z_from_any_timezone():
    eastern = dt.timezone(dt.timedelta(hours=-4))
    issued = dt.datetime(2026, 4, 21, 22, 30, 15, 987654, tzinfo=eastern)  # 02:30:15.987 UTC next day

    link = FileLinks(RecordingS3(), "pa-uploads", clock=fixed(issued)).link("k", "f")

    assert link["expiresAt"] == "2026-04-22T06:30:15.987Z"


def test_each_link_reads_the_clock_when_it_is_made():
    instants = iter([T0, T0 + dt.timedelta(minutes=1)])
    links = FileLinks(RecordingS3(), "pa-uploads", clock=lambda: next(instants))

    first, second = links.link("a", "a"), links.link("b", "b")

    assert (first["expiresAt"], second["expiresAt"]) == ("2026-04-21T18:00:00.000Z", "2026-04-21T18:01:00.000Z")


def test_a_custom_lifetime_sets_both_the_url_and_expires_at():
    s3 = RecordingS3()
    links = FileLinks(s3, "pa-uploads", lifetime=dt.timedelta(minutes=15), clock=fixed(T0))

    link = links.link("k", "f")

    assert link["expiresAt"] == "2026-04-21T14:15:00.000Z"
    assert s3.calls[0][2] == 900


def test_a_bucket_is_required():
    with pytest.raises(ValueError, match="bucket"):
        FileLinks(RecordingS3(), "")


def test_real_boto3_presigned_url_is_a_sigv4_get_for_four_hours():
    """Presigning is a local computation: no request is made, so this runs without any endpoint."""
    client = boto3.client(
        "s3", region_name="us-east-2", aws_access_key_id="AKIATESTING", aws_secret_access_key="testing-secret"
    )
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)

    link = FileLinks(client, "pa-uploads", "deal-docs/").link("deals/d1/title-front.jpg", "title-front.jpg")

    url = urlparse(link["signedUrl"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.scheme == "https"
    assert url.hostname is not None and url.hostname.startswith("pa-uploads.s3")
    assert url.path == "/deal-docs/deals/d1/title-front.jpg"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "14400"
    assert query["X-Amz-Credential"].startswith("AKIATESTING/")
    assert "/us-east-2/s3/aws4_request" in query["X-Amz-Credential"]
    signed_at = dt.datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    expires_at = dt.datetime.strptime(link["expiresAt"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    assert before <= signed_at <= dt.datetime.now(dt.UTC)
    # the URL stops working when the payload says it does (to the second the URL can express)
    assert abs((signed_at + dt.timedelta(seconds=14400)) - expires_at) < dt.timedelta(seconds=2)
