"""DeliveryFilter: the webhook-deliveries filters, once. Its Mongo query (run here on mongomock)
and its in-memory `matches` (on a stored document and on its `log_line`) select the same
attempts, row by row; `attempts_query` is the same query."""

from __future__ import annotations

import datetime as dt
from typing import Any

import mongomock
import pytest

from distiller.deliver.log import DeliveryFilter, attempts_query, log_line

T0 = dt.datetime(2025, 3, 14, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
PLUS_ONE = dt.timezone(dt.timedelta(hours=1))


def document(n: int, partner: str, status: str, event: str, event_id: str, at: dt.datetime | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": n, "partnerId": partner, "status": status, "event": event, "eventId": event_id}
    if at is not None:
        doc["attemptedAt"] = at
    return doc


DOCUMENTS = [
    document(1, "acme", "delivered", "deal.created", "e1", T0),
    document(2, "acme", "failed", "deal.created", "e1", T0 + MINUTE),
    document(3, "acme", "skipped", "deal.completed", "e3", T0 + 2 * MINUTE),
    document(4, "carmart", "delivered", "deal.created", "e4", T0 + MINUTE),
    document(5, "acme", "delivered", "offer.created", "e5", T0 + 3 * MINUTE + dt.timedelta(milliseconds=250)),
    document(6, "acme", "failed", "offer.created", "e5", None),  # no time: only undated filters select it
]

AT_5 = T0 + 3 * MINUTE + dt.timedelta(milliseconds=250)

ROWS: list[tuple[dict[str, Any], set[int]]] = [
    ({"partner_id": "acme"}, {1, 2, 3, 5, 6}),
    ({"partner_id": "carmart"}, {4}),
    ({"partner_id": "nobody"}, set()),
    ({"partner_id": "acme", "status": "delivered"}, {1, 5}),
    ({"partner_id": "acme", "status": "failed"}, {2, 6}),
    ({"partner_id": "acme", "status": "skipped"}, {3}),
    ({"partner_id": "acme", "event": "deal.created"}, {1, 2}),
    ({"partner_id": "acme", "event": "user.created"}, set()),
    ({"partner_id": "acme", "event_id": "e5"}, {5, 6}),
    ({"partner_id": "acme", "date_from": T0 + MINUTE}, {2, 3, 5}),  # inclusive
    ({"partner_id": "acme", "date_to": T0 + MINUTE}, {1, 2}),  # inclusive
    ({"partner_id": "acme", "date_from": T0 + MINUTE, "date_to": T0 + 2 * MINUTE}, {2, 3}),
    ({"partner_id": "acme", "date_from": dt.datetime(2025, 3, 14, 13, 2, tzinfo=PLUS_ONE)}, {3, 5}),  # an offset
    ({"partner_id": "acme", "date_to": dt.datetime(2025, 3, 14, 12, 0)}, {1}),  # no offset: UTC
    ({"partner_id": "acme", "date_from": AT_5 + dt.timedelta(microseconds=400)}, {5}),  # at the millisecond
    ({"partner_id": "acme", "date_to": AT_5 - dt.timedelta(microseconds=1)}, {1, 2, 3}),
    ({"partner_id": "acme", "date_from": T0 + 4 * MINUTE}, set()),
    ({"partner_id": "acme", "status": "failed", "event": "offer.created"}, {6}),
    ({"partner_id": "acme", "status": "delivered", "date_from": T0 + MINUTE}, {5}),
    ({"partner_id": "carmart", "event_id": "e1"}, set()),
]


@pytest.fixture(scope="module")
def collection():
    collection = mongomock.MongoClient(tz_aware=True)["privateauto"]["webhook_deliveries"]
    collection.insert_many([dict(doc) for doc in DOCUMENTS])
    return collection


@pytest.mark.parametrize(("filters", "expected"), ROWS)
def test_the_mongo_query_and_matches_select_the_same_attempts(collection, filters, expected):
    wanted = DeliveryFilter(**filters)

    by_mongo = {doc["_id"] for doc in collection.find(wanted.query())}
    stored = list(collection.find({}))
    by_document = {doc["_id"] for doc in stored if wanted.matches(doc)}
    by_log_line = {line["id"] for line in map(log_line, stored) if wanted.matches(line)}

    assert by_mongo == by_document == by_log_line == expected


@pytest.mark.parametrize(("filters", "expected"), ROWS)
def test_attempts_query_is_the_filter_query(filters, expected):
    partner_id = filters["partner_id"]
    options = {key: value for key, value in filters.items() if key != "partner_id"}
    assert attempts_query(partner_id, **options) == DeliveryFilter(**filters).query()


def test_an_unreadable_time_fails_a_dated_filter_only():
    entry = {"partnerId": "acme", "attemptedAt": "yesterday"}
    assert DeliveryFilter("acme").matches(entry)
    assert not DeliveryFilter("acme", date_to=T0).matches(entry)
