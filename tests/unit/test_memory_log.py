"""The local pipeline's indexed delivery log answers exactly as `MongoDeliveryLog` does over the same attempts."""

import datetime as dt
import warnings

import mongomock
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.deliver.log import DELIVERIES_COLLECTION, AttemptKey, ClaimHeld, DeliveryAttempt
from distiller_tools.local.memory_log import IndexedDeliveryLog

warnings.filterwarnings("ignore", "datetime.datetime.utcnow", DeprecationWarning)

START = dt.datetime.now(dt.UTC).replace(microsecond=0)  # recent: the production TTL index keeps it


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


def attempt(partner="acme", event_id="e-1", number=1, status="failed", redrive=0, at=START) -> DeliveryAttempt:
    return DeliveryAttempt(
        partner_id=partner,
        event="deal.created",
        event_id=event_id,
        attempt=number,
        status=status,
        url="https://hooks.acme.example/",
        attempted_at=at,
        payload={"eventId": event_id},
        status_code=200 if status == "delivered" else 503,
        redrive=redrive,
    )


def both_logs(clock=None):
    """A `MongoDeliveryLog` and an `IndexedDeliveryLog`, each over a collection of its own."""
    clock = clock or Clock()
    mongo_db = mongomock.MongoClient(tz_aware=True)["privateauto"]
    mongo = MongoDeliveryLog(mongo_db[DELIVERIES_COLLECTION], clock=clock)
    mongo.ensure_indexes(30)
    local_collection = mongomock.MongoClient(tz_aware=True)["privateauto"][DELIVERIES_COLLECTION]
    return mongo, mongo_db[DELIVERIES_COLLECTION], IndexedDeliveryLog(local_collection, clock=clock), local_collection


QUESTIONS = [(p, e, n, r) for p in ("acme", "zenith") for e in ("e-1", "e-2") for n in (1, 2, 3) for r in (0, 7)]

recorded = st.lists(
    st.builds(
        attempt,
        partner=st.sampled_from(["acme", "zenith"]),
        event_id=st.sampled_from(["e-1", "e-2"]),
        number=st.integers(1, 3),
        status=st.sampled_from(["delivered", "failed", "skipped"]),
        redrive=st.sampled_from([0, 7]),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(recorded)
def test_already_processed_answers_as_mongo_for_any_history(history):
    # Given the same attempts recorded in both logs
    mongo, mongo_collection, local, local_collection = both_logs()
    for entry in history:
        mongo.record(entry)
        local.record(entry)

    # Then every question gets the same answer, and the same documents are stored
    for question in QUESTIONS:
        assert local.already_processed(*question) == mongo.already_processed(*question), question
    strip = [{k: v for k, v in d.items() if k != "_id"} for d in mongo_collection.find()]
    assert [{k: v for k, v in d.items() if k != "_id"} for d in local_collection.find()] == strip


def test_a_failed_attempt_stored_before_the_delivery_answers_first_as_in_mongo():
    mongo, _, local, _ = both_logs()
    for log in (mongo, local):
        log.record(attempt(number=1, status="failed"))
        log.record(attempt(number=2, status="delivered"))

    answer = local.already_processed("acme", "e-1", 1)

    assert answer == mongo.already_processed("acme", "e-1", 1) == "attempt 1 was already made (redelivered message)"
    assert local.already_processed("acme", "e-1", 3) == "already delivered (attempt 2)"


def test_attempts_already_in_the_collection_are_indexed_when_the_log_is_made():
    # Given a collection holding attempts from a `--deliveries` file (no `redrive`: round 0)
    collection = mongomock.MongoClient(tz_aware=True)["privateauto"][DELIVERIES_COLLECTION]
    collection.insert_many([attempt(status="delivered").to_document(), attempt(event_id="e-2").to_document()])

    local = IndexedDeliveryLog(collection)

    assert local.already_processed("acme", "e-1", 2) == "already delivered (attempt 1)"
    assert local.already_processed("acme", "e-2", 1) == "attempt 1 was already made (redelivered message)"
    assert local.already_processed("acme", "e-2", 2) is None
    assert local.already_processed("acme", "e-1", 2, redrive=7) is None  # another round


@pytest.mark.parametrize("lease_seconds", [30.0, 0.5])
def test_claims_are_held_released_and_taken_over_as_in_mongo(lease_seconds):
    clock = Clock()
    mongo, _, local, _ = both_logs(clock)
    key = AttemptKey("acme", "e-1", 1)

    # A first claim is granted; a second, while the lease runs, is refused with the same answer
    assert isinstance(local.claim(key, lease_seconds), str) and isinstance(mongo.claim(key, lease_seconds), str)
    held_local, held_mongo = local.claim(key, lease_seconds), mongo.claim(key, lease_seconds)
    assert isinstance(held_local, ClaimHeld) and held_local == held_mongo

    # Once the lease has run out, the attempt can be taken over (its holder crashed)
    clock.now = START + dt.timedelta(seconds=lease_seconds + 1)
    token = local.claim(key, lease_seconds)
    assert isinstance(token, str) and isinstance(mongo.claim(key, lease_seconds), str)

    # Released with another token: still held; with its own: free again
    local.release(key, "not-the-token")
    assert isinstance(local.claim(key, lease_seconds), ClaimHeld)
    local.release(key, token)
    assert isinstance(local.claim(key, lease_seconds), str)
    assert isinstance(local.claim(AttemptKey("acme", "e-1", 1, redrive=7), lease_seconds), str)  # another round
