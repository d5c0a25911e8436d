"""Documents, generated documents and credit reports route through their deals.

Everything goes through `distiller.core.pipeline.distill` with the real `MongoLookups` repository
over an in-memory world (the CLI's database), so the deal lookups are real queries.
"""

import datetime as dt

import pytest
from bson import ObjectId

from distiller.adapters.file_links import FileLinks
from distiller.adapters.lookups import MongoLookups
from distiller.core.model import RecordError
from distiller.core.pipeline import ChangeOutcome, deliveries_of, distill
from distiller_tools.world import in_memory_database
from tests.factories import CountingDatabase, as_change, oid, partner, raw_insert, raw_update

T0 = dt.datetime(2026, 4, 21, 14, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)
EMITTED = dt.datetime(2026, 4, 21, 15, 0, tzinfo=dt.UTC)

ORG_BUYER = "67e446a09d2eb254a3b130e7"
ORG_SELLER = "67e446a09d2eb254a3b130e8"
ORG_OTHER = "67e446a09d2eb254a3b130e9"

DEAL_A, DEAL_B, DEAL_C, MISSING_DEAL = oid(0xDA), oid(0xDB), oid(0xDC), oid(0xDEAD)
POA_ID, BOS_ID = oid(0xD0C), oid(0xB05)

DEALS = [
    # C2D through carmart's branded flow: a dealer (ORG_BUYER) buys from a consumer
    {"_id": DEAL_A, "appSource": "carmart", "buyer": {"id": oid(0xB1), "organizationId": ObjectId(ORG_BUYER)}},
    # D2C: a dealer (ORG_SELLER) sells to a consumer, no appSource
    {"_id": DEAL_B, "buyer": {"id": oid(0xB2)}, "seller": {"id": oid(0x52), "organizationId": ORG_SELLER}},
    # C2C, no partner anywhere
    {"_id": DEAL_C, "buyer": {"id": oid(0xB3)}, "seller": {"id": oid(0x53)}},
]

PARTNERS = [
    partner("bayside", organizationId=ORG_BUYER, webhookScope="organization"),
    partner("bayside-appsource-only", organizationId=ORG_BUYER, webhookScope="appSource"),
    partner("carmart", webhookScope="appSource"),
    partner("docs-only", organizationId=ORG_BUYER, events=["document.*"]),
    partner("sellco", organizationId=ORG_SELLER),
    partner("sleepy", organizationId=ORG_BUYER, active=False),
    partner("stranger", organizationId=ORG_OTHER),
]


class RecordingS3:
    """Stands in for boto3's S3 client: presigning is local, so this is all FileLinks needs."""

    def generate_presigned_url(self, operation, Params, ExpiresIn):
        return f"https://{Params['Bucket']}.s3.us-east-2.amazonaws.com/{Params['Key']}?X-Amz-Expires={ExpiresIn}"


def file_links():
    return FileLinks(RecordingS3(), "pa-uploads", "deal-docs/", clock=lambda: EMITTED)


def lookups(partners=PARTNERS, deals=DEALS, **world):
    return MongoLookups(in_memory_database(partners, {"deals": deals, **world}))


def slot(role, signed_at=None):
    return {"signerRole": role, "signedAt": signed_at}


def poa(deal_id=DEAL_A, doc_id=POA_ID):
    """A POA whose buyer is about to sign: seller signed, buyer not yet."""
    document = {
        "_id": doc_id,
        "docClassification": "poa",
        "status": "pending",
        "manualSignatures": [slot("seller", T0), slot("buyer")],
        "signed": [{"key": "documents/d0c/signed_poa.pdf", "filename": "signed_poa.pdf"}],
    }
    if deal_id is not None:
        document["dealId"] = deal_id
    return document


def bill_of_sale(shared_deals, doc_id=BOS_ID):
    return {
        "_id": doc_id,
        "docClassification": "bill-of-sale",
        "status": "pending",
        "sharedDeals": list(shared_deals),
        "manualSignatures": [slot("seller", T0), slot("buyer")],
        "signed": ["generated/b05/bill-of-sale.pdf"],
    }


def last_signature(collection, document, token=None):
    """The update that signs slot 1 (the last one) of `document`, with pre- and post-image."""
    after = {**document, "status": "signed", "manualSignatures": [slot("seller", T0), slot("buyer", T1)]}
    return raw_update(
        collection,
        {"manualSignatures.1.signedAt": T1, "status": "signed"},
        after,
        before=document,
        document_id=document["_id"],
        token=token,
    )


def first_signature(collection, document):
    after = {**document, "manualSignatures": [slot("seller", T0), slot("buyer")]}
    before = {**document, "manualSignatures": [slot("seller"), slot("buyer")]}
    return raw_update(
        collection, {"manualSignatures.0.signedAt": T0}, after, before=before, document_id=document["_id"]
    )


def credit_report(deal_id=DEAL_B, collection="credit_reports"):
    report = {"_id": oid(0xC8), "dealId": deal_id, "manualPayoffInfo": {"status": "pending", "loanPayoffDocuments": []}}
    uploaded = {
        "_id": oid(0xC8),
        "dealId": deal_id,
        "manualPayoffInfo": {
            "status": "pending",
            "loanPayoffDocuments": [{"fileUrl": "uploads/c8/payoff-letter.pdf", "filename": "payoff-letter.pdf"}],
        },
    }
    return raw_update(
        collection,
        {"manualPayoffInfo.loanPayoffDocuments.0": uploaded["manualPayoffInfo"]["loanPayoffDocuments"][0]},
        uploaded,
        before=report,
        document_id=report["_id"],
    )


def delivered(results):
    """partner → [(event, dealId)] in delivery order."""
    by_partner = {}
    for d in deliveries_of(results):
        by_partner.setdefault(d.partner_id, []).append((d.event, d.payload.get("dealId")))
    return by_partner


SIGNED_TO_THE_END = ["document.signature_added", "document.completed"]


def test_a_document_routes_through_its_deal_per_partner_scope():
    results = distill([as_change(last_signature("documents", poa(DEAL_A)))], lookups())

    a = str(DEAL_A)
    assert delivered(results) == {
        # organization scope: deal A's buyer is in ORG_BUYER
        "bayside": [(e, a) for e in [*SIGNED_TO_THE_END, "deal.poa_approved"]],
        # appSource scope: deal A's appSource is carmart
        "carmart": [(e, a) for e in [*SIGNED_TO_THE_END, "deal.poa_approved"]],
        # subscribed to document.* only: the forward-compatible subscription skips the legacy event
        "docs-only": [(e, a) for e in SIGNED_TO_THE_END],
    }


def test_a_document_on_a_sellers_deal_reaches_the_seller_org():
    results = distill([as_change(last_signature("documents", poa(DEAL_B)))], lookups())

    assert set(delivered(results)) == {"sellco"}


def test_a_document_on_a_deal_with_no_partner_link_reaches_nobody():
    [outcome] = distill([as_change(last_signature("documents", poa(DEAL_C)))], lookups())

    assert isinstance(outcome, ChangeOutcome)
    assert [e.event for e in outcome.events] == [*SIGNED_TO_THE_END, "deal.poa_approved"]
    assert outcome.deliveries == []


def test_payload_fields_and_entity_types():
    results = distill(
        [
            as_change(last_signature("documents", poa(DEAL_A)), origin="poa"),
            as_change(last_signature("platoforms_generated_documents", bill_of_sale([DEAL_A])), origin="bos"),
        ],
        lookups(),
        file_links=file_links(),
    )

    carmart = [d for d in deliveries_of(results) if d.partner_id == "carmart"]
    by_event = {(d.payload["entityType"], d.event): d.payload for d in carmart}
    signature = by_event[("documents", "document.signature_added")]
    assert list(signature) == [
        "id",
        "eventId",
        "eventKey",
        "entityType",
        "dealId",
        "docClassification",
        "signers",
        "slot",
    ]
    assert signature["id"] == str(oid(0xD0C))
    assert signature["slot"] == 1
    assert signature["signers"] == [
        {"signerRole": "seller", "signedAt": "2026-04-21T14:00:00.000Z"},
        {"signerRole": "buyer", "signedAt": "2026-04-21T14:05:00.000Z"},
    ]
    approved = by_event[("documents", "deal.poa_approved")]
    assert list(approved) == [
        "id",
        "eventId",
        "eventKey",
        "entityType",
        "dealId",
        "status",
        "docClassification",
        "documents",
    ]
    assert approved["status"] == "signed"
    assert approved["docClassification"] == "poa"
    bos = by_event[("platoforms_generated_documents", "deal.bill_of_sale_approved")]
    assert bos["id"] == str(oid(0xB05))
    assert bos["dealId"] == str(DEAL_A)
    assert bos["docClassification"] == "bill-of-sale"
    assert {d.event for d in carmart} == {
        "document.signature_added",
        "document.completed",
        "deal.poa_approved",
        "deal.bill_of_sale_approved",
    }
    for d in carmart:
        assert d.payload["eventId"] == d.event_id
        assert d.payload["eventKey"] == d.event_key


def test_a_bill_of_sale_on_two_deals_reaches_each_partner_with_its_own_deal():
    results = distill(
        [as_change(last_signature("platoforms_generated_documents", bill_of_sale([DEAL_A, DEAL_B])))], lookups()
    )

    events = [*SIGNED_TO_THE_END, "deal.bill_of_sale_approved"]
    assert delivered(results) == {
        "bayside": [(e, str(DEAL_A)) for e in events],
        "carmart": [(e, str(DEAL_A)) for e in events],
        "docs-only": [(e, str(DEAL_A)) for e in SIGNED_TO_THE_END],
        "sellco": [(e, str(DEAL_B)) for e in events],  # one delivery per event, with deal B
    }


@pytest.mark.parametrize(("order", "expected"), [((DEAL_A, DEAL_B), DEAL_A), ((DEAL_B, DEAL_A), DEAL_B)])
def test_a_partner_on_both_shared_deals_gets_one_delivery_with_the_first_deal(order, expected):
    both_buyer_side = [
        {"_id": DEAL_A, "buyer": {"organizationId": ORG_BUYER}},
        {"_id": DEAL_B, "buyer": {"organizationId": ORG_BUYER}},
    ]
    results = distill(
        [as_change(last_signature("platoforms_generated_documents", bill_of_sale(order)))],
        lookups(partners=[partner("bayside", organizationId=ORG_BUYER)], deals=both_buyer_side),
    )

    assert delivered(results) == {
        "bayside": [(e, str(expected)) for e in [*SIGNED_TO_THE_END, "deal.bill_of_sale_approved"]]
    }


def test_linked_deals_of_a_whole_batch_are_fetched_in_one_query():
    database = CountingDatabase(in_memory_database(PARTNERS, {"deals": DEALS}))
    batch = [
        as_change(last_signature("documents", poa(DEAL_A, doc_id=oid(0xD01)))),
        as_change(first_signature("documents", poa(DEAL_B, doc_id=oid(0xD02)))),
        as_change(last_signature("platoforms_generated_documents", bill_of_sale([DEAL_A, DEAL_C]))),
        as_change(credit_report(DEAL_B)),
        as_change(credit_report(DEAL_C, collection="creditreports")),
        as_change(raw_insert("deals", DEALS[0])),
    ]

    results = distill(batch, MongoLookups(database))

    assert all(isinstance(r, ChangeOutcome) for r in results)
    assert database.finds == {"deals": 1, "partners": 1}
    assert all(r.deliveries or r.change.collection == "creditreports" for r in results)


def test_a_document_whose_deal_is_missing_is_a_retryable_error_not_dropped():
    batch = [
        as_change(last_signature("documents", poa(MISSING_DEAL)), origin="line 1"),
        as_change(last_signature("documents", poa(DEAL_A, doc_id=oid(0xD02))), origin="line 2"),
    ]

    error, fine = distill(batch, lookups())

    assert isinstance(error, RecordError)
    assert error.retryable is True
    assert error.origin == "line 1"
    assert str(MISSING_DEAL) in error.reason
    assert isinstance(fine, ChangeOutcome) and fine.deliveries


def test_a_bill_of_sale_with_one_missing_shared_deal_names_only_that_deal():
    [error] = distill(
        [as_change(last_signature("platoforms_generated_documents", bill_of_sale([DEAL_A, MISSING_DEAL])))], lookups()
    )

    assert isinstance(error, RecordError) and error.retryable
    assert str(MISSING_DEAL) in error.reason
    assert str(DEAL_A) not in error.reason


def test_a_credit_report_whose_deal_is_missing_is_a_retryable_error():
    [error] = distill([as_change(credit_report(MISSING_DEAL))], lookups())

    assert isinstance(error, RecordError) and error.retryable
    assert str(MISSING_DEAL) in error.reason


def test_a_document_without_any_deal_link_produces_events_routed_to_nobody():
    [outcome] = distill([as_change(last_signature("documents", poa(deal_id=None)))], lookups())

    assert isinstance(outcome, ChangeOutcome)
    assert [e.event for e in outcome.events] == [*SIGNED_TO_THE_END, "deal.poa_approved"]
    assert outcome.deliveries == []

    [explained] = distill([as_change(last_signature("documents", poa(deal_id=None)))], lookups(), explain=True)
    report = explained.explain()
    assert "routed to nobody" in report["note"]
    assert report["partners"] and not any(p["routed"] for p in report["partners"])
    assert report["deliveries"] == 0


def test_explain_names_the_linked_deals_and_whether_they_were_found():
    [outcome] = distill(
        [as_change(last_signature("platoforms_generated_documents", bill_of_sale([DEAL_A, DEAL_B])))],
        lookups(),
        explain=True,
    )

    report = outcome.explain()
    assert report["linkedDeals"] == [{"dealId": str(DEAL_A), "found": True}, {"dealId": str(DEAL_B), "found": True}]
    routed = {p["partnerId"]: p for p in report["partners"]}
    assert routed["sellco"]["routed"] is True
    assert f"deal {DEAL_B}" in routed["sellco"]["why"]
    assert routed["stranger"]["routed"] is False
    assert [e["event"] for e in report["events"]] == [*SIGNED_TO_THE_END, "deal.bill_of_sale_approved"]
    assert report["events"][0]["slot"] == 1


def test_documents_array_only_on_the_legacy_and_file_rows_with_links_from_the_file_links_given():
    links = file_links()
    batch = [
        as_change(last_signature("documents", poa(DEAL_A)), origin="poa"),
        as_change(last_signature("platoforms_generated_documents", bill_of_sale([DEAL_A])), origin="bos"),
        as_change(credit_report(DEAL_A), origin="payoff"),
    ]

    results = distill(batch, lookups(), file_links=links)

    carmart = {
        (d.payload["entityType"], d.event): d.payload for d in deliveries_of(results) if d.partner_id == "carmart"
    }
    carrying = sorted(key for key, payload in carmart.items() if "documents" in payload)
    assert carrying == [
        ("credit_reports", "deal.loan_payoff_docs"),
        ("documents", "deal.poa_approved"),
        ("platoforms_generated_documents", "deal.bill_of_sale_approved"),
    ]
    expected_links = {
        ("documents", "deal.poa_approved"): [links.link("documents/d0c/signed_poa.pdf", "signed_poa.pdf")],
        ("platoforms_generated_documents", "deal.bill_of_sale_approved"): [
            links.link("generated/b05/bill-of-sale.pdf", "bill-of-sale.pdf")
        ],
        ("credit_reports", "deal.loan_payoff_docs"): [links.link("uploads/c8/payoff-letter.pdf", "payoff-letter.pdf")],
    }
    for key, documents in expected_links.items():
        assert carmart[key]["documents"] == documents
    poa_link = carmart[("documents", "deal.poa_approved")]["documents"][0]
    assert poa_link == {
        "filename": "signed_poa.pdf",
        "signedUrl": "https://pa-uploads.s3.us-east-2.amazonaws.com/deal-docs/documents/d0c/signed_poa.pdf?X-Amz-Expires=14400",
        "expiresAt": "2026-04-21T19:00:00.000Z",
    }
    payoff = carmart[("credit_reports", "deal.loan_payoff_docs")]
    assert payoff["id"] == str(oid(0xC8))  # the credit report, not the deal
    assert payoff["dealId"] == str(DEAL_A)


def test_without_file_links_the_files_are_named_only():
    results = distill([as_change(last_signature("documents", poa(DEAL_A)))], lookups())

    [approved] = [d for d in deliveries_of(results) if d.partner_id == "carmart" and d.event == "deal.poa_approved"]
    assert approved.payload["documents"] == [{"filename": "signed_poa.pdf", "signedUrl": None, "expiresAt": None}]


def test_deal_title_event_carries_signed_title_photos():
    deal = {**DEALS[0], "titleAttachment": {"files": ["deals/da/title-front.jpg", "deals/da/title-back.jpg"]}}
    change = raw_update(
        "deals",
        {"titleAttachment.completedDate": T1},
        {**deal, "titleAttachment": {**deal["titleAttachment"], "completedDate": T1}},
        before=deal,
        document_id=DEAL_A,
    )
    links = file_links()

    results = distill([as_change(change)], lookups(), file_links=links)

    [title] = [d for d in deliveries_of(results) if d.partner_id == "carmart"]
    assert title.event == "deal.title_approved"
    assert title.payload["entityType"] == "deals"
    assert title.payload["documents"] == [
        links.link("deals/da/title-front.jpg", "title-front.jpg"),
        links.link("deals/da/title-back.jpg", "title-back.jpg"),
    ]


def test_the_creditreports_spelling_is_distilled_as_credit_reports():
    results = distill([as_change(credit_report(DEAL_A, collection="creditreports"))], lookups())

    payloads = {d.payload["entityType"] for d in deliveries_of(results)}
    assert payloads == {"credit_reports"}
    assert {d.partner_id for d in deliveries_of(results)} == {"bayside", "carmart"}


def test_a_document_update_without_full_document_is_looked_up_then_routed():
    stored = {**poa(DEAL_A), "manualSignatures": [slot("seller", T0), slot("buyer", T1)], "status": "signed"}
    change = raw_update("documents", {"manualSignatures.1.signedAt": T1}, None, document_id=stored["_id"])
    database = CountingDatabase(in_memory_database(PARTNERS, {"deals": DEALS, "documents": [stored]}))

    results = distill([as_change(change)], MongoLookups(database))

    assert database.finds == {"documents": 1, "deals": 1, "partners": 1}
    assert "carmart" in delivered(results)


def test_plain_json_mode_string_ids_link_to_deals_stored_with_object_ids():
    """Atlas's plain-JSON mode sends ObjectIds as hex strings; the deal lookup matches both forms."""
    document = {**poa(deal_id=str(DEAL_A)), "_id": str(POA_ID)}
    generated = {**bill_of_sale([str(DEAL_A), str(DEAL_B)]), "_id": str(BOS_ID)}

    results = distill(
        [
            as_change(last_signature("documents", document)),
            as_change(last_signature("platoforms_generated_documents", generated)),
        ],
        lookups(),
    )

    assert all(isinstance(r, ChangeOutcome) for r in results)
    by_partner = delivered(results)
    assert {deal for _, deal in by_partner["carmart"]} == {str(DEAL_A)}
    assert {deal for _, deal in by_partner["sellco"]} == {str(DEAL_B)}


# --- loan payoff events are deal events of the linked deal (spec: "deal.* | id (deal _id)") ---

PAYOFF_DEAL = {
    "_id": DEAL_A,
    "guid": "d30d5242-c880-4534-8c51-0032dde02093",
    "status": "active",
    "appSource": "carmart",
    "payment": {"privateAutoPay": {"amount": 18500}},
    "buyer": {"id": oid(0xB1), "organizationId": ObjectId(ORG_BUYER)},
    "seller": {"id": oid(0x51)},
}
PAYOFF_DEAL_FIELDS = {
    "guid": "d30d5242-c880-4534-8c51-0032dde02093",
    "status": "active",
    "amount": 18500,
    "buyerId": str(oid(0xB1)),
    "sellerId": str(oid(0x51)),
}


def payoff_confirmed(deal_id=DEAL_A, status="confirmed"):
    before = {"_id": oid(0xC8), "dealId": deal_id, "manualPayoffInfo": {"status": "pending"}}
    after = {**before, "manualPayoffInfo": {"status": status}}
    return raw_update(
        "credit_reports", {"manualPayoffInfo.status": status}, after, before=before, document_id=before["_id"]
    )


def carmart_payload(raw, event):
    results = distill([as_change(raw)], lookups(deals=[PAYOFF_DEAL, *DEALS[1:]]))
    [delivery] = [d for d in deliveries_of(results) if d.partner_id == "carmart" and d.event == event]
    return delivery.payload


def test_deal_loan_payoff_confirmed_is_the_linked_deals_payload():
    payload = carmart_payload(payoff_confirmed(), "deal.loan_payoff_confirmed")

    assert payload["id"] == str(DEAL_A)  # the deal, not the credit report
    assert payload["entityType"] == "deals"
    assert {k: payload[k] for k in PAYOFF_DEAL_FIELDS} == PAYOFF_DEAL_FIELDS
    assert set(payload) == {"id", "eventId", "eventKey", "entityType", *PAYOFF_DEAL_FIELDS}


def test_deal_loan_payoff_confirmed_fires_on_an_upper_case_status():
    payload = carmart_payload(payoff_confirmed(status="CONFIRMED"), "deal.loan_payoff_confirmed")

    assert payload["status"] == "active"  # the deal's status, not the payoff's


def test_deal_loan_payoff_docs_keeps_the_report_id_and_carries_the_deal_payload():
    payload = carmart_payload(credit_report(DEAL_A), "deal.loan_payoff_docs")

    assert payload["id"] == str(oid(0xC8))  # the spec's stated exception: the credit report
    assert payload["entityType"] == "credit_reports"
    assert payload["dealId"] == str(DEAL_A)
    assert {k: payload[k] for k in PAYOFF_DEAL_FIELDS} == PAYOFF_DEAL_FIELDS
    assert payload["documents"] == [{"filename": "payoff-letter.pdf", "signedUrl": None, "expiresAt": None}]


# --- a deal routes on its originating offer's appSource too (and so do its documents) ---

OFFER_ID = oid(0x0FF)
OFFER = {"_id": OFFER_ID, "appSource": "carmart", "status": "accepted"}
DEAL_BY_OFFER = {"_id": oid(0xDF), "offerId": OFFER_ID, "status": "active", "buyer": {"id": oid(0xB9)}}


def test_a_deal_without_appSource_routes_by_its_offers_appSource():
    raw = raw_update(
        "deals",
        {"status": "sold"},
        {**DEAL_BY_OFFER, "status": "sold"},
        before=DEAL_BY_OFFER,
        document_id=DEAL_BY_OFFER["_id"],
    )

    results = distill([as_change(raw)], lookups(deals=[*DEALS, DEAL_BY_OFFER], offers=[OFFER]), explain=True)

    [outcome] = results
    assert {d.partner_id for d in outcome.deliveries} == {"carmart"}
    why = {p.partner_id: p.why for p in outcome.partners}
    assert why["carmart"] == "scope appSource: offerId→offers.appSource = 'carmart'"


def test_a_document_routes_through_its_deals_offer():
    results = distill(
        [as_change(last_signature("documents", poa(DEAL_BY_OFFER["_id"])))],
        lookups(deals=[*DEALS, DEAL_BY_OFFER], offers=[OFFER]),
    )

    assert {d.partner_id for d in deliveries_of(results)} == {"carmart"}
    assert {d.payload["dealId"] for d in deliveries_of(results)} == {str(DEAL_BY_OFFER["_id"])}


def test_offers_are_looked_up_once_per_batch():
    database = in_memory_database(PARTNERS, {"deals": [*DEALS, DEAL_BY_OFFER], "offers": [OFFER]})
    counting = MongoLookups(database)
    calls = []
    original = counting.documents
    counting.documents = lambda collection, ids: calls.append((collection, set(ids))) or original(collection, ids)
    batch = [as_change(last_signature("documents", poa(DEAL_BY_OFFER["_id"], doc_id=oid(0xD0C + n)))) for n in range(3)]

    distill(batch, counting)

    assert [c for c, _ in calls].count("offers") == 1
    assert calls[-1] == ("offers", {str(OFFER_ID)})
