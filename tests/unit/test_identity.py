"""eventKey / eventId: same input, same ids; every part of the key matters."""

import hashlib

import mongomock

from distiller.adapters.lookups import MongoLookups
from distiller.core.identity import event_id, event_key
from distiller.core.pipeline import deliveries_of, distill
from tests.factories import as_change, partner, raw_update

TOKEN = "8263A1B2C3D4"


def test_event_key_layout_is_token_partner_event_index():
    assert event_key(TOKEN, "acme", "deal.completed", 2) == "8263A1B2C3D4:acme:deal.completed:2"


def test_event_id_is_sha256_hex_of_the_key():
    key = event_key(TOKEN, "acme", "deal.completed", 0)
    assert event_id(key) == hashlib.sha256(key.encode()).hexdigest()
    assert len(event_id(key)) == 64


def test_every_component_changes_the_id():
    base = event_id(event_key(TOKEN, "acme", "deal.completed", 0))
    variants = [
        event_key("8263FFFF", "acme", "deal.completed", 0),
        event_key(TOKEN, "zeta", "deal.completed", 0),
        event_key(TOKEN, "acme", "deal.cancelled", 0),
        event_key(TOKEN, "acme", "deal.completed", 1),
    ]
    assert len({base, *map(event_id, variants)}) == 5


def _lookups(partners):
    db = mongomock.MongoClient(tz_aware=True)["privateauto"]
    db["partners"].insert_many(partners)
    return MongoLookups(db)


def test_replaying_a_change_gives_the_same_event_ids():
    raw = raw_update(
        "deals",
        {"dealState.closingStatus": "acknowledged", "status": "sold"},
        {"appSource": "acme", "status": "sold"},
        token=TOKEN,
    )
    lookups = _lookups([partner("acme")])

    first = deliveries_of(distill([as_change(raw)], lookups))
    again = deliveries_of(distill([as_change(raw)], _lookups([partner("acme")])))

    assert [(d.event, d.event_id) for d in first] == [(d.event, d.event_id) for d in again]
    assert [d.event_key for d in first] == [
        f"{TOKEN}:acme:deal.payment_acknowledged:0",
        f"{TOKEN}:acme:deal.completed:1",
    ]
    assert all(d.payload["eventId"] == d.event_id and d.payload["eventKey"] == d.event_key for d in first)


def test_emission_index_does_not_depend_on_subscriptions():
    """A partner subscribed only to deal.completed still sees index 1: indices are assigned before routing."""
    raw = raw_update(
        "deals",
        {"dealState.closingStatus": "acknowledged", "status": "sold"},
        {"appSource": "acme"},
        token=TOKEN,
    )
    lookups = _lookups([partner("acme", events=["deal.completed"])])

    [delivery] = deliveries_of(distill([as_change(raw)], lookups))

    assert delivery.event_key == f"{TOKEN}:acme:deal.completed:1"
