"""DealNow initiation as pure logic (`distiller.api.sell`): the validation both /sell routes share,
Format 3's text values, the deep links (never on an apex), and the documents the routes write."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from distiller.api.errors import FieldErrors
from distiller.api.sell import (
    DEALNOW_VALIDITY,
    SellLinkRequest,
    SellRequest,
    deal_links,
    dealnow_offer,
    fingerprint,
    link_email,
    link_origin,
    redirect_problem,
    stored_id,
    stub_listing,
    validate_sell,
    vehicle_errors,
    vehicle_title,
)
from distiller.core.model import ChangeEvent
from distiller.core.partners import Partner
from distiller.core.payloads import listing_payload, offer_payload
from distiller.core.reducers import REDUCERS
from distiller.core.transitions import Transitions

VIN = "1HGBH41JXMN109186"
NOW = dt.datetime(2026, 4, 20, 14, 0, 37, tzinfo=dt.UTC)
ORG = "663a1f2b4e8c9a001234bcde"
ORG_USER = "6614a0c1e4b0a10000000b01"
PARTNER = Partner("bayside-auto", organization_id=ORG, organization_user_id=ORG_USER)


def refused(fields: dict[str, Any], **options: Any) -> dict[str, str]:
    with pytest.raises(FieldErrors) as caught:
        validate_sell(fields, **options)
    error = caught.value
    assert error.status == 400 and error.body["fields"] == error.fields
    for name in error.fields:  # the one-line error names every field too
        assert name in error.body["error"]
    return error.fields


# -- validation ---------------------------------------------------------------------------------------

#: POST bodies that are refused: body → {field: a word of its reason}. Every other field is fine.
REFUSED: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("vin missing", {"year": 2021}, {"vin": "required"}),
    ("vin too short", {"vin": VIN[:16]}, {"vin": "17 characters"}),
    ("vin too long", {"vin": VIN + "1"}, {"vin": "17 characters"}),
    ("vin with I", {"vin": "1HGBH41JXMN10918I"}, {"vin": "without I, O or Q"}),
    ("vin with O", {"vin": "1HGBH41JXMN10918O"}, {"vin": "without I, O or Q"}),
    ("vin with q", {"vin": "1hgbh41jxmn10918q"}, {"vin": "without I, O or Q"}),
    ("vin with a dash", {"vin": "1HGBH41JX-N109186"}, {"vin": "A-Z and 0-9"}),
    ("vin a number", {"vin": 12345678901234567}, {"vin": "valid string"}),
    ("year a string", {"vin": VIN, "year": "2021"}, {"year": "valid integer"}),
    ("year a float", {"vin": VIN, "year": 2021.0}, {"year": "valid integer"}),
    ("year a boolean", {"vin": VIN, "year": True}, {"year": "valid integer"}),
    ("year before 17-character VINs", {"vin": VIN, "year": 1980}, {"year": "1981"}),
    ("year far ahead", {"vin": VIN, "year": 2101}, {"year": "2100"}),
    ("amount a string", {"vin": VIN, "amount": "18500"}, {"amount": "valid number"}),
    ("amount negative", {"vin": VIN, "amount": -1}, {"amount": "greater than or equal to 0"}),
    ("amount a boolean", {"vin": VIN, "amount": True}, {"amount": "valid number"}),
    ("amount absurd", {"vin": VIN, "amount": 10**12}, {"amount": "less than or equal"}),
    ("amount NaN", {"vin": VIN, "amount": float("nan")}, {"amount": "finite"}),
    ("send flag a number", {"vin": VIN, "buyerSendLink": 1, "buyerEmail": "a@b.co"}, {"buyerSendLink": "boolean"}),
    ("send flag a string", {"vin": VIN, "sellerSendLink": "true", "sellerEmail": "a@b.co"}, {"sellerSendLink": "bool"}),
    ("buyer link without email", {"vin": VIN, "buyerSendLink": True}, {"buyerEmail": "required when buyerSendLink"}),
    ("seller link without email", {"vin": VIN, "sellerSendLink": True}, {"sellerEmail": "required when seller"}),
    ("not an email", {"vin": VIN, "buyerEmail": "jane.example.com"}, {"buyerEmail": "email address"}),
    ("email with a space", {"vin": VIN, "sellerEmail": "john doe@example.com"}, {"sellerEmail": "email address"}),
    ("blank make", {"vin": VIN, "make": "   "}, {"make": "at least 1"}),
    ("name with a line break", {"vin": VIN, "buyerName": "Jane\r\nBcc: x"}, {"buyerName": "line breaks"}),
    ("redirectUrl is GET-only", {"vin": VIN, "redirectUrl": "https://x.example"}, {"redirectUrl": "GET-only"}),
    ("role is GET-only", {"vin": VIN, "role": "seller"}, {"role": "GET-only"}),
    ("unknown field", {"vin": VIN, "price": 18500}, {"price": "unknown field"}),
    (
        "every problem at once",
        {"vin": "short", "year": "2021", "role": "buyer", "x": 1},
        {"vin": "17", "year": "integer", "role": "GET-only", "x": "unknown"},
    ),
]


@pytest.mark.parametrize(("body", "expected"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_post_body_refusals_name_each_field(body, expected):
    fields = refused(body)

    assert set(fields) == set(expected)
    for name, word in expected.items():
        assert word.lower() in fields[name].lower(), (name, fields[name])


def test_a_valid_body_is_normalised():
    request = validate_sell(
        {
            "vin": " 1hgbh41jxmn109186 ",
            "year": 2021,
            "make": " Honda ",
            "model": "Civic",
            "amount": 18500.0,
            "buyerEmail": "jane@example.com",
            "buyerSendLink": True,
            "trim": None,  # null is the same as leaving it out
        }
    )

    assert request.vin == VIN  # lower case accepted, upper-cased
    assert request.make == "Honda"
    assert request.amount == 18500 and isinstance(request.amount, int)  # stored and answered as 18500
    assert request.trim is None and request.sellerSendLink is None
    assert not isinstance(request, SellLinkRequest)
    assert validate_sell({"vin": VIN, "amount": 18500.5}).amount == 18500.5


def test_year_make_and_model_are_required_only_without_a_listing():
    assert vehicle_errors(validate_sell({"vin": VIN, "year": 2021, "make": "Honda", "model": "Civic"})) == {}
    missing = vehicle_errors(validate_sell({"vin": VIN, "make": "Honda"}))
    assert set(missing) == {"year", "model"} and "no listing" in missing["year"]


# -- GET: redirectUrl, role and Format 3's text values -------------------------------------------------


def test_get_accepts_redirect_url_and_role():
    request = validate_sell({"vin": VIN, "redirectUrl": "https://yoursite.com/thanks?x=1", "role": "seller"}, get=True)

    assert isinstance(request, SellLinkRequest)
    assert request.redirectUrl == "https://yoursite.com/thanks?x=1" and request.role == "seller"
    assert refused({"vin": VIN, "role": "admin"}, get=True).keys() == {"role"}
    assert refused({"vin": VIN, "unknown": "1"}, get=True) == {"unknown": "unknown field"}


@pytest.mark.parametrize(
    ("url", "word"),
    [
        ("javascript:alert(1)", "absolute https"),
        ("JavaScript://example.com/%0Aalert(1)", "absolute https"),
        ("data:text/html,<script>alert(1)</script>", "absolute https"),
        ("/thanks", "absolute https"),
        ("//evil.example/thanks", "absolute https"),
        ("thanks.html", "absolute https"),
        ("ftp://files.example/x", "absolute https"),
        ("http://yoursite.com/thanks", "absolute https"),
        ("https://", "host"),
        ("https:///thanks", "host"),
        ("https:evil.example", "host"),
        ("https://user:secret@yoursite.com/", "credentials"),
        ("https://user@yoursite.com/", "credentials"),
        ("https://yoursite.com:99999/", "not a valid URL"),
        ("https://yoursite.com/a b", "spaces"),
        ("https://yoursite.com\\@evil.example", "backslashes"),
        ("https://yoursite.com/\r\nSet-Cookie: x", "control"),
    ],
)
def test_redirect_targets_other_than_absolute_https_are_refused(url, word):
    problem = redirect_problem(url, allow_http=False)

    assert problem is not None and word in problem
    assert word in refused({"vin": VIN, "redirectUrl": url}, get=True)["redirectUrl"]


def test_http_redirects_only_where_allowed():
    assert redirect_problem("https://yoursite.com/thanks", allow_http=False) is None
    assert redirect_problem("HTTPS://YourSite.com", allow_http=False) is None
    assert redirect_problem("http://127.0.0.1:8080/thanks", allow_http=False) is not None
    assert redirect_problem("http://127.0.0.1:8080/thanks", allow_http=True) is None
    assert redirect_problem("javascript:alert(1)", allow_http=True) is not None
    request = validate_sell({"vin": VIN, "redirectUrl": "http://localhost/x"}, get=True, allow_http=True)
    assert isinstance(request, SellLinkRequest) and request.redirectUrl == "http://localhost/x"


def test_format_3_text_values_are_read_as_their_types():
    request = validate_sell(
        {
            "vin": VIN,
            "year": "2021",
            "amount": "18500",
            "buyerSendLink": "true",
            "sellerSendLink": "0",
            "buyerEmail": "jane@example.com",
            "role": "seller",
        },
        get=True,
        text_values=True,
    )

    assert (request.year, request.amount, request.buyerSendLink, request.sellerSendLink) == (2021, 18500, True, False)
    assert isinstance(request.amount, int)
    decimal = validate_sell({"vin": VIN, "amount": "18500.50", "buyerSendLink": "FALSE"}, get=True, text_values=True)
    assert (decimal.amount, decimal.buyerSendLink) == (18500.5, False)
    flags = validate_sell({"vin": VIN, "sellerSendLink": "1", "sellerEmail": "j@x.co"}, get=True, text_values=True)
    assert flags.sellerSendLink is True


@pytest.mark.parametrize(
    ("name", "value", "word"),
    [
        ("year", "20x1", "whole number"),
        ("year", "2021.0", "whole number"),
        ("year", "-2021", "whole number"),
        ("year", "1980", "1981"),
        ("amount", "-5", "non-negative number"),
        ("amount", "1e3", "non-negative number"),
        ("amount", "18,500", "non-negative number"),
        ("amount", "", "non-negative number"),
        ("buyerSendLink", "yes", "true, false, 1 or 0"),
        ("sellerSendLink", "", "true, false, 1 or 0"),
    ],
)
def test_format_3_values_that_are_not_their_type_name_the_field(name, value, word):
    fields = refused({"vin": VIN, name: value}, get=True, text_values=True)

    assert list(fields) == [name] and word in fields[name]


def test_json_values_are_not_read_from_text():
    # Formats 1 and 2 carry JSON in the token: "2021" is not a year there.
    assert "integer" in refused({"vin": VIN, "year": "2021"}, get=True)["year"]


# -- links ---------------------------------------------------------------------------------------------


def assert_deep_link(link: str, domain: str, guid: str, role: str) -> None:
    parts = urlsplit(link)
    assert parts.scheme == "https"
    assert parts.hostname == f"app.{domain}"
    assert parts.hostname != domain  # never the apex
    assert guid in parts.path
    assert parse_qs(parts.query) == {"role": [role]}


@pytest.mark.parametrize(
    ("platform", "expected"), [("dealnow", "dealnow.com"), ("pa-app", "privateauto.com"), ("unknown", "dealnow.com")]
)
def test_links_use_the_platforms_app_subdomain(platform, expected):
    guid = str(uuid.uuid4())
    links = deal_links(platform, guid, "dealnow.com", "privateauto.com")

    assert_deep_link(links.buyer, expected, guid, "buyer")
    assert_deep_link(links.seller, expected, guid, "seller")
    assert link_origin(platform, "dealnow.com", "privateauto.com") == f"https://app.{expected}"


DOMAINS = st.from_regex(r"[a-z][a-z0-9-]{0,20}\.(com|xyz|co\.uk)", fullmatch=True)


@given(platform=st.sampled_from(["dealnow", "pa-app"]), dealnow=DOMAINS, app=DOMAINS, guid=st.uuids(version=4))
def test_no_link_is_ever_on_an_apex(platform, dealnow, app, guid):
    links = deal_links(platform, str(guid), dealnow, app)

    for link in (links.buyer, links.seller):
        host = urlsplit(link).hostname
        assert host not in (dealnow, app)
        assert host == f"app.{dealnow if platform == 'dealnow' else app}"


def test_link_email_names_the_party_the_vehicle_and_the_link():
    subject, text = link_email(
        "seller", "https://app.dealnow.com/deal-now/g?role=seller", "John", "2021 Honda", "dealnow"
    )

    assert subject == "DealNow: your deal link for the 2021 Honda"
    assert text.startswith("Hello John,") and "as the seller" in text
    assert "https://app.dealnow.com/deal-now/g?role=seller" in text
    assert link_email("buyer", "l", None, "car", "pa-app")[0].startswith("PrivateAuto:")


# -- documents -----------------------------------------------------------------------------------------


def full_request(**extra: Any) -> SellRequest:
    body = {"vin": VIN, "year": 2021, "make": "Honda", "model": "Civic", "trim": "EX", "amount": 18500, **extra}
    return validate_sell(body)


def reserve(partner: Partner = PARTNER, request: SellRequest | None = None, listing: dict | None = None):
    request = request or full_request()
    listing = listing or stub_listing(request, partner.partner_id, ObjectId(), NOW)
    deal_id, guid = ObjectId(), str(uuid.uuid4())
    offer = dealnow_offer(request, partner, listing, offer_id=ObjectId(), deal_id=deal_id, guid=guid, now=NOW)
    return listing, offer, deal_id, guid


def test_the_stub_listing_is_a_draft_of_the_vehicle_from_the_partner():
    listing, _, _, _ = reserve()

    assert listing["status"] == "draft" and listing["appSource"] == "bayside-auto"
    assert listing["vehicle"] == {"year": 2021, "make": "Honda", "model": "Civic", "trim": "EX", "vin": VIN}
    assert listing["title"] == "2021 Honda Civic EX" and listing["price"] == 18500
    assert listing["createdAt"] == listing["updatedAt"] == NOW
    assert "sellerId" not in listing  # the seller is bound when they follow the link
    bare = stub_listing(
        validate_sell({"vin": VIN, "year": 2021, "make": "Honda", "model": "Civic"}), "p", ObjectId(), NOW
    )
    assert "price" not in bare and "trim" not in bare["vehicle"]


def test_the_offer_binds_the_partner_org_user_on_the_buyer_side_and_reserves_the_deal():
    listing, offer, deal_id, guid = reserve(request=full_request(buyerName="Jane", sellerEmail="john@example.com"))

    assert offer["status"] == "dealNowPending" and offer["appSource"] == "bayside-auto"
    assert offer["dealId"] == deal_id and offer["guid"] == guid
    assert offer["listingId"] == listing["_id"] and offer["price"] == 18500
    assert offer["offeredByUserId"] == ObjectId(ORG_USER) and offer["offeredByOrganizationId"] == ObjectId(ORG)
    assert "offeredToUserId" not in offer  # a stub listing has no seller yet
    assert offer["dealNowExpiration"] == NOW + DEALNOW_VALIDITY
    assert offer["dealNowInvitees"] == {"buyer": {"name": "Jane"}, "seller": {"email": "john@example.com"}}


def test_an_existing_listings_seller_is_on_the_other_side():
    seller = ObjectId("6614a0c1e4b0a10000000c01")
    existing = {"_id": ObjectId(), "sellerId": seller, "vehicle": {"vin": VIN}}

    _, offer, _, _ = reserve(request=validate_sell({"vin": VIN}), listing=existing)

    assert offer["offeredToUserId"] == seller and offer["listingId"] == existing["_id"]
    assert "price" not in offer and "dealNowInvitees" not in offer


def test_ids_from_partner_records_are_stored_as_object_ids_only_when_canonical():
    assert stored_id(ORG_USER) == ObjectId(ORG_USER)
    assert stored_id(ORG_USER.upper()) == ORG_USER.upper()  # not the canonical hex: kept as text
    assert stored_id("user-42") == "user-42"
    no_user = Partner("carmart")
    _, offer, _, _ = reserve(partner=no_user)
    assert "offeredByUserId" not in offer and "offeredByOrganizationId" not in offer


def insert_of(collection: str, document: dict[str, Any]) -> ChangeEvent:
    return ChangeEvent("token", "insert", collection, document["_id"], full_document=document)


def test_the_documents_are_what_the_reducers_turn_into_listing_and_offer_created():
    listing, offer, _, guid = reserve()

    listing_rows = REDUCERS["seller_listings"].emissions(Transitions(insert_of("seller_listings", listing), listing))
    offer_rows = REDUCERS["offers"].emissions(Transitions(insert_of("offers", offer), offer))

    assert [r.event for r, _ in listing_rows] == ["listing.created"]
    assert [r.event for r, _ in offer_rows] == ["offer.created"]
    assert listing_payload(listing)["vin"] == VIN
    payload = offer_payload(offer)
    assert (payload["guid"], payload["status"], payload["buyerId"]) == (guid, "dealNowPending", ORG_USER)
    assert payload["listingId"] == str(listing["_id"])


def test_vehicle_title_skips_what_is_unknown():
    assert vehicle_title({"year": 2021, "make": "Honda", "model": "Civic"}) == "2021 Honda Civic"
    assert vehicle_title({}) == "vehicle"


def test_fingerprint_ignores_key_order_but_not_values():
    assert fingerprint({"vin": VIN, "amount": 1}) == fingerprint({"amount": 1, "vin": VIN})
    assert fingerprint({"vin": VIN, "amount": 1}) != fingerprint({"vin": VIN, "amount": 2})
    assert fingerprint({"vin": VIN}) != fingerprint({"vin": VIN.lower()})
