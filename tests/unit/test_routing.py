"""webhookScope routing matrix (every scope × family) and subscription wildcards."""

import dataclasses

import pytest

from distiller.core.partners import PartnerRecordError, partner_from_record
from distiller.core.routing import (
    ROUTING_FIELDS,
    matching_subscription,
    references,
    routing_keys,
    scope_decision,
)
from tests.factories import oid

ORG = "67e446a09d2eb254a3b130e7"
OTHER_ORG = "67e446a09d2eb254a3b130ff"

# One document per family where appSource and organization link point at the partner ("both"),
# only appSource, only organization, or neither.
FAMILY_DOCS = {
    "deals": {
        "app": {"appSource": "acme", "buyer": {"organizationId": OTHER_ORG}},
        "org_buyer": {"appSource": "someone", "buyer": {"organizationId": oid(0x67E446A09D2EB254A3B130E7)}},
        "org_seller": {"seller": {"organizationId": ORG}},
        "none": {"appSource": "someone", "buyer": {"organizationId": OTHER_ORG}, "seller": {}},
    },
    "offers": {
        "app": {"appSource": "acme"},
        "org_buyer": {"offeredByOrganizationId": ORG},
        "org_seller": {"offeredToOrganizationId": ORG, "appSource": "x"},
        "none": {"offeredByOrganizationId": OTHER_ORG},
    },
    "seller_listings": {
        "app": {"appSource": "acme", "organizationId": OTHER_ORG},
        "org_buyer": {"organizationId": ORG},
        "org_seller": {"organizationId": ORG, "appSource": "other"},
        "none": {"organizationId": OTHER_ORG},
    },
    "users": {
        "app": {"appRegisteredFrom": "acme"},
        "org_buyer": {"userDetails": {"organizationId": ORG}},
        "org_seller": {"userDetails": {"organizationId": ORG}, "appRegisteredFrom": "other"},
        "none": {"userDetails": {"organizationId": OTHER_ORG}},
    },
}

# scope → which kinds of link route
EXPECTED = {
    "appSource": {"app": True, "org_buyer": False, "org_seller": False, "none": False},
    "organization": {"app": False, "org_buyer": True, "org_seller": True, "none": False},
    "both": {"app": True, "org_buyer": True, "org_seller": True, "none": False},
}

MATRIX = [
    pytest.param(collection, scope, link, EXPECTED[scope][link], id=f"{collection}-{scope}-{link}")
    for collection in FAMILY_DOCS
    for scope in EXPECTED
    for link in EXPECTED[scope]
]


@pytest.mark.parametrize(("collection", "scope", "link", "routed"), MATRIX)
def test_scope_matrix(collection, scope, link, routed):
    partner = partner_from_record(
        {"partnerId": "acme", "organizationId": ORG, "webhookScope": scope, "webhook": {"url": "https://a.example"}}
    )
    keys = routing_keys(ROUTING_FIELDS[collection], FAMILY_DOCS[collection][link])

    decision = scope_decision(partner, keys)

    assert decision.routed is routed, decision.why
    assert decision.why.startswith(f"scope {scope}")


def test_inactive_partner_gets_nothing_even_when_everything_matches():
    partner = partner_from_record({"partnerId": "acme", "active": False, "organizationId": ORG})
    keys = routing_keys(ROUTING_FIELDS["deals"], {"appSource": "acme", "buyer": {"organizationId": ORG}})

    decision = scope_decision(partner, keys)

    assert not decision.routed
    assert decision.why == "partner is inactive"


def test_default_scope_is_both():
    partner = partner_from_record({"partnerId": "acme", "organizationId": ORG})
    assert partner.webhook_scope == "both"
    assert partner.events == ("*",)
    assert partner.active is True


def test_organization_scope_without_partner_organization_never_routes():
    partner = partner_from_record({"partnerId": "acme", "webhookScope": "organization"})
    keys = routing_keys(ROUTING_FIELDS["deals"], {"appSource": "acme", "buyer": {"organizationId": ORG}})

    decision = scope_decision(partner, keys)

    assert not decision.routed
    assert "partner has no organizationId" in decision.why


def test_refusal_names_the_fields_it_looked_at():
    partner = partner_from_record({"partnerId": "acme", "organizationId": ORG})
    keys = routing_keys(ROUTING_FIELDS["deals"], {"appSource": "bmx", "seller": {"organizationId": OTHER_ORG}})

    why = scope_decision(partner, keys).why

    assert "appSource='bmx'" in why
    assert f"seller.organizationId='{OTHER_ORG}'" in why


def test_listing_without_organization_routes_through_seller_user():
    listing = {"sellerId": oid(7), "appSource": "other"}
    fields = ROUTING_FIELDS["seller_listings"]

    wanted = references(fields, listing)
    keys = routing_keys(
        fields, listing, {("users", str(oid(7))): {"_id": oid(7), "userDetails": {"organizationId": ORG}}}
    )

    assert wanted == [("users", str(oid(7)))]
    assert keys.organizations == (("sellerId→users.userDetails.organizationId", ORG),)
    partner = partner_from_record({"partnerId": "acme", "organizationId": ORG, "webhookScope": "organization"})
    assert scope_decision(partner, keys).routed


def test_listing_with_own_organization_does_not_look_up_the_seller():
    listing = {"sellerId": oid(7), "organizationId": ORG}
    fields = ROUTING_FIELDS["seller_listings"]

    assert references(fields, listing) == []
    keys = routing_keys(fields, listing, {("users", str(oid(7))): {"userDetails": {"organizationId": OTHER_ORG}}})
    assert keys.organizations == (("organizationId", ORG),)


# "Deals & offers: only if offer.appSource === partnerId or deal.appSource === partnerId"
OFFER_ID = oid(0x0FF)
DEAL_VIA_OFFER = [
    pytest.param({"offerId": OFFER_ID}, "acme", True, id="deal-without-appSource-routes-by-its-offers-appSource"),
    pytest.param({"offerId": str(OFFER_ID)}, "acme", True, id="offerId-stored-as-a-string"),
    pytest.param({"offerId": OFFER_ID, "appSource": "other"}, "acme", True, id="either-appSource-matches"),
    pytest.param({"offerId": OFFER_ID, "appSource": "acme"}, "other", True, id="deal-appSource-still-matches"),
    pytest.param({"offerId": OFFER_ID}, "other", False, id="offer-appSource-of-another-partner"),
    pytest.param({"offerId": oid(0xEE)}, "acme", False, id="offer-not-found"),
    pytest.param({}, "acme", False, id="deal-without-offerId"),
]


@pytest.mark.parametrize(("deal", "offer_app_source", "routed"), DEAL_VIA_OFFER)
def test_deal_routes_by_its_own_or_its_offers_appSource(deal, offer_app_source, routed):
    fields = ROUTING_FIELDS["deals"]
    found = {("offers", str(OFFER_ID)): {"_id": OFFER_ID, "appSource": offer_app_source}}
    partner = partner_from_record({"partnerId": "acme", "webhookScope": "appSource"})

    keys = routing_keys(fields, deal, {ref: found[ref] for ref in references(fields, deal) if ref in found})

    assert scope_decision(partner, keys).routed is routed
    if deal.get("offerId") == OFFER_ID and offer_app_source == "acme":
        assert ("offerId→offers.appSource", "acme") in keys.app_sources


def test_offer_appSource_does_not_route_an_organization_scoped_partner():
    fields = ROUTING_FIELDS["deals"]
    keys = routing_keys(fields, {"offerId": OFFER_ID}, {("offers", str(OFFER_ID)): {"appSource": "acme"}})
    partner = partner_from_record({"partnerId": "acme", "organizationId": ORG, "webhookScope": "organization"})

    assert not scope_decision(partner, keys).routed


SUBSCRIPTIONS = [
    pytest.param(("*",), "deal.created", "*", id="star"),
    pytest.param(("deal.*",), "deal.created", "deal.*", id="family-wildcard"),
    pytest.param(("deal.*",), "document.completed", None, id="family-wildcard-other-family"),
    pytest.param(("deal.*",), "dealer.created", None, id="family-prefix-is-not-a-string-prefix"),
    pytest.param(("offer.accepted",), "offer.accepted", "offer.accepted", id="exact"),
    pytest.param(("offer.accepted",), "offer.rejected", None, id="exact-miss"),
    pytest.param(("listing.*", "user.*"), "user.registered", "user.*", id="second-pattern"),
    pytest.param(("document.*",), "document.signature_added", "document.*", id="document-family"),
    pytest.param((), "deal.created", None, id="empty-list-subscribes-nothing"),
    pytest.param(("deal.creat*",), "deal.created", None, id="only-whole-family-wildcards"),
]


@pytest.mark.parametrize(("patterns", "event", "expected"), SUBSCRIPTIONS)
def test_subscriptions(patterns, event, expected):
    assert matching_subscription(patterns, event) == expected


BAD_PARTNERS = [
    pytest.param({}, "partner.partnerId", id="no-id"),
    pytest.param({"partnerId": "a", "webhookScope": "org"}, "webhookScope", id="bad-scope"),
    pytest.param({"partnerId": "a", "active": "yes"}, "active", id="active-not-bool"),
    pytest.param({"partnerId": "a", "webhook": {"events": "deal.*"}}, "webhook.events", id="events-not-list"),
    pytest.param({"partnerId": "a", "webhook": []}, "webhook", id="webhook-not-object"),
    pytest.param({"partnerId": "a", "linkPlatform": "web"}, "linkPlatform", id="bad-link-platform"),
    pytest.param({"partnerId": "a", "webhook": {"url": 3}}, "webhook.url", id="url-not-string"),
]


@pytest.mark.parametrize(("record", "field"), BAD_PARTNERS)
def test_invalid_partner_records_name_the_field(record, field):
    with pytest.raises(PartnerRecordError, match=field.replace(".", r"\.")):
        partner_from_record(record)


def test_partner_secret_is_never_carried_by_a_partner():
    partner = partner_from_record({"partnerId": "a", "webhook": {"secret": "s3cr3t-value"}})
    assert "s3cr3t-value" not in repr(partner)
    assert "s3cr3t-value" not in str(dataclasses.asdict(partner))
