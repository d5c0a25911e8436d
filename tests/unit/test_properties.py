"""Property tests: whatever arrives, the distiller answers with outcomes or clear errors, never an exception.

(a) arbitrary JSON values and arbitrary text through `change_events_from_text` → `distill`;
(b) valid change events with keys dropped, values replaced, and wrapped in every ingest shape;
(c) eventId stability: the same change, distilled twice or delivered in any shape, yields the
    same (partnerId, event, eventId) list, and every eventId is sha256(eventKey).

Lookups are the real `MongoLookups` over an in-memory (mongomock) world.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distiller.adapters.lookups import MongoLookups
from distiller.core import ejson
from distiller.core.model import ChangeEvent, RecordError
from distiller.core.pipeline import ChangeOutcome, distill
from distiller.ingest.sources import change_events_from, change_events_from_text
from distiller_tools.world import in_memory_database
from tests.factories import oid, partner, raw_insert, raw_update
from tests.unit.test_sources import canonical, docdb, eventbridge, relaxed, sqs_batch, sqs_record, to_plain

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STABILITY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ORIGIN = "line 7"

# --------------------------------------------------------------------------------------------
# The world the lookups read
# --------------------------------------------------------------------------------------------

ORG = "67e446a09d2eb254a3b130e7"
DEAL_ID, OFFER_ID, LISTING_ID = oid(0xD1), oid(0x0F), oid(0x11)
BUYER_ID, SELLER_ID, NEW_USER_ID = oid(0xB0), oid(0x5E), oid(0x05)
WHEN = dt.datetime(2026, 4, 21, 14, 0, tzinfo=dt.UTC)

PARTNERS = [
    partner("acme", webhookScope="appSource"),  # every event of entities whose appSource is acme
    partner(
        "globex",
        organizationId=ORG,
        webhookScope="organization",
        events=["deal.*", "listing.*", "user.registered", "offer.accepted"],
    ),
    partner("initech", active=False, organizationId=ORG),
    partner("umbrella", organizationId=ORG, events=["deal.completed", "listing.sold"]),
]

DOCUMENTS: dict[str, dict[str, Any]] = {
    "deals": {
        "_id": DEAL_ID,
        "guid": "deal-guid",
        "appSource": "acme",
        "status": "sold",
        "buyer": {"id": BUYER_ID, "organizationId": ORG},
        "seller": {"id": SELLER_ID},
        "payment": {"privateAutoPay": {"amount": 25000}},
        "dealState": {"buyer": {"status": "joined"}, "closingStatus": "acknowledged"},
    },
    "offers": {
        "_id": OFFER_ID,
        "guid": "offer-guid",
        "appSource": "acme",
        "status": "accepted",
        "listingId": LISTING_ID,
        "offeredByUserId": BUYER_ID,
        "offeredToUserId": SELLER_ID,
        "offeredToOrganizationId": ORG,
        "price": 19500,
    },
    # no organization of its own: routes through its seller (users.userDetails.organizationId)
    "seller_listings": {
        "_id": LISTING_ID,
        "sellerId": SELLER_ID,
        "status": "live",
        "price": 21000,
        "vehicle": {"vin": "1HGCM82633A004352", "year": 2019, "make": "Honda", "model": "Accord"},
    },
    "users": {
        "_id": NEW_USER_ID,
        "appRegisteredFrom": "acme",
        "userDetails": {"organizationId": ORG, "email": "new@example.com", "firstName": "Ann", "lastName": "Lee"},
    },
}

WORLD: dict[str, list[dict[str, Any]]] = {
    "deals": [DOCUMENTS["deals"]],
    "offers": [DOCUMENTS["offers"]],
    "seller_listings": [DOCUMENTS["seller_listings"]],
    "users": [
        {"_id": SELLER_ID, "appRegisteredFrom": "pa-web", "userDetails": {"organizationId": ORG}},
        {"_id": BUYER_ID, "email": "buyer@example.com"},
    ],
}

#: Updates that fire at least one row of their collection's table, with or without the pre-image below.
UPDATES: dict[str, list[dict[str, Any]]] = {
    "deals": [
        {"status": "sold"},
        {"dealState.buyer.status": "joined"},
        {"allPartiesConfirmed": True},
        {"dealState": {"closingStatus": "acknowledged"}, "status": "sold"},
        {"payment.privateAutoPay.amount": 30000},
        {"seller.titleConfirmedDate": WHEN},
        {"negativeEquity": True, "status": "dealCancelled"},
    ],
    "offers": [{"status": "accepted"}, {"status": "declined"}, {"status": "deleted"}],
    "seller_listings": [
        {"status": "live"},
        {"status": "sold"},
        {"price": 12000},
        {"ownershipInfo.ownershipType": "owned"},
        {"deleted": True},
    ],
}
PRE_IMAGE = {"status": "pending"}


def fresh_lookups() -> MongoLookups:
    return MongoLookups(in_memory_database(PARTNERS, WORLD), ttl_seconds=float("inf"))


@functools.cache
def shared_lookups() -> MongoLookups:
    """One in-memory world for every example (the world is only read)."""
    return fresh_lookups()


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def distill_text(text: str | bytes, origin: str = ORIGIN) -> list[ChangeOutcome | RecordError]:
    items = list(change_events_from_text(text, origin))
    return checked(items, distill(items, shared_lookups()), origin, text)


def distill_obj(obj: Any, origin: str = ORIGIN) -> list[ChangeOutcome | RecordError]:
    items = list(change_events_from(obj, origin))
    return checked(items, distill(items, shared_lookups()), origin, obj)


def only_empty_batches(source: Any) -> bool:
    """Whether `source` is a batch with nothing in it (`{"Records": []}`, `{"events": []}`, or SQS of those).

    Only such an input may legitimately yield no item at all; anything else yields an event or an error.
    """
    if isinstance(source, (str, bytes)):
        try:
            source = ejson.loads(source)
        except Exception:
            return False
    if not isinstance(source, dict):
        return False
    records = source.get("Records")
    if isinstance(records, list):
        return all(
            isinstance(r, dict) and isinstance(r.get("body"), str) and only_empty_batches(r["body"]) for r in records
        )
    if source.get("eventSource") == "aws:sqs" or ("body" in source and "messageId" in source):
        return isinstance(source.get("body"), str) and only_empty_batches(source["body"])
    if source.get("eventSource") == "aws:docdb" or ("events" in source and "operationType" not in source):
        return source.get("events") == []
    return False


def checked(
    items: list[ChangeEvent | RecordError],
    results: list[ChangeOutcome | RecordError],
    origin: str,
    source: Any,
) -> list[ChangeOutcome | RecordError]:
    """Every result is an outcome or a clear error, at (or inside) the given origin; deliveries are well formed."""
    assert items or only_empty_batches(source), "nothing may vanish without an error"
    assert len(results) == len(items), "one result per input item"
    for item, result in zip(items, results, strict=True):
        assert isinstance(item, (ChangeEvent, RecordError))
        assert isinstance(result, (ChangeOutcome, RecordError)), result
        if isinstance(item, RecordError):
            assert result is item
        if isinstance(result, RecordError):
            assert isinstance(result.reason, str)
            assert result.reason.strip(), "a RecordError must say why"
            assert result.origin == origin or result.origin.startswith(origin + " "), result
            # A reducer or router that crashed is an internal failure caught by a safety net,
            # not a clear answer about the record.
            assert "reducer failed" not in result.reason, result
            assert "routing failed" not in result.reason, result
        else:
            assert result.change.origin == origin or result.change.origin.startswith(origin + " ")
            json.dumps(result.explain())
            for delivery in result.deliveries:
                assert delivery.event_key == (
                    f"{result.change.resume_token}:{delivery.partner_id}:{delivery.event}:"
                    f"{delivery.event_key.rsplit(':', 1)[1]}"
                )
                assert delivery.event_id == hashlib.sha256(delivery.event_key.encode("utf-8")).hexdigest()
                assert delivery.payload["eventId"] == delivery.event_id
                assert delivery.payload["eventKey"] == delivery.event_key
                # Partners parse payloads as JSON (RFC 8259): no NaN, no Infinity.
                json.dumps(delivery.to_json(), allow_nan=False)
    return results


def triples(results: list[ChangeOutcome | RecordError]) -> list[tuple[str, str, str]]:
    assert all(isinstance(r, ChangeOutcome) for r in results), results
    return [(d.partner_id, d.event, d.event_id) for r in results if isinstance(r, ChangeOutcome) for d in r.deliveries]


# --------------------------------------------------------------------------------------------
# (a) Arbitrary JSON and arbitrary text
# --------------------------------------------------------------------------------------------

#: Keys and strings of the change-event vocabulary, so random values often look almost right.
VOCABULARY_KEYS = [
    "_id", "_data", "operationType", "ns", "db", "coll", "documentKey", "fullDocument",
    "fullDocumentBeforeChange", "updateDescription", "updatedFields", "removedFields", "detail",
    "detail-type", "eventSource", "events", "event", "Records", "body", "messageId", "status",
    "appSource", "appRegisteredFrom", "organizationId", "sellerId", "userDetails",
    "$oid", "$date", "$numberLong", "$numberInt", "$numberDouble", "$numberDecimal", "$timestamp",
    "$binary", "$type", "$regularExpression", "$minKey", "t", "i", "T", "I",
]  # fmt: skip
VOCABULARY_STRINGS = [
    "insert", "update", "replace", "delete", "invalidate", "deals", "offers", "seller_listings",
    "users", "partners", "aws:docdb", "aws:sqs", "acme", "globex", "sold", "live", "accepted",
    "MongoDB Database Trigger for privateauto.deals", "MongoDB Database Trigger for privateauto.",
    str(DEAL_ID), str(LISTING_ID), str(SELLER_ID), ORG, "8263AB", "", "Infinity", "-Infinity", "NaN", "sNaN",
]  # fmt: skip

keys = st.one_of(st.sampled_from(VOCABULARY_KEYS), st.text(max_size=8))
strings = st.one_of(st.sampled_from(VOCABULARY_STRINGS), st.text(max_size=16))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(),
    st.floats(),
    strings,
)
_long_strings = st.one_of(st.integers().map(str), strings)
#: Extended JSON wrappers, well- and ill-formed: what `bson.json_util` decodes (or rejects) in a value.
ejson_wrappers = st.one_of(
    st.builds(lambda v: {"$oid": v}, st.one_of(st.sampled_from([str(DEAL_ID), "zz"]), strings, st.integers())),
    st.builds(lambda v: {"$date": v}, st.one_of(strings, st.integers(), st.floats())),
    st.builds(lambda v: {"$date": {"$numberLong": v}}, _long_strings),
    st.builds(lambda v: {"$numberDecimal": v}, st.one_of(st.sampled_from(["1.5", "Infinity", "sNaN"]), strings)),
    st.builds(lambda v: {"$numberLong": v}, _long_strings),
    st.builds(lambda v: {"$numberDouble": v}, strings),
    st.builds(lambda v, t: {"$binary": v, "$type": t}, st.one_of(strings, st.integers()), strings),
    st.builds(lambda v, t: {"$binary": {"base64": v, "subType": t}}, strings, strings),
    st.builds(lambda t, i: {"$timestamp": {"t": t, "i": i}}, st.integers(), st.integers()),
    st.builds(lambda p, o: {"$regularExpression": {"pattern": p, "options": o}}, strings, strings),
    st.builds(lambda v: {"$uuid": v}, strings),
)
json_values = st.recursive(
    st.one_of(scalars, ejson_wrappers),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=30,
)


@PROPERTY
@given(json_values)
def test_any_json_value_is_distilled_without_raising(value):
    distill_text(json.dumps(value))


@PROPERTY
@given(json_values)
def test_any_decoded_value_is_distilled_without_raising(value):
    distill_obj(value)


@PROPERTY
@given(st.one_of(st.text(), st.binary(), st.text(alphabet='{}[]":,0123456789$truefalsn \\', max_size=40)))
def test_any_text_is_distilled_without_raising(text):
    distill_text(text)


@PROPERTY
@given(json_values, st.integers(min_value=0, max_value=200))
def test_truncated_json_is_distilled_without_raising(value, cut):
    distill_text(json.dumps(value)[:cut])


@PROPERTY
@given(st.lists(json_values, min_size=1, max_size=4), st.lists(st.text(max_size=6), min_size=4, max_size=4))
def test_any_sqs_batch_of_any_bodies_is_distilled_without_raising(bodies, message_ids):
    batch = {"Records": [sqs_record(json.dumps(b), message_ids[i]) for i, b in enumerate(bodies)]}

    results = distill_text(json.dumps(batch))

    assert len(results) >= sum(not only_empty_batches(b) for b in bodies), "each non-empty body yields something"


# --------------------------------------------------------------------------------------------
# Valid change events, and every shape they can arrive in
# --------------------------------------------------------------------------------------------

tokens = st.text(alphabet="0123456789ABCDEF", min_size=4, max_size=40).map(lambda t: "8263" + t)


@st.composite
def valid_changes(draw: st.DrawFn) -> dict[str, Any]:
    """An insert or update of deals/offers/seller_listings/users, as pymongo yields it, that emits events."""
    collection = draw(st.sampled_from(["deals", "offers", "seller_listings", "users"]))
    token = draw(tokens)
    document = copy.deepcopy(DOCUMENTS[collection])
    if collection == "users" or draw(st.booleans()):
        return raw_insert(collection, document, token=token)
    updated = copy.deepcopy(draw(st.sampled_from(UPDATES[collection])))
    post_image = document if draw(st.booleans()) else None  # without it, the document is looked up
    before = dict(PRE_IMAGE) if draw(st.booleans()) else None
    return raw_update(collection, updated, post_image, before=before, document_id=document["_id"], token=token)


Feed = Callable[[dict[str, Any]], tuple[Any, Callable[[Any], str] | None]]


def _collection(raw: dict[str, Any]) -> str:
    ns = raw.get("ns")
    coll = ns.get("coll") if isinstance(ns, dict) else None
    return coll if isinstance(coll, str) else "deals"


#: Every way one change can reach the distiller, as (envelope, serialiser); no serialiser: fed decoded.
SHAPES: dict[str, Feed] = {
    "pymongo-dict": lambda raw: (raw, None),
    "relaxed-ejson": lambda raw: (raw, relaxed),
    "canonical-ejson": lambda raw: (raw, canonical),
    "eventbridge-ejson": lambda raw: (eventbridge(raw, _collection(raw)), relaxed),
    "eventbridge-plain": lambda raw: (eventbridge(to_plain(raw), _collection(raw)), json.dumps),
    "eventbridge-no-ns": lambda raw: (
        eventbridge({k: v for k, v in raw.items() if k != "ns"}, _collection(raw)),
        canonical,
    ),
    "docdb": lambda raw: (docdb(raw), canonical),
    "sqs-record": lambda raw: (sqs_record(relaxed(raw)), json.dumps),
    "sqs-record-eventbridge-plain": lambda raw: (
        sqs_record(json.dumps(eventbridge(to_plain(raw), _collection(raw)))),
        json.dumps,
    ),
    "sqs-batch-eventbridge-ejson": lambda raw: (sqs_batch(relaxed(eventbridge(raw, _collection(raw)))), json.dumps),
    "sqs-record-docdb": lambda raw: (sqs_record(canonical(docdb(raw))), json.dumps),
    "sqs-batch-docdb-in-record": lambda raw: (sqs_batch(canonical(docdb(raw))), json.dumps),
}


def deliver(shape: str, raw: dict[str, Any], mutate: Callable[[Any], Any] | None = None) -> tuple[str, Any]:
    """`(kind, input)` for the adapter: kind "obj" (decoded) or "text"."""
    envelope, serialise = SHAPES[shape](copy.deepcopy(raw))
    if mutate is not None:
        envelope = mutate(envelope)
    return ("obj", envelope) if serialise is None else ("text", serialise(envelope))


def run(kind: str, value: Any, lookups: MongoLookups | None = None) -> list[ChangeOutcome | RecordError]:
    items = list(change_events_from(value, ORIGIN) if kind == "obj" else change_events_from_text(value, ORIGIN))
    return checked(items, distill(items, lookups or shared_lookups()), ORIGIN, value)


# --------------------------------------------------------------------------------------------
# (b) Malformed change events
# --------------------------------------------------------------------------------------------


def value_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a nested value (dict keys and list positions), the root excluded."""
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield (*prefix, key)
        yield from value_paths(child, (*prefix, key))


def _holder(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        value = value[part]
    return value


@dataclass(frozen=True)
class Mutation:
    """Edits applied in turn: ("drop", n, _) deletes the n-th nested value (mod their count),
    ("replace", n, value) puts `value` there. The repr is the whole mutation, so failures reproduce."""

    edits: tuple[tuple[str, int, Any], ...]

    def __call__(self, value: Any) -> Any:
        value = copy.deepcopy(value)
        for action, n, replacement in self.edits:
            paths = list(value_paths(value))
            if not paths:
                break
            path = paths[n % len(paths)]
            holder = _holder(value, path)
            if action == "drop":
                del holder[path[-1]]
            else:
                holder[path[-1]] = copy.deepcopy(replacement)
        return value


def mutations() -> st.SearchStrategy[Mutation]:
    """Up to three edits: drop a key (or list entry), or replace a nested value with any JSON value."""
    edit = st.one_of(
        st.tuples(st.just("drop"), st.integers(min_value=0, max_value=10_000), st.none()),
        st.tuples(st.just("replace"), st.integers(min_value=0, max_value=10_000), json_values),
    )
    return st.lists(edit, max_size=3).map(lambda edits: Mutation(tuple(edits)))


@PROPERTY
@given(valid_changes(), mutations(), st.sampled_from(list(SHAPES)), st.one_of(st.none(), mutations()))
def test_malformed_change_events_never_raise(raw, mutate_event, shape, mutate_envelope):
    kind, value = deliver(shape, mutate_event(raw), mutate_envelope)

    run(kind, value)


@PROPERTY
@given(valid_changes(), st.sampled_from(list(SHAPES)), st.data())
def test_a_dropped_required_field_is_named_in_the_error(raw, shape, data):
    """Dropping the resume token, operationType or (for updates) updateDescription: a RecordError naming it."""
    required = ["_id", "operationType"] + (["updateDescription"] if raw["operationType"] == "update" else [])
    field = data.draw(st.sampled_from(required))
    broken = {k: v for k, v in raw.items() if k != field}

    kind, value = deliver(shape, broken)
    results = run(kind, value)

    assert len(results) == 1
    error = results[0]
    assert isinstance(error, RecordError), error
    assert (field if field != "_id" else "_id._data") in error.reason


#: Fields a payload builder or the router reads, per collection (dotted paths into the document).
READ_FIELDS: dict[str, list[str]] = {
    "deals": ["guid", "status", "amount", "payment.privateAutoPay.amount", "buyer.id", "appSource",
              "buyer.organizationId"],
    "offers": ["guid", "status", "price", "listingId", "offeredByUserId", "appSource", "offeredToOrganizationId"],
    "seller_listings": ["price", "status", "vehicle.vin", "vehicle.year", "ownershipInfo.ownershipType",
                        "sellerId", "organizationId"],
    "users": ["userDetails.email", "firstName", "appRegisteredFrom", "userDetails.organizationId"],
}  # fmt: skip


#: Values Mongo can store that plain JSON cannot say, plus wrappers that decode to nothing ordinary.
EDGE_VALUES = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        {"$numberDouble": "NaN"},
        {"$numberDouble": "-Infinity"},
        {"$numberDecimal": "Infinity"},
        {"$numberDecimal": "NaN"},
        {"$numberDecimal": "sNaN"},
        {"$numberDecimal": "1E+6144"},
        {"$numberLong": "9223372036854775807"},
        {"$date": {"$numberLong": "253402300799999"}},
        {"$date": "0001-01-01T00:00:00Z"},
        {"$timestamp": {"t": 0, "i": 0}},
        {"$minKey": 1},
        {"$maxKey": 1},
        {"$binary": {"base64": "", "subType": "04"}},
        {"$regularExpression": {"pattern": "(", "options": ""}},
        {"$symbol": "s"},
        {"$code": "function(){}"},
        {"$undefined": True},
        {"$ref": "users", "$id": {"$oid": "0000000000000000000000b0"}},
    ]
)


@PROPERTY
@given(st.sampled_from(list(READ_FIELDS)), st.data(), st.one_of(EDGE_VALUES, scalars, ejson_wrappers, json_values))
def test_any_value_in_a_field_the_payload_or_router_reads(collection, data, value):
    """An insert whose payload/routing field holds anything: strict-JSON deliveries, or a clear error."""
    document = copy.deepcopy(DOCUMENTS[collection])
    *parents, last = data.draw(st.sampled_from(READ_FIELDS[collection])).split(".")
    holder = document
    for part in parents:
        holder = holder.setdefault(part, {})
    holder[last] = value

    run("text", relaxed(raw_insert(collection, document, token="8263C0FFEE")))


# --------------------------------------------------------------------------------------------
# (c) eventId stability
# --------------------------------------------------------------------------------------------


@STABILITY
@given(valid_changes())
def test_same_change_same_event_ids_in_every_shape(raw):
    per_shape = {shape: triples(run(*deliver(shape, raw))) for shape in SHAPES}

    reference = per_shape["pymongo-dict"]
    assert reference, "every generated change emits at least one routed event"
    assert {shape: t for shape, t in per_shape.items() if t != reference} == {}
    for _, _, eid in reference:
        assert len(eid) == 64


@STABILITY
@given(valid_changes())
def test_extended_json_shapes_give_identical_deliveries(raw):
    """Shapes that keep BSON types agree on whole deliveries, payloads included (plain JSON only on ids)."""
    ejson_shapes = [s for s in SHAPES if "plain" not in s]
    deliveries = {
        shape: [d.to_json() for r in run(*deliver(shape, raw)) if isinstance(r, ChangeOutcome) for d in r.deliveries]
        for shape in ejson_shapes
    }

    reference = deliveries["pymongo-dict"]
    assert reference
    assert {shape: d for shape, d in deliveries.items() if d != reference} == {}


@STABILITY
@given(valid_changes(), st.sampled_from(list(SHAPES)))
def test_distilling_twice_gives_the_same_deliveries(raw, shape):
    kind, value = deliver(shape, raw)

    first = [d.to_json() for r in run(kind, value, fresh_lookups()) for d in getattr(r, "deliveries", [])]
    again = [d.to_json() for r in run(kind, value, shared_lookups()) for d in getattr(r, "deliveries", [])]
    warm = [d.to_json() for r in run(kind, value, shared_lookups()) for d in getattr(r, "deliveries", [])]

    assert first
    assert first == again == warm


@STABILITY
@given(st.lists(valid_changes(), min_size=1, max_size=6))
def test_batching_does_not_change_event_ids(raws):
    """A change distilled alone or inside a batch (one SQS delivery) gets the same eventIds."""
    alone = [t for raw in raws for t in triples(run(*deliver("relaxed-ejson", raw)))]
    batch = sqs_batch(*(relaxed(raw) for raw in raws))

    together = triples(run("text", json.dumps(batch)))

    assert together == alone


@STABILITY
@given(valid_changes(), tokens)
def test_event_id_depends_on_the_resume_token(raw, other_token):
    moved = {**raw, "_id": {"_data": other_token}}

    first, second = triples(run(*deliver("relaxed-ejson", raw))), triples(run(*deliver("relaxed-ejson", moved)))

    assert [(p, e) for p, e, _ in first] == [(p, e) for p, e, _ in second]
    if other_token != raw["_id"]["_data"]:
        assert not {eid for _, _, eid in first} & {eid for _, _, eid in second}


# --------------------------------------------------------------------------------------------
# Inputs the properties above are built to reach; pinned here so each bug has its own test
# --------------------------------------------------------------------------------------------


def _deal_insert(**fields: Any) -> dict[str, Any]:
    return raw_insert("deals", {**copy.deepcopy(DOCUMENTS["deals"]), **fields}, token="8263FEED")


PIPELINE_REGRESSIONS = [
    # ejson.plain(Decimal128("Infinity")) did int(Decimal("Infinity")) → OverflowError, which
    # escaped distill from routing_keys (a routing field), owner_reference, or a payload builder.
    pytest.param(
        relaxed(_deal_insert(appSource={"$numberDecimal": "Infinity"})), id="decimal-infinity-in-routing-field"
    ),
    pytest.param(
        relaxed(_deal_insert(payment={"privateAutoPay": {"amount": {"$numberDecimal": "-Infinity"}}})),
        id="decimal-infinity-in-payload",
    ),
    pytest.param(
        relaxed(raw_insert("seller_listings", {"_id": LISTING_ID, "sellerId": {"$numberDecimal": "Infinity"}})),
        id="decimal-infinity-as-owner-reference",
    ),
    # ejson.plain(Decimal128("sNaN")): `number == number.to_integral_value()` signalled
    # decimal.InvalidOperation, which escaped distill.
    pytest.param(relaxed(_deal_insert(appSource={"$numberDecimal": "sNaN"})), id="decimal-snan-in-routing-field"),
    # A resume token holding a lone surrogate (JSON "\ud800" is valid JSON) reached
    # identity.event_id, whose key.encode("utf-8") raised UnicodeEncodeError out of distill.
    pytest.param(
        json.dumps({**json.loads(relaxed(_deal_insert())), "_id": {"_data": "8263\ud800"}}),
        id="lone-surrogate-in-resume-token",
    ),
    # A double NaN/Infinity (Mongo stores them; relaxed Extended JSON writes {"$numberDouble": "NaN"})
    # goes through ejson.plain unchanged, so the partner payload (and the CLI's JSON line) holds
    # the bare token NaN / Infinity, which is not JSON (RFC 8259; JSON.parse rejects it).
    pytest.param(relaxed(_deal_insert(guid=float("nan"))), id="double-nan-in-payload"),
    pytest.param(
        relaxed(_deal_insert(payment={"privateAutoPay": {"amount": float("inf")}})), id="double-infinity-in-payload"
    ),
    # ejson.plain(Decimal128("1E+6144")) is integral, so it becomes a 6145-digit int: str() of it
    # (id_string, for an id or routing field) and json.dumps of it (a payload field) raise
    # ValueError "Exceeds the limit (4300 digits) for integer string conversion".
    pytest.param(relaxed(_deal_insert(guid={"$numberDecimal": "1E+6144"})), id="huge-decimal-in-payload"),
    pytest.param(relaxed(_deal_insert(buyer={"id": {"$numberDecimal": "1E+6144"}})), id="huge-decimal-as-id"),
    pytest.param(relaxed(_deal_insert(appSource={"$numberDecimal": "1E+6144"})), id="huge-decimal-in-routing-field"),
]


@pytest.mark.parametrize("text", PIPELINE_REGRESSIONS)
def test_values_that_broke_the_pipeline(text):
    """Each answered with a ChangeOutcome (strict-JSON deliveries) or a clear RecordError, never an exception."""
    distill_text(text)
