"""Partner payloads per family, field for field as the spec's payload tables give them.

Each builder is looked up the way the pipeline does it (the row's payload, else the
collection's), so a row that should carry a special payload is tested through its table.
"""

import datetime as dt
import json

import pytest
from bson import Decimal128, Int64

from distiller.core.ejson import plain
from distiller.core.reducers import REDUCERS
from tests.factories import oid


def payload_of(event):
    """The payload builder the pipeline uses for `event`."""
    for reducer in REDUCERS.values():
        for r in reducer.rows:
            if r.event == event:
                return r.payload or reducer.payload
    raise LookupError(event)


DEAL_ID, BUYER, SELLER, LISTING_ID = oid(0xD1), oid(0xB1), oid(0x51), oid(0x11)
GUID = "d30d5242-c880-4534-8c51-0032dde02093"

DEAL = {
    "_id": DEAL_ID,
    "guid": GUID,
    "status": "active",
    "payment": {"privateAutoPay": {"amount": Decimal128("18500.00")}},
    "buyer": {"id": BUYER, "organizationId": oid(0x0A)},
    "seller": {"id": SELLER},
    "negativeEquity": True,
    "listingId": LISTING_ID,
}
DEAL_PAYLOAD = {
    "id": str(DEAL_ID),
    "guid": GUID,
    "status": "active",
    "amount": 18500,
    "buyerId": str(BUYER),
    "sellerId": str(SELLER),
}

OFFER = {
    "_id": oid(0x0F),
    "guid": GUID,
    "status": "declined",
    "listingId": LISTING_ID,
    "price": Decimal128("17250.50"),
    "offeredByUserId": BUYER,
    "offeredToUserId": SELLER,
}
OFFER_PAYLOAD = {
    "id": str(oid(0x0F)),
    "guid": GUID,
    "status": "rejected",
    "listingId": str(LISTING_ID),
    "amount": 17250.5,
    "buyerId": str(BUYER),
    "sellerId": str(SELLER),
}
OFFER_DTO_NAMES = {
    **{k: v for k, v in OFFER.items() if k not in ("listingId", "offeredByUserId", "offeredToUserId")},
    "listing": LISTING_ID,
    "offeredBy": BUYER,
    "offeredTo": SELLER,
}

LISTING = {
    "_id": LISTING_ID,
    "status": "live",
    "price": 18500,
    "sellerId": SELLER,
    "vehicle": {"vin": "1HGBH41JXMN109186", "year": Int64(2021), "make": "Honda", "model": "Accord", "trim": "EX"},
    "createdAt": dt.datetime(2026, 4, 16, 14, 22, tzinfo=dt.UTC),
}
LISTING_PAYLOAD = {
    "id": str(LISTING_ID),
    "status": "live",
    "vin": "1HGBH41JXMN109186",
    "year": 2021,
    "make": "Honda",
    "model": "Accord",
    "trim": "EX",
    "price": 18500,
    "sellerId": str(SELLER),
}

USER = {"_id": oid(0xA5), "email": "jane@example.com", "firstName": "Jane", "lastName": "Doe", "password": "x"}
USER_PAYLOAD = {"id": str(oid(0xA5)), "email": "jane@example.com", "firstName": "Jane", "lastName": "Doe"}

CASES = [
    # --- deal ---
    pytest.param("deal.created", DEAL, DEAL_PAYLOAD, id="deal"),
    pytest.param(
        "deal.amount_changed",
        {**DEAL, "payment": {"privateAutoPay": {"amount": Decimal128("19250.75")}}},
        {**DEAL_PAYLOAD, "amount": 19250.75},
        id="deal-fractional-amount",
    ),
    pytest.param(
        "deal.completed",
        {**DEAL, "buyer": {"id": str(BUYER)}, "status": "sold"},
        {**DEAL_PAYLOAD, "status": "sold"},
        id="deal-id-stored-as-string",
    ),
    pytest.param(
        "deal.negative_equity_identified",
        DEAL,
        {**DEAL_PAYLOAD, "negativeEquity": True},
        id="deal-negative_equity_identified-carries-flag",
    ),
    pytest.param(
        "deal.negative_equity_identified",
        {k: v for k, v in DEAL.items() if k != "negativeEquity"},
        {**DEAL_PAYLOAD, "negativeEquity": True},
        id="deal-negative-equity-flag-is-from-the-event-name",
    ),
    # --- offer ---
    pytest.param("offer.rejected", OFFER, OFFER_PAYLOAD, id="offer-declined-is-rejected"),
    pytest.param(
        "offer.cancelled", {**OFFER, "status": "deleted"}, {**OFFER_PAYLOAD, "status": "cancelled"}, id="offer-deleted"
    ),
    pytest.param(
        "offer.accepted", {**OFFER, "status": "accepted"}, {**OFFER_PAYLOAD, "status": "accepted"}, id="offer-accepted"
    ),
    pytest.param(
        "offer.created", {**OFFER, "status": "pending"}, {**OFFER_PAYLOAD, "status": "pending"}, id="offer-pending"
    ),
    pytest.param("offer.rejected", OFFER_DTO_NAMES, OFFER_PAYLOAD, id="offer-dto-field-names"),
    # --- listing ---
    pytest.param(
        "listing.published",
        LISTING,
        {**LISTING_PAYLOAD, "vehicleHaveLien": None},
        id="listing-without-ownership-has-null-lien-and-no-ownership-type",
    ),
    pytest.param(
        "listing.ownership_set",
        {**LISTING, "ownershipInfo": {"ownershipType": "financed", "vehicleHaveLien": True}},
        {**LISTING_PAYLOAD, "ownershipType": "financed", "vehicleHaveLien": True},
        id="listing-with-ownership",
    ),
    pytest.param(
        "listing.ownership_set",
        {**LISTING, "ownershipInfo": {"ownershipType": "owned", "vehicleHaveLien": False}},
        {**LISTING_PAYLOAD, "ownershipType": "owned", "vehicleHaveLien": False},
        id="listing-lien-false-is-present",
    ),
    pytest.param(
        "listing.updated",
        {**LISTING, "ownershipInfo": {"ownershipType": "leased", "vehicleHaveLien": None}},
        {**LISTING_PAYLOAD, "ownershipType": "leased", "vehicleHaveLien": None},
        id="listing-null-lien-is-null",
    ),
    # --- user ---
    pytest.param("user.registered", USER, USER_PAYLOAD, id="user"),
    pytest.param(
        "user.registered",
        {"_id": oid(0xA5), "userDetails": {"email": "jane@example.com", "firstName": "Jane", "lastName": "Doe"}},
        USER_PAYLOAD,
        id="user-details-nested",
    ),
]


@pytest.mark.parametrize(("event", "document", "expected"), CASES)
def test_payload(event, document, expected):
    payload = payload_of(event)(document)

    assert payload == expected
    assert json.loads(json.dumps(payload)) == expected


def test_only_the_negative_equity_pair_carries_the_flag():
    carrying = sorted(
        e
        for reducer in REDUCERS.values()
        if reducer.collection == "deals"
        for r in reducer.rows
        if "negativeEquity" in payload_of(e := r.event)(DEAL)
    )

    assert carrying == ["deal.negative_equity_identified", "deal.negative_equity_reported"]


PLAIN = [
    pytest.param(oid(0xD1), "0000000000000000000000d1", id="objectid-hex"),
    pytest.param(dt.datetime(2026, 4, 21, 18, 0, tzinfo=dt.UTC), "2026-04-21T18:00:00.000Z", id="datetime-utc"),
    pytest.param(dt.datetime(2026, 4, 21, 18, 0, 5, 123987, tzinfo=dt.UTC), "2026-04-21T18:00:05.123Z", id="millis"),
    pytest.param(dt.datetime(2026, 4, 21, 18, 0), "2026-04-21T18:00:00.000Z", id="naive-datetime-is-utc"),
    pytest.param(
        dt.datetime(2026, 4, 21, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=-4))),
        "2026-04-21T18:00:00.000Z",
        id="offset-datetime-converted-to-utc",
    ),
    pytest.param(Decimal128("18500"), 18500, id="decimal128-integral"),
    pytest.param(Decimal128("18500.25"), 18500.25, id="decimal128-fraction"),
    pytest.param(Int64(2021), 2021, id="int64"),
    pytest.param({"a": [oid(1), None, True]}, {"a": ["000000000000000000000001", None, True]}, id="nested"),
]


@pytest.mark.parametrize(("value", "expected"), PLAIN)
def test_plain_json_values(value, expected):
    converted = plain(value)

    assert converted == expected
    assert json.dumps(converted) == json.dumps(expected)


def test_dates_before_year_1000_are_still_iso_8601():
    import datetime as dt

    from distiller.core.clock import iso_utc

    assert iso_utc(dt.datetime(1, 1, 1)) == "0001-01-01T00:00:00.000Z"
    assert iso_utc(dt.datetime(2026, 4, 21, 18, 0, 0, 123456, tzinfo=dt.UTC)) == "2026-04-21T18:00:00.123Z"
