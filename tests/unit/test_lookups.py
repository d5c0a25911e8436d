"""The pymongo-backed lookup repository: batched, cached, and loud when the database fails."""

import logging

import mongomock
import pytest
from pymongo.errors import ServerSelectionTimeoutError

from distiller.adapters.lookups import MongoLookups
from distiller.core.ejson import id_string
from distiller.core.lookups import LookupFailure, id_forms
from distiller.core.pipeline import deliveries_of, distill
from tests.factories import CountingDatabase, as_change, oid, partner, raw_insert, raw_update

ORG = "67e446a09d2eb254a3b130e7"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def database():
    db = mongomock.MongoClient(tz_aware=True)["privateauto"]
    db["users"].insert_many([{"_id": oid(i), "userDetails": {"organizationId": ORG}} for i in range(1, 6)])
    db["users"].insert_one({"_id": "legacy-string-id", "email": "x@example.com"})
    db["partners"].insert_many([partner("acme", organizationId=ORG), partner("zeta", webhookScope="appSource")])
    return db


def test_documents_are_fetched_in_one_query_per_call(database):
    counting = CountingDatabase(database)
    lookups = MongoLookups(counting)

    found = lookups.documents("users", [str(oid(i)) for i in range(1, 6)] + ["missing"])

    assert sorted(found) == sorted(str(oid(i)) for i in range(1, 6))
    assert counting.finds == {"users": 1}


def test_ids_match_objectid_and_string_forms(database):
    lookups = MongoLookups(database)

    found = lookups.documents("users", [str(oid(2)), "legacy-string-id"])

    assert found[str(oid(2))]["_id"] == oid(2)
    assert found["legacy-string-id"]["email"] == "x@example.com"


@pytest.mark.parametrize(
    ("value", "has_object_id_form"),
    [
        pytest.param("66240a11c3d9e40000000003", True, id="canonical-hex"),
        pytest.param("66240A11C3D9E40000000003", False, id="upper-case-hex"),
        pytest.param("abcdefghijkl", False, id="twelve-characters"),
        pytest.param("legacy-string-id", False, id="plain-string"),
    ],
)
def test_only_canonical_hex_has_an_object_id_form(value, has_object_id_form):
    # ObjectId.is_valid also accepts any 12-character string (as bytes) and upper-case hex:
    # their ObjectIds read as another id, so they must not match one.
    forms = id_forms(value)
    assert forms[0] == value
    assert (len(forms) == 2) is has_object_id_form
    assert all(id_string(form) == value for form in forms)


def test_a_string_and_an_object_id_sharing_a_hex_are_refused_as_ambiguous(database, caplog):
    twin = str(oid(3))
    database["users"].insert_one({"_id": twin, "userDetails": {"organizationId": "another-tenant"}})
    lookups = MongoLookups(database)

    with caplog.at_level(logging.ERROR, logger="distiller.core.lookups"):
        found = lookups.documents("users", [twin, str(oid(4))])

    assert twin not in found
    assert found[str(oid(4))]["_id"] == oid(4)
    assert any(twin in r.getMessage() and "ambiguous" in r.getMessage() for r in caplog.records)


def test_found_documents_are_cached_until_the_ttl_expires(database):
    clock = Clock()
    counting = CountingDatabase(database)
    lookups = MongoLookups(counting, ttl_seconds=30, clock=clock)

    lookups.documents("users", [str(oid(1))])
    lookups.documents("users", [str(oid(1))])
    assert counting.finds == {"users": 1}

    clock.now += 31
    lookups.documents("users", [str(oid(1))])
    assert counting.finds == {"users": 2}


def test_misses_are_not_cached_so_a_late_document_is_found_on_retry(database):
    lookups = MongoLookups(database)
    assert lookups.documents("users", [str(oid(9))]) == {}

    database["users"].insert_one({"_id": oid(9)})

    assert str(oid(9)) in lookups.documents("users", [str(oid(9))])


def test_partners_are_cached_and_sorted(database):
    clock = Clock()
    counting = CountingDatabase(database)
    lookups = MongoLookups(counting, ttl_seconds=60, clock=clock)

    first = lookups.partners()
    second = lookups.partners()

    assert [p.partner_id for p in first] == ["acme", "zeta"]
    assert second is first
    assert counting.finds == {"partners": 1}


def test_an_invalid_partner_record_is_skipped_and_reported_not_fatal(database):
    database["partners"].insert_one({"partnerId": "broken", "webhookScope": "everyone"})
    lookups = MongoLookups(database)

    partners = lookups.partners()

    assert [p.partner_id for p in partners] == ["acme", "zeta"]
    assert len(lookups.partner_errors) == 1
    assert "broken" in lookups.partner_errors[0] and "webhookScope" in lookups.partner_errors[0]


def test_database_failure_is_a_lookup_failure_naming_the_collection():
    class Failing:
        def __getitem__(self, name):
            class Collection:
                def find(self, *args, **kwargs):
                    raise ServerSelectionTimeoutError("no servers")

            return Collection()

    lookups = MongoLookups(Failing())

    with pytest.raises(LookupFailure, match="users: no servers"):
        lookups.documents("users", ["x"])
    with pytest.raises(LookupFailure, match="partners"):
        lookups.partners()


def test_pipeline_batches_owner_lookups_for_a_whole_batch(database):
    """Ten listings without organizationId route through their sellers with one users query."""
    counting = CountingDatabase(database)
    lookups = MongoLookups(counting)
    changes = [
        as_change(raw_insert("seller_listings", {"_id": oid(100 + i), "sellerId": oid(1 + i % 5)}), f"line {i}")
        for i in range(10)
    ]

    results = distill(changes, lookups)

    deliveries = deliveries_of(results)
    assert [d.partner_id for d in deliveries] == ["acme"] * 10
    assert counting.finds == {"users": 1, "partners": 1}


def test_update_without_full_document_is_looked_up_in_one_query(database):
    database["deals"].insert_many([{"_id": oid(200 + i), "appSource": "zeta"} for i in range(3)])
    counting = CountingDatabase(database)
    lookups = MongoLookups(counting)
    changes = [as_change(raw_update("deals", {"status": "sold"}, document_id=oid(200 + i))) for i in range(3)]

    deliveries = deliveries_of(distill(changes, lookups))

    assert [(d.partner_id, d.event) for d in deliveries] == [("zeta", "deal.completed")] * 3
    assert counting.finds["deals"] == 1


def test_update_without_full_document_and_no_such_document_is_an_error(database):
    lookups = MongoLookups(database)
    change = as_change(raw_update("deals", {"status": "sold"}, document_id=oid(999)), "line 4")

    [result] = distill([change], lookups)

    assert result.origin == "line 4"
    assert "carries no fullDocument" in result.reason and str(oid(999)) in result.reason
