"""Pins for docs/assumptions.md entries that no other test pinned on its own.

Each test names, in its docstring, the assumption it holds in place; the entry names the test back
(tests/unit/test_assumptions.py checks that every entry does).
"""

import datetime as dt
import inspect
import io
import json
import logging
import sys

import mongomock
import pytest
import yaml
from bson import ObjectId

from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.adapters.lookups import MongoLookups
from distiller.adapters.secrets import DEFAULT_PREFIX, PartnerSecrets
from distiller.core.model import ChangeEvent
from distiller.core.partners import partner_from_record
from distiller.core.pipeline import ChangeOutcome, deliveries_of, distill
from distiller.core.reducers import REDUCERS
from distiller.core.routing import ROUTING_FIELDS, routing_keys, scope_decision
from distiller.core.transitions import Transitions
from distiller.deliver.dispatch import SIGNATURE_REFUSED, Dispatcher, RetrySchedule
from distiller.deliver.log import DELIVERIES_COLLECTION
from distiller.deliver.sender import WebhookSender
from distiller.ingest.sources import change_events_from, change_events_from_text
from distiller.runtime import DispatcherRuntime
from distiller.settings import DispatcherSettings, MongoSettings
from distiller_tools.cli import main
from distiller_tools.world import in_memory_database
from tests.factories import as_change, oid, partner, raw_delete, raw_insert, raw_update, resume_token
from tests.unit.test_sources import eventbridge, relaxed, sqs_batch, sqs_record, to_plain
from tests.unit.test_template import ROOT, CfnLoader

ORG = "67e446a09d2eb254a3b130e7"
T0 = dt.datetime(2026, 4, 21, 14, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)

DEAL = {
    "_id": oid(0xD1),
    "guid": "d30d5242-c880-4534-8c51-0032dde02093",
    "appSource": "acme",
    "status": "active",
    "buyer": {"id": oid(0xB1), "organizationId": ORG},
    "seller": {"id": oid(0x51)},
    "dealState": {"closingStatus": "initiated"},
    "payment": {"privateAutoPay": {"amount": 18500}},
}


def lookups(partners, **world):
    return MongoLookups(in_memory_database(partners, world), ttl_seconds=float("inf"))


def delivered(results):
    return [(d.partner_id, d.event) for d in deliveries_of(results)]


def run_cli(monkeypatch, capsys, argv, stdin_text=""):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin_text))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def ejson_line(event) -> str:
    return relaxed(event)


@pytest.fixture(scope="module")
def template():
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)


# --- Sources ------------------------------------------------------------------------------------


def test_sqs_bodies_may_nest_an_accepted_shape_more_than_once():
    """Accepted shapes: SQS bodies holding any accepted shape, "nested once or more"."""
    change = raw_update("deals", {"status": "sold"}, {**DEAL, "status": "sold"}, before=DEAL, token="82AB01")
    inner = sqs_batch(relaxed(eventbridge(change)))  # an SQS batch whose body is an EventBridge event
    outer = sqs_record(json.dumps(sqs_record(json.dumps(inner), "m-inner")), "m-outer")

    [event] = list(change_events_from_text(json.dumps(outer), "line 1"))

    assert isinstance(event, ChangeEvent), event
    assert (event.resume_token, event.source, event.collection) == ("82AB01", "eventbridge", "deals")
    assert event.origin == "line 1 (messageId m-outer) (messageId m-inner) Records[0] (messageId m-0)"


def test_plain_json_and_extended_json_modes_give_identical_payloads_and_event_ids():
    """Ids in plain-JSON mode: hex-string ids and ISO string dates give the same payloads and eventIds."""
    poa = {
        "_id": oid(0xD0C),
        "dealId": DEAL["_id"],
        "docClassification": "poa",
        "status": "pending",
        "manualSignatures": [{"signerRole": "seller", "signedAt": T0}, {"signerRole": "buyer", "signedAt": None}],
    }
    signed = {
        **poa,
        "manualSignatures": [{"signerRole": "seller", "signedAt": T0}, {"signerRole": "buyer", "signedAt": T1}],
    }
    changes = [
        raw_update("deals", {"status": "sold"}, {**DEAL, "status": "sold"}, before=DEAL, token="82AB01"),
        raw_update("documents", {"manualSignatures.1.signedAt": T1}, signed, before=poa, token="82AB02"),
    ]
    world = lookups([partner("acme", webhookScope="appSource")], deals=[DEAL])

    def deliveries(texts):
        items = [item for text in texts for item in change_events_from_text(text, "line 1")]
        return [d.to_json() for d in deliveries_of(distill(items, world))]

    extended = deliveries([relaxed(eventbridge(c, collection=c["ns"]["coll"])) for c in changes])
    plain = deliveries([json.dumps(eventbridge(to_plain(c), collection=c["ns"]["coll"])) for c in changes])

    assert [row["event"] for row in extended] == [
        "deal.completed",
        "document.signature_added",
        "document.completed",
        "deal.poa_approved",
    ]
    assert plain == extended


# --- Transitions --------------------------------------------------------------------------------


def test_reconfirming_the_title_with_a_new_date_fires_title_submitted_again():
    """`set` means set to a non-null value that differs: a new titleConfirmedDate is a new seller action."""
    confirmed = {**DEAL, "seller": {**DEAL["seller"], "titleConfirmedDate": T0}}
    again = {**DEAL, "seller": {**DEAL["seller"], "titleConfirmedDate": T1}}
    change = as_change(raw_update("deals", {"seller.titleConfirmedDate": T1}, again, before=confirmed))

    fired = REDUCERS["deals"].reduce(Transitions(change, change.full_document))

    assert [r.event for r in fired] == ["deal.title_submitted"]


STREAM_EVENTS = [
    pytest.param(raw_delete("deals", oid(0xD1)), "delete", id="delete"),
    pytest.param({"_id": {"_data": "82DD01"}, "operationType": "drop", "ns": {"db": "privateauto", "coll": "deals"}},
                 "drop", id="drop"),
    pytest.param({"_id": {"_data": "82DD02"}, "operationType": "rename", "ns": {"db": "privateauto", "coll": "deals"},
                  "to": {"db": "privateauto", "coll": "deals_old"}}, "rename", id="rename"),
    pytest.param({"_id": {"_data": "82DD03"}, "operationType": "invalidate",
                  "ns": {"db": "privateauto", "coll": "deals"}}, "invalidate", id="invalidate"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "operation"), STREAM_EVENTS)
def test_physical_deletes_and_stream_events_produce_nothing_and_explain_says_so(raw, operation):
    """Physical deletes, `drop`, `rename`, `invalidate` produce no events; `--explain` says so."""
    [item] = list(change_events_from(raw, "line 1"))
    world = lookups([partner("acme", webhookScope="appSource")], deals=[DEAL])

    [outcome] = distill([item], world, explain=True)

    assert isinstance(outcome, ChangeOutcome), outcome
    assert outcome.events == [] and outcome.deliveries == []
    explained = outcome.explain()
    assert explained["operationType"] == operation
    assert explained["note"].startswith(f"{operation}: no partner event")


def test_a_collection_without_a_reducer_produces_nothing_and_explain_says_so():
    """Collections without a reducer produce nothing; `--explain` says "no reducer for collection"."""
    assert "payments" not in REDUCERS
    change = as_change(raw_insert("payments", {"_id": oid(0x9A), "appSource": "acme", "amount": 18500}))

    [outcome] = distill([change], lookups([partner("acme", webhookScope="appSource")]), explain=True)

    assert isinstance(outcome, ChangeOutcome), outcome
    assert outcome.events == [] and outcome.deliveries == []
    assert outcome.explain()["note"] == "no reducer for collection 'payments'"


# --- Reducers -----------------------------------------------------------------------------------

LISTING = {"_id": oid(0x11), "status": "live", "price": 18500, "sellerId": oid(0x51)}


@pytest.mark.parametrize(
    ("updated", "expected"),
    [
        pytest.param({"cashOffers": [{"amount": 15000}]}, [], id="cashOffers"),
        pytest.param({"cashOfferStatus": "pending", "updatedAt": T0, "__v": 4}, [], id="cashOfferStatus"),
        pytest.param({"cashOffer.amount": 15500}, [], id="cashOffer-subfield"),
        pytest.param({"status": "pending"}, ["listing.updated"], id="status-without-a-row-is-an-edit"),
    ],
)
def test_listing_catch_all_ignores_cash_offer_writes_but_not_a_status_without_a_row(updated, expected):
    """`listing.updated` ignores bookkeeping and every cash-offer field; a status with no row is an edit."""
    after = {**LISTING, **{k: v for k, v in updated.items() if "." not in k}}
    change = as_change(raw_update("seller_listings", updated, after, before=LISTING, document_id=LISTING["_id"]))

    fired = REDUCERS["seller_listings"].reduce(Transitions(change, change.full_document))

    assert [r.event for r in fired] == expected


# --- Payloads -----------------------------------------------------------------------------------

INSERTS = [
    pytest.param("deals", {**DEAL}, "deal.created", id="deals"),
    pytest.param("offers", {"_id": oid(0x0F), "appSource": "acme", "status": "pending", "price": 17000},
                 "offer.created", id="offers"),
    pytest.param("seller_listings", {**LISTING, "appSource": "acme", "organizationId": ORG}, "listing.created",
                 id="seller_listings"),
    pytest.param("users", {"_id": oid(0xA5), "appRegisteredFrom": "acme", "email": "jane@example.com"},
                 "user.registered", id="users"),
]  # fmt: skip


@pytest.mark.parametrize(("collection", "document", "event"), INSERTS)
def test_payload_envelope_comes_first_and_entity_type_is_the_collection(collection, document, event):
    """Field order: `id`, `eventId`, `eventKey`, `entityType` (the source collection), then the family's fields."""
    results = distill([as_change(raw_insert(collection, document))], lookups([partner("acme")]))

    [delivery] = deliveries_of(results)
    assert delivery.event == event
    assert list(delivery.payload)[:4] == ["id", "eventId", "eventKey", "entityType"]
    assert delivery.payload["entityType"] == collection
    assert delivery.payload["id"] == str(document["_id"])
    assert (delivery.payload["eventId"], delivery.payload["eventKey"]) == (delivery.event_id, delivery.event_key)


# --- Routing and subscriptions ------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({"partnerId": "acme"}, id="absent"),
        pytest.param(
            {"partnerId": "acme", "active": None, "webhookScope": None, "linkPlatform": None, "webhook": None},
            id="explicit-null",
        ),
        pytest.param({"partnerId": "acme", "webhook": {"url": "https://a.example", "events": None}}, id="null-events"),
    ],
)
def test_partner_defaults_apply_to_absent_and_null_fields(record):
    """Defaults: `active` true, `webhookScope` both, `linkPlatform` dealnow, `webhook.events` ["*"]; null = default."""
    got = partner_from_record(record)

    assert (got.active, got.webhook_scope, got.link_platform, got.events) == (True, "both", "dealnow", ("*",))


def test_app_source_is_matched_exactly_and_organization_ids_as_hex_strings():
    """appSource matches the partnerId exactly (case-sensitive); organization ids compare as hex strings."""
    app_scoped = partner_from_record({"partnerId": "acme", "webhookScope": "appSource"})
    org_scoped = partner_from_record(
        {"partnerId": "acme", "organizationId": ObjectId(ORG), "webhookScope": "organization"}
    )
    deals = ROUTING_FIELDS["deals"]

    assert scope_decision(app_scoped, routing_keys(deals, {"appSource": "acme"})).routed
    assert not scope_decision(app_scoped, routing_keys(deals, {"appSource": "ACME"})).routed
    assert not scope_decision(app_scoped, routing_keys(deals, {"appSource": "acme "})).routed
    assert scope_decision(org_scoped, routing_keys(deals, {"buyer": {"organizationId": ORG}})).routed
    assert scope_decision(org_scoped, routing_keys(deals, {"buyer": {"organizationId": ObjectId(ORG)}})).routed
    assert not scope_decision(org_scoped, routing_keys(deals, {"buyer": {"organizationId": ORG.upper()}})).routed


def test_a_listing_whose_seller_is_missing_keeps_app_source_routing_and_logs_a_warning(caplog):
    """Listings without `organizationId`: a seller that cannot be found is a warning, not an error."""
    listing = {"_id": oid(0x12), "status": "draft", "sellerId": oid(0x5E), "appSource": "acme"}
    world = lookups(
        [partner("acme", webhookScope="appSource"), partner("globex", organizationId=ORG, webhookScope="organization")],
        users=[{"_id": oid(0x5F), "userDetails": {"organizationId": ORG}}],
    )

    with caplog.at_level(logging.WARNING, logger="distiller.core.pipeline"):
        results = distill([as_change(raw_insert("seller_listings", listing), "line 3")], world)

    assert isinstance(results[0], ChangeOutcome), results
    assert delivered(results) == [("acme", "listing.created")]
    assert [r.levelname for r in caplog.records if str(oid(0x5E)) in r.getMessage()] == ["WARNING"]


# --- The distill CLI ----------------------------------------------------------------------------


def test_distill_exits_1_for_a_document_not_found_and_2_for_an_unreadable_input_file(monkeypatch, capsys, tmp_path):
    """Exit status: 1 when an update's document could not be found; 2 when the input file cannot be read."""
    partners = tmp_path / "partners.json"
    partners.write_text(json.dumps([partner("acme", webhookScope="appSource")]))
    lost = ejson_line(raw_update("deals", {"status": "sold"}, document_id=oid(0x999)))

    code, out, err = run_cli(monkeypatch, capsys, ["distill", "--partners", str(partners)], lost + "\n")

    assert (code, out) == (1, "")
    assert err.startswith("error: <stdin>:1: ") and "carries no fullDocument" in err

    missing = tmp_path / "nowhere.jsonl"
    code, out, err = run_cli(monkeypatch, capsys, ["distill", "--partners", str(partners), str(missing)])

    assert (code, out) == (2, "")
    assert str(missing) in err and "cannot read" in err


def test_distill_output_follows_input_then_partner_id_then_emission_order(monkeypatch, capsys, tmp_path):
    """Output order: input order; within one change by partner (partnerId order), per partner in emission order."""
    partners = tmp_path / "partners.json"
    partners.write_text(
        json.dumps(
            [
                partner("zeta", webhookScope="appSource"),
                partner("acme", organizationId=ORG, webhookScope="organization"),
            ]
        )
    )
    deal = {**DEAL, "appSource": "zeta"}
    closing = raw_update(
        "deals",
        {"status": "sold", "dealState.closingStatus": "acknowledged"},
        {**deal, "status": "sold", "dealState": {"closingStatus": "acknowledged"}},
        before=deal,
    )
    created = raw_insert("deals", {**deal, "_id": oid(0xD2)})
    lines = "\n".join([ejson_line(closing), ejson_line(created)]) + "\n"

    code, out, err = run_cli(monkeypatch, capsys, ["distill", "--partners", str(partners)], lines)

    assert (code, err) == (0, "")
    assert [(r["partnerId"], r["event"]) for r in map(json.loads, out.splitlines())] == [
        ("acme", "deal.payment_acknowledged"),
        ("acme", "deal.completed"),
        ("zeta", "deal.payment_acknowledged"),
        ("zeta", "deal.completed"),
        ("acme", "deal.created"),
        ("zeta", "deal.created"),
    ]


def test_explain_lines_carry_the_documented_fields_and_bad_records_still_go_to_stderr(monkeypatch, capsys, tmp_path):
    """`--explain`: one JSON line per change event with its documented fields; bad records on stderr."""
    partners = tmp_path / "partners.json"
    partners.write_text(json.dumps([partner("acme", webhookScope="appSource", events=["deal.completed"])]))
    closing = raw_update(
        "deals",
        {"status": "sold", "dealState.closingStatus": "acknowledged"},
        {**DEAL, "status": "sold", "dealState": {"closingStatus": "acknowledged"}},
        before=DEAL,
        token="82EE01",
    )
    lines = "\n".join([ejson_line(closing), "{not json", ejson_line(raw_delete("deals", oid(0xD1)))]) + "\n"

    code, out, err = run_cli(monkeypatch, capsys, ["distill", "--partners", str(partners), "--explain"], lines)

    assert code == 1
    assert err.startswith("error: <stdin>:2: not valid JSON")
    first, deleted = map(json.loads, out.splitlines())
    assert {"origin", "collection", "operationType", "documentId", "resumeToken", "preImage", "events", "partners",
            "deliveries"} <= set(first)  # fmt: skip
    assert (first["origin"], first["resumeToken"], first["preImage"], first["deliveries"]) == (
        "<stdin>:1",
        "82EE01",
        True,
        1,
    )
    assert [(e["event"], e["emissionIndex"]) for e in first["events"]] == [
        ("deal.payment_acknowledged", 0),
        ("deal.completed", 1),
    ]
    assert all(e["trigger"] for e in first["events"])
    [acme] = first["partners"]
    assert (acme["partnerId"], acme["routed"]) == ("acme", True) and acme["why"]
    assert acme["events"]["deal.completed"].startswith("delivered")
    assert acme["events"]["deal.payment_acknowledged"].startswith("not subscribed")
    assert "note" not in first
    assert deleted["events"] == [] and deleted["note"].startswith("delete")


# --- Delivery -----------------------------------------------------------------------------------

DISPATCHER_ENV = {"RETRY_QUEUE_URL": "https://sqs.example/retry", "DELIVERY_DLQ_URL": "https://sqs.example/dlq"}


def test_a_delivery_attempt_times_out_after_10_seconds_by_default():
    """Success is 2xx only ... timeouts (10 s) are failed attempts."""
    assert WebhookSender().timeout_seconds == 10.0
    assert DispatcherSettings.from_env(DISPATCHER_ENV).timeout_seconds == 10.0


def test_50_deliveries_in_flight_and_10_connections_per_partner_host_by_default():
    """Concurrency: 50 deliveries in flight per instance, at most 10 connections per partner host."""
    settings = DispatcherSettings.from_env(DISPATCHER_ENV)

    assert (settings.concurrency, settings.per_host_connections) == (50, 10)
    assert inspect.signature(Dispatcher).parameters["max_workers"].default == 50
    assert WebhookSender().per_host_connections == 10


def test_webhook_secret_names_and_caches():
    """Secret names `{prefix}{partnerId}/webhook-secret`; secrets cached 3600 s (read afresh after a 401
    or 403), partner records 60 s, no longer than the first retry delay."""
    assert PartnerSecrets().name_for("acme") == f"{DEFAULT_PREFIX}acme/webhook-secret"
    assert PartnerSecrets("td/").name_for("acme") == "td/acme/webhook-secret"
    settings = DispatcherSettings.from_env(DISPATCHER_ENV)
    partner_ttl = MongoSettings.from_env({"MONGODB_URI_SECRET": "mongo-uri"}).lookup_ttl_seconds
    first_retry = RetrySchedule.parse(settings.retry_delays).delays[0]

    assert (PartnerSecrets().max_age_seconds, settings.secret_cache_seconds) == (3600, 3600)
    assert {401, 403} == SIGNATURE_REFUSED
    assert partner_ttl == inspect.signature(DispatcherRuntime.build).parameters["lookup_ttl"].default == 60.0
    assert partner_ttl <= first_retry


def test_the_delivery_log_indexes_and_its_retention(template):
    """The delivery log: partner + status / event / date, partner + eventId, and a TTL on `attemptedAt`."""
    collection = mongomock.MongoClient(tz_aware=True)["privateauto"][DELIVERIES_COLLECTION]

    MongoDeliveryLog(collection).ensure_indexes(retention_days=30)

    indexes = {name: info["key"] for name, info in collection.index_information().items()}
    assert indexes["partner_status_date"] == [("partnerId", 1), ("status", 1), ("attemptedAt", -1)]
    assert indexes["partner_event_date"] == [("partnerId", 1), ("event", 1), ("attemptedAt", -1)]
    assert indexes["partner_date"] == [("partnerId", 1), ("attemptedAt", -1)]
    assert indexes["partner_event_id"][:2] == [("partnerId", 1), ("eventId", 1)]
    ttl = collection.index_information()["ttl_attempted_at"]
    assert (ttl["key"], ttl["expireAfterSeconds"]) == ([("attemptedAt", 1)], 30 * 86400)
    assert DispatcherSettings.from_env(DISPATCHER_ENV).delivery_log_retention_days == 30
    assert template["Parameters"]["DeliveryLogRetentionDays"]["Default"] == 30


# --- `distiller run` ----------------------------------------------------------------------------


def test_run_exits_2_for_a_usage_problem_before_starting_anything(monkeypatch, capsys, tmp_path):
    """`distiller run` exit status: 2 for a usage problem."""
    partners = tmp_path / "partners.json"
    partners.write_text(json.dumps([partner("acme", webhookScope="appSource")]))

    bad_delays = run_cli(monkeypatch, capsys, ["run", "--partners", str(partners), "--retry-delays", "60,x"])
    missing_input = run_cli(monkeypatch, capsys, ["run", "--partners", str(partners), str(tmp_path / "none.jsonl")])

    assert bad_delays[0] == 2 and "retry delays" in bad_delays[2]
    assert missing_input[0] == 2 and "cannot read" in missing_input[2]
    assert bad_delays[1] == missing_input[1] == ""  # no summary: nothing ran


# --- Stack, relay and operations ----------------------------------------------------------------


def test_ingest_switches_retry_for_a_day_start_from_the_horizon_and_refuse_a_cluster_without_its_secret(template):
    """Ingest paths: EventBridge retries for 24 h, DocumentDB from TRIM_HORIZON, a rule demands the secret."""
    target = template["Resources"]["AtlasTriggerRule"]["Properties"]["Targets"][0]
    mapping = template["Resources"]["DocumentDbEventSource"]["Properties"]
    rule = template["Rules"]["DocumentDbNeedsItsSecret"]

    assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] == 24 * 3600
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert rule["RuleCondition"] == {"!Not": [{"!Equals": [{"!Ref": "DocumentDbClusterArn"}, ""]}]}
    [assertion] = rule["Assertions"]
    assert {"!Ref": "DocumentDbSecretArn"} in assertion["Assert"]["!Not"][0]["!Equals"]


def test_the_relay_runs_every_minute_for_at_most_50_seconds(template):
    """The relay is a scheduled Lambda: every minute, one at a time, up to 50 s a run."""
    relay = template["Resources"]["RelayFunction"]["Properties"]

    assert relay["Events"]["EveryMinute"]["Properties"]["Schedule"] == "rate(1 minute)"
    assert relay["ReservedConcurrentExecutions"] == 1
    assert float(relay["Environment"]["Variables"]["RELAY_MAX_SECONDS"]) == 50
    assert relay["Timeout"] > 50


def test_event_ids_do_not_depend_on_arrival_order():
    """Order: every event is computed from its own change, so events and eventIds ignore arrival order."""
    acknowledged = {**DEAL, "dealState": {"closingStatus": "acknowledged"}}
    sold = {**acknowledged, "status": "sold"}
    first = raw_update(
        "deals", {"dealState.closingStatus": "acknowledged"}, acknowledged, before=DEAL, token=resume_token()
    )
    second = raw_update("deals", {"status": "sold"}, sold, before=acknowledged, token=resume_token())
    world = lookups([partner("acme", webhookScope="appSource"), partner("globex", organizationId=ORG)])

    def by_change(raws):
        results = distill([as_change(r) for r in raws], world)
        assert all(isinstance(r, ChangeOutcome) for r in results)
        return {r.change.resume_token: [d.to_json() for d in r.deliveries] for r in results}

    in_order, reordered = by_change([first, second]), by_change([second, first])

    assert in_order == reordered
    assert sorted((row["partnerId"], row["event"]) for rows in in_order.values() for row in rows) == [
        ("acme", "deal.completed"),
        ("acme", "deal.payment_acknowledged"),
        ("globex", "deal.completed"),
        ("globex", "deal.payment_acknowledged"),
    ]
