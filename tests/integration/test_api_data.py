"""Partner-scoped /data reads over an in-memory world (mongomock).

The world is the sample one (`events/partners.json`, `events/world.json`) plus offers,
documents, generated documents and delivery-log entries inserted here. What a partner reads
must be exactly what the distiller's router would deliver to it: every scope × family is
pinned entity by entity, partners never see each other's data through any method, and a
property test checks the Mongo scope filter against `routing.matched_link` on random documents.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mongomock
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distiller.adapters.file_links import FileLinks
from distiller.adapters.lookups import MongoLookups
from distiller.api.data import Page, PartnerData
from distiller.api.dto import delivery_dto
from distiller.api.scope import scope_filter
from distiller.core.partners import Partner
from distiller.core.routing import ROUTING_FIELDS, matched_link, references, routing_keys
from distiller.deliver.log import DELIVERIES_COLLECTION, DeliveryAttempt
from distiller_tools.world import in_memory_database, load_partners, load_world
from tests.factories import oid

ROOT = Path(__file__).resolve().parents[2]

ORG_ACME = "663a1f2b4e8c9a001234abcd"
ORG_BAYSIDE = "663a1f2b4e8c9a001234bcde"
ORG_LENDCO = "663a1f2b4e8c9a001234cdef"
ORG_OTHER = "67e446a09d2eb254a3b130e9"

# The sample world's entities (events/world.json)
D03, D13, D23, D34, D44 = (ObjectId(f"66240a11c3d9e400000000{n}") for n in ("03", "13", "23", "34", "44"))
L01, L11, L21, L31, L41 = (ObjectId(f"66240a11c3d9e400000000{n}") for n in ("01", "11", "21", "31", "41"))
USER_A01 = ObjectId("6614a0c1e4b0a10000000a01")  # in ORG_ACME; seller of L21 (no organization of its own)
USER_C01 = ObjectId("6614a0c1e4b0a10000000c01")
CREDIT_REPORT = ObjectId("66240a11c3d9e40000000015")  # creditreports, on D13
# The world's offers (each the origin of the deal one id above)
W02, W22, W33, W43 = (ObjectId(f"66240a11c3d9e400000000{n}") for n in ("02", "22", "33", "43"))
W12 = "66240a11c3d9e40000000012"  # stored with a string _id (Atlas plain-JSON mode)

# Inserted here
O1, O2, O3, O4, O6 = oid(0x0F1), oid(0x0F2), oid(0x0F3), oid(0x0F4), oid(0x0F6)
O5 = "offer-legacy-5"  # a string _id
DOC_POA, DOC_ADDENDUM, DOC_ORPHAN, DOC_UNLINKED = oid(0xD01), oid(0xD02), oid(0xD03), oid(0xD04)
BOS_SHARED, BOS_44 = oid(0xB01), oid(0xB02)
D_VIA_OFFER = oid(0xDF)  # a deal with no appSource and no organization: it routes by its offer (O1, carmart)

T0 = dt.datetime(2026, 4, 24, 16, 0, tzinfo=dt.UTC)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


OFFERS = [
    {"_id": O1, "appSource": "carmart", "status": "pending", "price": 17000, "createdAt": at(1)},
    {"_id": O2, "offeredByOrganizationId": ObjectId(ORG_ACME), "status": "accepted", "createdAt": at(2)},
    {
        "_id": O3,
        "appSource": "bayside-auto",
        "offeredToOrganizationId": ORG_LENDCO,  # stored as a string
        "status": "declined",
        "createdAt": at(3),
    },
    {"_id": O4, "appSource": "carmart", "status": "deleted", "createdAt": at(4)},
    {"_id": O5, "appSource": "carmart", "status": "accepted", "createdAt": at(5)},
    {"_id": O6, "appSource": "privateauto", "offeredByOrganizationId": ObjectId(ORG_OTHER), "createdAt": at(6)},
]


def slot(role: str, signed_at: dt.datetime | None = None) -> dict[str, Any]:
    return {"signerRole": role, "signedAt": signed_at}


DOCUMENTS = [
    {
        "_id": DOC_POA,
        "dealId": D34,
        "docClassification": "poa",
        "status": "signed",
        "name": "Power of Attorney",
        "manualSignatures": [slot("seller", at(1)), slot("buyer", at(2))],
        "signed": [{"key": "documents/d01/signed_poa.pdf", "filename": "signed_poa.pdf"}],
        "createdAt": at(1),
    },
    {
        "_id": DOC_ADDENDUM,
        "dealId": str(D44),  # a reference stored as a hex string
        "docClassification": "addendum",
        "status": "pending",
        "manualSignatures": [slot("seller"), slot("buyer")],
        "createdAt": at(2),
    },
    {"_id": DOC_ORPHAN, "dealId": oid(0xDEAD), "docClassification": "poa", "createdAt": at(3)},
    {"_id": DOC_UNLINKED, "docClassification": "addendum", "createdAt": at(4)},
]

GENERATED = [
    {
        "_id": BOS_SHARED,
        "sharedDeals": [D03, D23],
        "docClassification": "bill-of-sale",
        "status": "completed",
        "name": "Bill of Sale",
        "manualSignatures": [slot("seller", at(1)), slot("buyer", at(2))],
        "signed": ["generated/b01/bill-of-sale.pdf"],
        "createdAt": at(1),
    },
    {
        "_id": BOS_44,
        "dealId": D44,
        "docClassification": "bill-of-sale",
        "status": "pending",
        "manualSignatures": [slot("seller", at(3)), slot("buyer")],
        "createdAt": at(3),
    },
]

EVENT_E1, EVENT_E2, EVENT_E3 = "e1" * 32, "e2" * 32, "e3" * 32


def attempt(partner_id: str, event: str, event_id: str, n: int, status: str, when: dt.datetime) -> dict[str, Any]:
    return DeliveryAttempt(
        partner_id=partner_id,
        event=event,
        event_id=event_id,
        attempt=n,
        status=status,  # type: ignore[arg-type]
        url=f"https://{partner_id}.example/hooks",
        attempted_at=when,
        payload={"id": "x", "eventId": event_id, "eventKey": f"tok:{partner_id}:{event}:0", "entityType": "deals"},
        status_code=200 if status == "delivered" else (503 if status == "failed" else None),
        error="HTTP 503" if status == "failed" else ("partner is inactive" if status == "skipped" else None),
    ).to_document()


DELIVERIES = [
    attempt("acme-motors", "deal.created", EVENT_E1, 0, "delivered", at(0)),
    attempt("acme-motors", "deal.completed", EVENT_E2, 0, "failed", at(1)),
    attempt("acme-motors", "deal.completed", EVENT_E2, 1, "failed", at(2)),
    attempt("acme-motors", "deal.completed", EVENT_E2, 2, "delivered", at(7)),
    attempt("acme-motors", "listing.sold", EVENT_E3, 0, "skipped", at(10)),
    attempt("bayside-auto", "deal.created", "b1" * 32, 0, "delivered", at(0)),
    attempt("bayside-auto", "deal.completed", EVENT_E2, 0, "failed", at(1)),
    attempt("carmart", "listing.created", "c1" * 32, 0, "delivered", at(3)),
    attempt("oldroad-motors", "deal.created", "d1" * 32, 0, "skipped", at(4)),
]

JSON_PARTNERS = ("acme-motors", "bayside-auto", "carmart", "lendco", "oldroad-motors")
FAMILIES = ("deals", "offers", "seller_listings", "documents", "generated")

# What each partner identity reaches through appSource alone and through its organization alone.
# (Derived by hand from the world above; `both` is their union.)
_NONE: dict[str, set[Any]] = {family: set() for family in FAMILIES}
APP_ONLY: dict[str, dict[str, set[Any]]] = {
    "acme-motors": {**_NONE, "deals": {D13}, "offers": {W12}},
    "bayside-auto": {
        **_NONE,
        "deals": {D03},
        "offers": {O3, W02},
        "seller_listings": {L01},
        "generated": {BOS_SHARED},
    },
    "carmart": {
        "deals": {D44},
        "offers": {O1, O4, O5, W43},
        "seller_listings": {L11, L41},
        "documents": {DOC_ADDENDUM},
        "generated": {BOS_44},
    },
    "lendco": {**_NONE, "deals": {D23}, "offers": {W22}, "generated": {BOS_SHARED}},
}
ORG_ONLY: dict[str, dict[str, set[Any]]] = {
    "acme-motors": {
        "deals": {D13, D23, D34},
        "offers": {O2, W12, W22, W33},
        "seller_listings": {L21, L31},  # L21 through its seller's organization
        "documents": {DOC_POA},
        "generated": {BOS_SHARED},
    },
    "bayside-auto": {
        **_NONE,
        "deals": {D03, D34},
        "offers": {W02, W33},
        "documents": {DOC_POA},
        "generated": {BOS_SHARED},
    },
    "carmart": _NONE,
    "lendco": {**_NONE, "offers": {O3}},
}
ORGS = {"acme-motors": ORG_ACME, "bayside-auto": ORG_BAYSIDE, "carmart": None, "lendco": ORG_LENDCO}


def expected(partner_id: str, scope: str) -> dict[str, set[Any]]:
    if scope == "appSource":
        return APP_ONLY[partner_id]
    if scope == "organization":
        return ORG_ONLY[partner_id]
    return {f: APP_ONLY[partner_id][f] | ORG_ONLY[partner_id][f] for f in FAMILIES}


#: What the sample partners (as stored, with their own scopes) read.
STORED_SCOPE = {"acme-motors": "organization", "bayside-auto": "both", "carmart": "appSource", "lendco": "both"}
EXPECTED = {pid: expected(pid, scope) for pid, scope in STORED_SCOPE.items()} | {"oldroad-motors": _NONE}

ALL_IDS: dict[str, list[Any]] = {
    "deals": [D03, D13, D23, D34, D44],
    "offers": [W02, W12, W22, W33, W43, *(o["_id"] for o in OFFERS)],
    "seller_listings": [L01, L11, L21, L31, L41],
    "documents": [d["_id"] for d in DOCUMENTS],
    "generated": [g["_id"] for g in GENERATED],
}


class FakeS3:
    """Stands in for boto3's S3 client: presigning is a local computation."""

    def __init__(self) -> None:
        self.signed: list[str] = []

    def generate_presigned_url(self, operation, Params, ExpiresIn):
        assert operation == "get_object"
        self.signed.append(Params["Key"])
        return f"https://{Params['Bucket']}.s3.us-east-2.amazonaws.com/{Params['Key']}?X-Amz-Expires={ExpiresIn}"


def build_database():
    database = in_memory_database(
        load_partners(ROOT / "events" / "partners.json"), load_world(ROOT / "events" / "world.json")
    )
    database["offers"].insert_many([dict(o) for o in OFFERS])
    database["documents"].insert_many([dict(d) for d in DOCUMENTS])
    database["platoforms_generated_documents"].insert_many([dict(g) for g in GENERATED])
    database[DELIVERIES_COLLECTION].insert_many([dict(d) for d in DELIVERIES])
    # D34 lists its documents: its own POA, and (wrongly) carmart's addendum on D44.
    database["deals"].update_one({"_id": D34}, {"$set": {"documents": [DOC_POA, DOC_ADDENDUM]}})
    return database


@pytest.fixture
def database():
    return build_database()


@pytest.fixture
def data(database):
    return PartnerData(database)


@pytest.fixture
def partners(database) -> dict[str, Partner]:
    return {p.partner_id: p for p in MongoLookups(database).partners()}


def as_id(value: Any) -> str:
    return str(value)


def ids(page: Page) -> set[str]:
    return {item["id"] for item in page.data}


def strings(values) -> set[str]:
    return {as_id(v) for v in values}


def filtered_ids(database, partner: Partner, collection: str) -> set[str]:
    """What the Mongo scope filter alone selects (before the router's re-check)."""
    query = PartnerData(database)._scope(partner, collection)
    return set() if query is None else {as_id(d["_id"]) for d in database[collection].find(query)}


LIST = {"deals": "list_deals", "offers": "list_offers", "seller_listings": "list_listings"}
GET = {
    "deals": "get_deal",
    "offers": "get_offer",
    "seller_listings": "get_listing",
    "documents": "document",
    "generated": "generated_document",
}


# --------------------------------------------------------------------------------------------
# Every scope × family
# --------------------------------------------------------------------------------------------

SCOPE_CASES = [(pid, scope) for pid in APP_ONLY for scope in ("appSource", "organization", "both")]


@pytest.mark.parametrize(("partner_id", "scope"), SCOPE_CASES, ids=[f"{p}-{s}" for p, s in SCOPE_CASES])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_scope_reads_exactly_its_entities(database, data, partner_id, scope, family):
    partner = Partner(partner_id, organization_id=ORGS[partner_id], webhook_scope=scope)  # type: ignore[arg-type]
    want = strings(expected(partner_id, scope)[family])
    if family in LIST:
        page = getattr(data, LIST[family])(partner, 0, 100, None)
        assert ids(page) == want
        assert page.total == len(want)
        assert filtered_ids(database, partner, family) == want  # the filter alone, before the re-check
    get = getattr(data, GET[family])
    for entity_id in ALL_IDS[family]:
        found = get(partner, as_id(entity_id))
        assert (found is not None) == (as_id(entity_id) in want), entity_id
        if found is not None:
            assert found["id"] == as_id(entity_id)


@pytest.mark.parametrize("partner_id", JSON_PARTNERS)
@pytest.mark.parametrize("family", FAMILIES)
def test_stored_partners_read_what_their_stored_scope_allows(data, partners, partner_id, family):
    partner = partners[partner_id]
    want = strings(EXPECTED[partner_id][family])
    if family in LIST:
        assert ids(getattr(data, LIST[family])(partner, 0, 100, None)) == want
    for entity_id in ALL_IDS[family]:
        assert (getattr(data, GET[family])(partner, as_id(entity_id)) is not None) == (as_id(entity_id) in want)


def test_inactive_partner_reads_nothing(data, partners):
    sleepy = partners["oldroad-motors"]  # same organization as acme-motors, but inactive
    assert not sleepy.active
    assert data.list_deals(sleepy, 0, 100, None) == Page([], 0)
    assert data.list_listings(sleepy, 0, 100, None) == Page([], 0)
    assert data.list_deliveries(sleepy, 0, 100) == Page([], 0)
    assert data.get_deal(sleepy, str(D13)) is None
    assert data.deal_documents(sleepy, str(D34)) is None
    assert data.document(sleepy, str(DOC_POA)) is None
    assert scope_filter(sleepy, ROUTING_FIELDS["deals"]) is None


def test_organization_scope_without_an_organization_reads_nothing(data):
    partner = Partner("acme-motors", organization_id=None, webhook_scope="organization")
    assert data.list_deals(partner, 0, 100, None) == Page([], 0)
    assert data.list_listings(partner, 0, 100, None) == Page([], 0)
    listings = ROUTING_FIELDS["seller_listings"]
    assert scope_filter(partner, listings, {listings.borrowed[0]: [str(USER_A01)]}) is None


def test_a_partner_nobody_linked_reads_nothing(data):
    stranger = Partner("stranger", organization_id="5f00000000000000000000aa")
    for family in LIST:
        assert getattr(data, LIST[family])(stranger, 0, 100, None) == Page([], 0)
    for family in FAMILIES:
        for entity_id in ALL_IDS[family]:
            assert getattr(data, GET[family])(stranger, as_id(entity_id)) is None


def test_offer_by_organization_reaches_that_organization():
    database = build_database()
    data = PartnerData(database)
    other = Partner("other-org", organization_id=ORG_OTHER, webhook_scope="organization")
    assert ids(data.list_offers(other, 0, 100, None)) == {str(O6)}
    assert data.get_offer(other, str(O6))["id"] == str(O6)


# --------------------------------------------------------------------------------------------
# Cross-partner isolation, every method
# --------------------------------------------------------------------------------------------

PAIRS = [(a, b) for a in JSON_PARTNERS for b in JSON_PARTNERS if a != b]


@pytest.mark.parametrize(("reader", "owner"), PAIRS, ids=[f"{a}-reads-{b}" for a, b in PAIRS])
def test_a_partner_never_reads_another_partners_entities(data, partners, database, reader, owner):
    a = partners[reader]
    mine, theirs = EXPECTED[reader], EXPECTED[owner]
    for family in FAMILIES:
        for entity_id in strings(theirs[family]) - strings(mine[family]):
            assert getattr(data, GET[family])(a, entity_id) is None, (family, entity_id)
            if family in LIST:
                assert entity_id not in ids(getattr(data, LIST[family])(a, 0, 100, None))
            if family == "deals":
                assert data.deal_documents(a, entity_id) is None
    # Deliveries: never another partner's attempt, by list, filter or id.
    their_logs = list(database[DELIVERIES_COLLECTION].find({"partnerId": owner}))
    listed = data.list_deliveries(a, 0, 100)
    assert all(item["partnerId"] == reader for item in listed.data)
    for log in their_logs:
        assert data.get_delivery(a, str(log["_id"])) is None
        assert str(log["_id"]) not in ids(listed)
        by_event = data.list_deliveries(a, 0, 100, event_id=log["eventId"])
        assert all(item["partnerId"] == reader for item in by_event.data)


def test_the_same_event_id_at_two_partners_stays_apart(data, partners):
    # EVENT_E2 was attempted at acme-motors and at bayside-auto.
    acme = data.list_deliveries(partners["acme-motors"], 0, 100, event_id=EVENT_E2)
    bayside = data.list_deliveries(partners["bayside-auto"], 0, 100, event_id=EVENT_E2)
    assert acme.total == 3 and {d["partnerId"] for d in acme.data} == {"acme-motors"}
    assert bayside.total == 1 and {d["partnerId"] for d in bayside.data} == {"bayside-auto"}


# --------------------------------------------------------------------------------------------
# Ids, DTOs
# --------------------------------------------------------------------------------------------


def test_ids_as_hex_strings_or_string_ids(data, partners):
    carmart = partners["carmart"]
    assert data.get_offer(carmart, O5)["id"] == O5  # a string _id
    assert data.get_deal(carmart, str(D44))["id"] == str(D44)
    assert data.get_deal(carmart, "not-an-id") is None
    assert data.get_deal(carmart, "") is None


def test_get_returns_the_dto(data, partners):
    deal = data.get_deal(partners["carmart"], str(D44))
    assert deal["guid"] == "e4d3c2b1-a09f-48e7-d6c5-b4a392817065"
    assert deal["amount"] == 17200
    assert deal["createdAt"] == "2026-04-24T16:06:10.000Z"
    offer = data.get_offer(partners["bayside-auto"], str(O3))
    assert offer["status"] == "rejected"
    listing = data.get_listing(partners["acme-motors"], str(L21))
    assert listing["vehicle"]["vin"] == "1FTFW1E50NFA12345"
    assert listing["organizationId"] is None  # reached through the seller; the DTO shows the listing's own field


def test_deal_documents_references_are_completed_only_from_that_deals_rows(data, partners):
    deal = data.get_deal(partners["acme-motors"], str(D34))
    assert deal["documents"] == [
        {"id": str(DOC_POA), "status": "signed", "docClassification": "poa"},
        # carmart's addendum belongs to D44: its row is not read through D34
        {"id": str(DOC_ADDENDUM), "status": None, "docClassification": None},
    ]
    listed = {d["id"]: d for d in data.list_deals(partners["acme-motors"], 0, 100, None).data}
    assert listed[str(D34)]["documents"] == deal["documents"]


# --------------------------------------------------------------------------------------------
# Pagination and status filters
# --------------------------------------------------------------------------------------------


@pytest.fixture
def many(database):
    """carmart gets 7 more deals (8 in all, D44 the oldest); bayside 3 more, all `active`."""
    database["deals"].insert_many(
        [
            {
                "_id": oid(0x100 + i),
                "appSource": "carmart",
                "status": "active" if i % 2 else "pending",
                "createdAt": at(60 + i),
            }
            for i in range(7)
        ]
        + [
            {"_id": oid(0x200 + i), "appSource": "bayside-auto", "status": "active", "createdAt": at(90 + i)}
            for i in range(3)
        ]
    )
    return database


def test_a_deal_without_appSource_is_read_through_its_offers_appSource(database, partners):
    database["deals"].insert_one({"_id": D_VIA_OFFER, "offerId": O1, "status": "active", "createdAt": at(8)})
    data = PartnerData(database)

    assert data.get_deal(partners["carmart"], str(D_VIA_OFFER))["id"] == str(D_VIA_OFFER)
    assert str(D_VIA_OFFER) in ids(data.list_deals(partners["carmart"], 0, 100, None))
    assert str(D_VIA_OFFER) in filtered_ids(database, partners["carmart"], "deals")
    assert data.get_deal(partners["bayside-auto"], str(D_VIA_OFFER)) is None
    assert str(D_VIA_OFFER) not in filtered_ids(database, partners["bayside-auto"], "deals")


def test_pages_cover_every_in_scope_deal_once_newest_first(many, partners):
    data, carmart = PartnerData(many), partners["carmart"]
    pages = [data.list_deals(carmart, n, 3, None) for n in range(4)]
    assert [p.total for p in pages] == [8, 8, 8, 8]  # bayside's deals are not counted
    assert [len(p.data) for p in pages] == [3, 3, 2, 0]  # the last page is short, past it is empty
    order = [d["id"] for p in pages for d in p.data]
    assert order == [str(oid(0x100 + i)) for i in reversed(range(7))] + [str(D44)]
    assert data.list_deals(carmart, 1000, 3, None) == Page([], 8)
    assert data.list_deals(carmart, 0, 100, None).total == 8


def test_exact_multiple_leaves_no_partial_page(many, partners):
    data, carmart = PartnerData(many), partners["carmart"]
    assert [len(data.list_deals(carmart, n, 4, None).data) for n in range(3)] == [4, 4, 0]


def test_page_and_limit_are_checked(data, partners):
    with pytest.raises(ValueError, match="page"):
        data.list_deals(partners["carmart"], -1, 10, None)
    with pytest.raises(ValueError, match="limit"):
        data.list_offers(partners["carmart"], 0, 0, None)
    with pytest.raises(ValueError, match="limit"):
        data.list_deliveries(partners["carmart"], 0, 0)


def test_status_filter_on_deals_counts_only_in_scope_matches(many, partners):
    data = PartnerData(many)
    active = data.list_deals(partners["carmart"], 0, 2, "active")
    assert active.total == 3  # oid 0x101, 0x103, 0x105; bayside's 3 active deals are not counted
    assert len(active.data) == 2 and all(d["status"] == "active" for d in active.data)
    assert ids(data.list_deals(partners["carmart"], 1, 2, "active")) == {str(oid(0x101))}
    assert ids(data.list_deals(partners["carmart"], 0, 100, "sold")) == {str(D44)}
    assert data.list_deals(partners["carmart"], 0, 100, "dealCancelled") == Page([], 0)


@pytest.mark.parametrize(
    ("partner_id", "status", "want"),
    [
        ("carmart", "cancelled", {O4}),  # stored `deleted`
        ("carmart", "accepted", {O5, W43}),
        ("carmart", "pending", {O1}),
        ("bayside-auto", "rejected", {O3}),  # stored `declined`
        ("bayside-auto", "declined", set()),  # partners never see `declined`
        ("carmart", "deleted", set()),
        ("acme-motors", "accepted", {O2, W12, W22, W33}),
        ("acme-motors", "rejected", set()),  # O3 is declined, but not acme's
    ],
)
def test_offer_status_filter_uses_the_external_vocabulary(data, partners, partner_id, status, want):
    page = data.list_offers(partners[partner_id], 0, 100, status)
    assert ids(page) == strings(want)
    assert page.total == len(want)
    assert all(o["status"] == status for o in page.data)


def test_listing_status_filter(data, partners):
    assert ids(data.list_listings(partners["carmart"], 0, 100, "sold")) == strings({L11, L41})
    assert ids(data.list_listings(partners["bayside-auto"], 0, 100, "draft")) == {str(L01)}
    assert data.list_listings(partners["bayside-auto"], 0, 100, "sold").total == 0


# --------------------------------------------------------------------------------------------
# Listings routed through the seller user's organization
# --------------------------------------------------------------------------------------------


def test_listing_without_organization_routes_through_its_seller(database, partners):
    data, acme = PartnerData(database), partners["acme-motors"]
    assert data.get_listing(acme, str(L21)) is not None
    # The seller moves to another organization: the listing leaves acme's scope, L31 (own org) stays.
    database["users"].update_one({"_id": USER_A01}, {"$set": {"userDetails.organizationId": ObjectId(ORG_OTHER)}})
    assert ids(data.list_listings(acme, 0, 100, None)) == {str(L31)}
    assert data.get_listing(acme, str(L21)) is None
    other = Partner("other-org", organization_id=ORG_OTHER, webhook_scope="organization")
    assert ids(data.list_listings(other, 0, 100, None)) == {str(L21)}  # L31's own organization wins


def test_listing_own_organization_wins_over_its_seller(database, partners):
    database["seller_listings"].insert_one(
        {"_id": oid(0x51), "sellerId": USER_A01, "organizationId": ORG_OTHER, "createdAt": at(0)}
    )
    data = PartnerData(database)
    assert data.get_listing(partners["acme-motors"], str(oid(0x51))) is None
    assert str(oid(0x51)) not in filtered_ids(database, partners["acme-motors"], "seller_listings")
    assert str(oid(0x51)) not in ids(data.list_listings(partners["acme-motors"], 0, 100, None))


def test_listing_seller_stored_as_string_and_empty_organization(database, partners):
    database["seller_listings"].insert_many(
        [
            {"_id": oid(0x52), "sellerId": str(USER_A01), "organizationId": "", "createdAt": at(0)},
            {"_id": oid(0x53), "sellerId": USER_A01, "organizationId": None, "createdAt": at(0)},
            {"_id": oid(0x54), "sellerId": oid(0xFFFF), "appSource": "carmart", "createdAt": at(0)},  # seller unknown
        ]
    )
    data = PartnerData(database)
    acme = ids(data.list_listings(partners["acme-motors"], 0, 100, None))
    assert {str(oid(0x52)), str(oid(0x53))} <= acme
    assert acme == filtered_ids(database, partners["acme-motors"], "seller_listings")
    assert str(oid(0x54)) not in acme
    assert str(oid(0x54)) in ids(data.list_listings(partners["carmart"], 0, 100, None))  # appSource still applies


# --------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------


def signer_data(database, clock=None):
    s3 = FakeS3()
    kwargs = {"clock": clock} if clock else {}
    return PartnerData(database, FileLinks(s3, "pa-uploads", "deal-docs/", **kwargs)), s3


def parse(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))


def test_deal_documents_merges_title_documents_and_generated_documents(database, partners):
    data, s3 = signer_data(database)
    before = dt.datetime.now(dt.UTC)
    out = data.deal_documents(partners["carmart"], str(D44))
    after = dt.datetime.now(dt.UTC)
    assert out["deal"] == {"id": str(D44), "guid": "e4d3c2b1-a09f-48e7-d6c5-b4a392817065"}
    assert [t["key"] for t in out["title"]] == ["title-front.jpg", "title-back.jpg"]
    for link in out["title"]:
        assert urlsplit(link["url"]).path == "/deal-docs/" + link["key"]
        expires = parse(link["expiresAt"])
        assert before + dt.timedelta(hours=4) - dt.timedelta(seconds=1) <= expires <= after + dt.timedelta(hours=4)
    assert [(d["id"], d["entityType"]) for d in out["documents"]] == [
        (str(DOC_ADDENDUM), "documents"),
        (str(BOS_44), "platoforms_generated_documents"),
    ]
    addendum = out["documents"][0]
    assert addendum["docClassification"] == "addendum" and addendum["status"] == "pending"
    assert addendum["signers"] == [
        {"signerRole": "seller", "signedAt": None},
        {"signerRole": "buyer", "signedAt": None},
    ]
    assert s3.signed == ["deal-docs/title-front.jpg", "deal-docs/title-back.jpg"]


def test_deal_documents_signs_every_file_freshly(database, partners):
    now = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    data, _ = signer_data(database, clock=lambda: now)
    out = data.deal_documents(partners["acme-motors"], str(D34))
    [poa] = out["documents"]
    assert poa["id"] == str(DOC_POA) and poa["name"] == "Power of Attorney"
    assert poa["signed"] == [
        {
            "key": "documents/d01/signed_poa.pdf",
            "url": "https://pa-uploads.s3.us-east-2.amazonaws.com/deal-docs/documents/d01/signed_poa.pdf?X-Amz-Expires=14400",
            "expiresAt": "2026-05-01T16:00:00.000Z",
        }
    ]
    assert out["title"] == []


def test_a_bill_of_sale_on_several_deals_is_on_each(database, partners):
    data, _ = signer_data(database)
    for partner_id, deal in (("bayside-auto", D03), ("lendco", D23), ("acme-motors", D23)):
        out = data.deal_documents(partners[partner_id], str(deal))
        assert [d["id"] for d in out["documents"]] == [str(BOS_SHARED)]
        assert out["documents"][0]["signed"][0]["key"] == "generated/b01/bill-of-sale.pdf"


def test_deal_documents_includes_the_loan_payoff_files(database, partners):
    data, _ = signer_data(database)
    out = data.deal_documents(partners["acme-motors"], str(D13))
    [payoff] = out["documents"]
    assert payoff["id"] == str(CREDIT_REPORT)
    assert payoff["entityType"] == "credit_reports"
    assert (payoff["docClassification"], payoff["status"]) == ("loan-payoff", "confirmed")
    assert payoff["signed"][0]["key"] == "uploads/credit-reports/66240a11c3d9e40000000015/payoff-letter.pdf"


def test_without_a_signer_files_are_named_only(data, partners):
    out = data.deal_documents(partners["carmart"], str(D44))
    assert out["title"][0] == {"key": "title-front.jpg", "url": None, "expiresAt": None}


def test_single_documents_route_through_their_deal(database, partners):
    data, _ = signer_data(database)
    for partner_id in ("acme-motors", "bayside-auto"):
        out = data.document(partners[partner_id], str(DOC_POA))
        assert out["dealId"] == str(D34)
        assert out["signers"] == [
            {"signerRole": "seller", "signedAt": "2026-04-24T16:01:00.000Z"},
            {"signerRole": "buyer", "signedAt": "2026-04-24T16:02:00.000Z"},
        ]
        assert out["signed"][0]["url"].startswith("https://pa-uploads.s3")
    assert data.document(partners["carmart"], str(DOC_ADDENDUM))["dealId"] == str(D44)  # dealId stored as string
    generated = data.generated_document(partners["lendco"], str(BOS_SHARED))
    assert set(generated) == {"id", "docClassification", "name", "signers", "signed"}
    assert generated["name"] == "Bill of Sale"


def test_documents_without_a_reachable_deal_are_nobodys(data, partners):
    for partner in partners.values():
        assert data.document(partner, str(DOC_ORPHAN)) is None  # its deal does not exist
        assert data.document(partner, str(DOC_UNLINKED)) is None  # no deal at all


def test_each_document_endpoint_reads_its_own_collection(data, partners):
    carmart = partners["carmart"]
    assert data.document(carmart, str(BOS_44)) is None
    assert data.generated_document(carmart, str(DOC_ADDENDUM)) is None
    assert data.document(carmart, str(oid(0x999))) is None


# --------------------------------------------------------------------------------------------
# Delivery log
# --------------------------------------------------------------------------------------------


def test_deliveries_are_the_partners_own_newest_first(data, partners, database):
    page = data.list_deliveries(partners["acme-motors"], 0, 100)
    assert page.total == 5
    assert [d["attemptedAt"] for d in page.data] == [
        "2026-04-24T16:10:00.000Z",
        "2026-04-24T16:07:00.000Z",
        "2026-04-24T16:02:00.000Z",
        "2026-04-24T16:01:00.000Z",
        "2026-04-24T16:00:00.000Z",
    ]
    newest = database[DELIVERIES_COLLECTION].find_one({"partnerId": "acme-motors", "attemptedAt": at(10)})
    assert page.data[0] == delivery_dto(newest)
    assert page.data[0]["event"] == "listing.sold" and page.data[0]["status"] == "skipped"


def test_delivery_pages(data, partners):
    acme = partners["acme-motors"]
    first, second, third = (data.list_deliveries(acme, n, 2) for n in range(3))
    assert [len(p.data) for p in (first, second, third)] == [2, 2, 1]
    assert {p.total for p in (first, second, third)} == {5}
    assert data.list_deliveries(acme, 3, 2) == Page([], 5)


@pytest.mark.parametrize(
    ("filters", "want_minutes"),
    [
        ({"status": "failed"}, [2, 1]),
        ({"status": "delivered"}, [7, 0]),
        ({"status": "skipped"}, [10]),
        ({"event": "deal.completed"}, [7, 2, 1]),
        ({"event": "deal.created", "status": "failed"}, []),
        ({"event_id": EVENT_E2}, [7, 2, 1]),
        ({"event_id": EVENT_E2, "status": "delivered"}, [7]),
        ({"date_from": at(1), "date_to": at(7)}, [7, 2, 1]),  # both bounds inclusive
        ({"date_from": at(7)}, [10, 7]),
        ({"date_to": at(0)}, [0]),
        ({"date_from": at(1.5), "date_to": at(6.9)}, [2]),
        ({"date_from": at(11)}, []),
        ({"date_from": at(0), "date_to": at(10), "event": "deal.completed", "status": "failed"}, [2, 1]),
    ],
)
def test_delivery_filters(data, partners, filters, want_minutes):
    page = data.list_deliveries(partners["acme-motors"], 0, 100, **filters)
    assert [parse(d["attemptedAt"]) for d in page.data] == [at(m) for m in want_minutes]
    assert page.total == len(want_minutes)


def test_delivery_date_bounds_without_offset_are_utc(data, partners):
    naive = at(7).replace(tzinfo=None)
    page = data.list_deliveries(partners["acme-motors"], 0, 100, date_from=naive, date_to=naive)
    assert [d["attemptedAt"] for d in page.data] == ["2026-04-24T16:07:00.000Z"]
    other_zone = at(7).astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert data.list_deliveries(partners["acme-motors"], 0, 100, date_from=other_zone, date_to=other_zone).total == 1


def test_get_delivery_returns_the_raw_log_entry_for_replay(data, partners, database):
    log = database[DELIVERIES_COLLECTION].find_one({"partnerId": "carmart"})
    raw = data.get_delivery(partners["carmart"], str(log["_id"]))
    assert raw["_id"] == log["_id"]
    assert raw["payload"]["eventKey"] == "tok:carmart:listing.created:0"
    assert raw["eventId"] == "c1" * 32
    dto = delivery_dto(raw)
    assert dto["id"] == str(log["_id"]) and dto["attemptedAt"] == "2026-04-24T16:03:00.000Z"
    assert data.get_delivery(partners["carmart"], "nope") is None
    assert data.get_delivery(partners["carmart"], str(ObjectId())) is None


# --------------------------------------------------------------------------------------------
# Defense in depth: the router has the last word
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "odd_fields",
    [
        pytest.param({"buyer": [{"organizationId": ObjectId(ORG_ACME)}]}, id="array-on-the-way"),
        pytest.param({"buyer": {"organizationId": [ObjectId(ORG_ACME)]}}, id="array-at-the-end"),
        pytest.param({"appSource": ["acme-motors"]}, id="array-app-source"),
    ],
)
def test_an_array_where_the_model_has_a_value_is_neither_listed_nor_counted(database, partners, odd_fields):
    # Mongo's dotted paths reach into arrays, the router's do not: the filter must not admit what
    # the router refuses, or `_meta.total` counts rows the partner can never read.
    odd = oid(0x0DD)
    database["deals"].insert_one({"_id": odd, **odd_fields, "createdAt": at(0)})
    data, acme = PartnerData(database), partners["acme-motors"]
    listed = data.list_deals(acme, 0, 100, None)
    assert data.get_deal(acme, str(odd)) is None
    assert str(odd) not in ids(listed)
    assert ids(listed) == strings(EXPECTED["acme-motors"]["deals"])
    assert listed.total == len(EXPECTED["acme-motors"]["deals"])


def test_a_mixed_id_collection_never_lets_one_tenant_read_the_others_twin(database, partners):
    # One of acme's deals (an ObjectId `_id`) gets a twin: a string `_id` with the same hex,
    # carmart's, with a document of its own. Neither tenant reaches the other's deal or document
    # through the shared hex: the ambiguous id is refused for both.
    hex_id = sorted(strings(EXPECTED["acme-motors"]["deals"]))[0]
    data, acme, carmart = PartnerData(database), partners["acme-motors"], partners["carmart"]
    assert data.get_deal(acme, hex_id) is not None and data.deal_documents(acme, hex_id) is not None
    database["deals"].insert_one({"_id": hex_id, "appSource": "carmart", "createdAt": at(0)})
    twin_doc = oid(0xD7)
    database["documents"].insert_one({"_id": twin_doc, "dealId": hex_id, "createdAt": at(0)})

    for partner in (acme, carmart):
        assert data.get_deal(partner, hex_id) is None
        assert data.deal_documents(partner, hex_id) is None
        assert data.document(partner, str(twin_doc)) is None
    # A list shows each twin only to the tenant whose scope it is in.
    assert [d["appSource"] for d in database["deals"].find({"_id": hex_id})] == ["carmart"]
    assert hex_id in ids(data.list_deals(carmart, 0, 100, None))


def test_a_document_the_filter_admits_but_the_router_refuses_is_dropped(database, partners, caplog, monkeypatch):
    # Defense in depth: should the filter ever admit more than the router routes (here: a filter
    # widened to everything), the router has the last word and the disagreement is logged.
    every_deal = {str(d["_id"]) for d in database["deals"].find({}, {"_id": 1})}
    foreign = every_deal - set(strings(EXPECTED["acme-motors"]["deals"]))
    data, acme = PartnerData(database), partners["acme-motors"]
    monkeypatch.setattr(data, "_scope", lambda partner, collection: {})
    with caplog.at_level(logging.ERROR, logger="distiller.api.data"):
        listed = data.list_deals(acme, 0, 100, None)
    assert ids(listed) == strings(EXPECTED["acme-motors"]["deals"])
    assert foreign and not foreign & set(ids(listed))
    assert any("router does not route it: dropped" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------------
# Property: the scope filter and the router agree
# --------------------------------------------------------------------------------------------

HEX_PARTNER = "6a0243d9a30d4d0026d00e7c"  # a partnerId that is also a valid ObjectId
ORG_A, ORG_B = "67e446a09d2eb254a3b130e7", "67e446a09d2eb254a3b130e8"
REFERENCED = [oid(0xA1), oid(0xA2), oid(0xA3)]

# `...` means: leave the field out.
# Arrays where the model has a value: Mongo's dotted paths search them, the router does not read
# through them; the filter must agree with the router anyway.
org_value = st.sampled_from(
    [..., None, "", ObjectId(ORG_A), ORG_A, ObjectId(ORG_B), ORG_B, [ORG_A], [ObjectId(ORG_A)], [None], []]
)
app_value = st.sampled_from(
    [..., None, "", "p-app", "other", HEX_PARTNER, ObjectId(HEX_PARTNER), ["p-app"], [HEX_PARTNER], [""]]
)
ref_value = st.sampled_from(
    [..., None, "", *REFERENCED, *(str(u) for u in REFERENCED), oid(0xEE), [REFERENCED[0]], "A1" * 6]
)


def set_path(document: dict[str, Any], path: str, value: Any, parent_in_array: bool = False) -> None:
    """Set `path` (the value `...` leaves it out); `parent_in_array` wraps its parent object in a list."""
    if value is ...:
        return
    *parents, last = path.split(".")
    holder: Any = document
    for part in parents:
        holder = holder.setdefault(part, {})
        if isinstance(holder, list):
            holder = holder[0]
    holder[last] = value
    if parent_in_array and parents:
        outer = document
        for part in parents[:-1]:
            outer = outer[part]
        if not isinstance(outer[parents[-1]], list):
            outer[parents[-1]] = [outer[parents[-1]]]


@st.composite
def world(draw, collection: str):
    """Documents of `collection`, the documents they borrow routing values from (a deal's offers, a
    listing's sellers), and a partner."""
    fields = ROUTING_FIELDS[collection]
    referenced: dict[str, list[dict[str, Any]]] = {}
    for borrowed in fields.borrowed:
        for ref_id in REFERENCED:
            # Sometimes both a string and an ObjectId `_id` of the same hex (a mixed collection):
            # the router refuses such an ambiguous reference, and so must the filter.
            forms = draw(st.sampled_from([[ref_id], [str(ref_id)], [ref_id, str(ref_id)]]))
            for form in forms:
                target: dict[str, Any] = {"_id": form}
                for path in borrowed.organization:
                    set_path(target, path, draw(org_value), draw(st.booleans()))
                for path in borrowed.app_source:
                    set_path(target, path, draw(app_value))
                referenced.setdefault(borrowed.collection, []).append(target)
    documents = []
    for n in range(draw(st.integers(0, 8))):
        document: dict[str, Any] = {"_id": oid(0x1000 + n) if n % 3 else f"doc-{n}", "createdAt": at(n)}
        for path in fields.app_source:
            set_path(document, path, draw(app_value))
        for path in fields.organization:
            set_path(document, path, draw(org_value), draw(st.booleans()))
        for borrowed in fields.borrowed:
            set_path(document, borrowed.id_path, draw(ref_value))
        documents.append(document)
    partner = Partner(
        draw(st.sampled_from(["p-app", HEX_PARTNER])),
        active=draw(st.booleans()),
        organization_id=draw(st.sampled_from([ORG_A, ORG_B, None])),
        webhook_scope=draw(st.sampled_from(["appSource", "organization", "both"])),
    )
    return referenced, documents, partner


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("collection", ["deals", "offers", "seller_listings"])
@given(draw_from=st.data())
@PROPERTY
def test_scope_filter_and_router_agree(collection, draw_from):
    referenced, documents, partner = draw_from.draw(world(collection))
    database = mongomock.MongoClient(tz_aware=True)["property"]
    for name, targets in referenced.items():
        database[name].insert_many([dict(t) for t in targets])
    if documents:
        database[collection].insert_many([dict(d) for d in documents])

    # What the distiller's router decides, through its own lookup repository.
    fields, lookups = ROUTING_FIELDS[collection], MongoLookups(database)
    routed = set()
    for document in documents:
        found = {
            (name, ref_id): target
            for name, ref_id in references(fields, document)
            for target in lookups.documents(name, [ref_id]).values()
        }
        if matched_link(partner, routing_keys(fields, document, found)) is not None:
            routed.add(str(document["_id"]))

    reader = PartnerData(database)
    method = {"deals": reader.list_deals, "offers": reader.list_offers, "seller_listings": reader.list_listings}
    page = method[collection](partner, 0, 100, None)
    assert ids(page) == routed
    assert page.total == len(routed)
    # The Mongo filter alone already agrees: nothing was left for the re-check to drop.
    query = reader._scope(partner, collection)
    assert (database[collection].count_documents(query) if query is not None else 0) == len(routed)
    get = {"deals": reader.get_deal, "offers": reader.get_offer, "seller_listings": reader.get_listing}[collection]
    for document in documents:
        assert (get(partner, str(document["_id"])) is not None) == (str(document["_id"]) in routed)
