"""`distiller explain` on live data: the routing verdict, the events, and the delivery log for one entity.

The database is mongomock behind the command's Mongo seam (`explain._open_database`); the
parser is built as cli.py builds it (`ops.register`), and the command runs as
`args.run(args, stdin, stdout, stderr)`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from typing import Any

import mongomock
import pytest

from distiller.adapters.lookups import MongoLookups
from distiller.core.pipeline import distill
from distiller.deliver.log import DELIVERIES_COLLECTION, DeliveryAttempt
from distiller_tools import ops
from distiller_tools.ops import explain as ops_explain
from tests.factories import as_change, oid, raw_insert

DEAL, OFFER, LISTING, SELLER, OTHER_DEAL, DOC = (str(oid(n)) for n in (1, 2, 3, 4, 5, 6))
ORG = "663a1f2b4e8c9a001234abcd"
T0 = dt.datetime(2026, 4, 21, 12, 0, tzinfo=dt.UTC)


def attempt(event: str, event_id: str, payload: dict[str, Any], *, minutes: int, partner: str = "acme", **kw: Any):
    return DeliveryAttempt(
        partner_id=partner,
        event=event,
        event_id=event_id,
        attempt=kw.pop("attempt", 1),
        status=kw.pop("status", "delivered"),
        url="https://acme.example/hooks",
        attempted_at=T0 + dt.timedelta(minutes=minutes),
        payload=payload,
        **kw,
    ).to_document()


@pytest.fixture
def db() -> Any:
    database = mongomock.MongoClient(tz_aware=True)["privateauto"]
    database["partners"].insert_many(
        [
            {
                "partnerId": "acme",
                "active": True,
                "webhookScope": "both",
                "organizationId": ORG,
                "webhook": {"url": "https://acme.example/hooks", "events": ["deal.*", "listing.created"]},
            },
            {"partnerId": "sleepy", "active": False, "webhook": {"events": ["*"]}},
            {"partnerId": "broken", "webhookScope": "everything"},
        ]
    )
    # The deal carries no appSource of its own: it reaches acme through its offer's.
    database["deals"].insert_many([{"_id": oid(1), "offerId": oid(2)}, {"_id": oid(5), "appSource": "someone-else"}])
    database["offers"].insert_one({"_id": oid(2), "appSource": "acme", "listingId": oid(3)})
    # The listing has no organization of its own: it reaches acme through its seller's.
    database["seller_listings"].insert_one({"_id": oid(3), "sellerId": oid(4)})
    database["users"].insert_one({"_id": oid(4), "userDetails": {"organizationId": ORG}})
    database[DELIVERIES_COLLECTION].insert_many(
        [
            attempt(
                "deal.created",
                "e-deal-1",
                {"id": DEAL, "entityType": "deals"},
                minutes=0,
                status="failed",
                status_code=503,
                error="HTTP 503",
            ),
            attempt("deal.created", "e-deal-1", {"id": DEAL, "entityType": "deals"}, minutes=1, attempt=2),
            attempt("document.signed", "e-doc", {"id": DOC, "dealId": DEAL, "entityType": "documents"}, minutes=2),
            attempt("deal.created", "e-other", {"id": OTHER_DEAL, "entityType": "deals"}, minutes=3),
            attempt("deal.created", "e-deal-x", {"id": DEAL, "entityType": "deals"}, minutes=4, partner="carmart"),
            attempt("offer.created", "e-offer", {"id": OFFER, "listingId": LISTING, "entityType": "offers"}, minutes=5),
        ]
    )
    return database


def cli(argv: list[str], db: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    opened: list[tuple[str, str]] = []

    def open_database(uri: str, database: str) -> Any:
        opened.append((uri, database))
        return db

    monkeypatch.setattr(ops_explain, "_open_database", open_database)
    parser = argparse.ArgumentParser(prog="distiller")
    ops.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["explain", "--mongo-uri", "mongodb://db.test", *argv])
    stdout, stderr = io.StringIO(), io.StringIO()
    code = args.run(args, io.StringIO(), stdout, stderr)
    if code == 0:
        assert opened == [("mongodb://db.test", "privateauto")]
    return code, stdout.getvalue(), stderr.getvalue()


def as_json(argv: list[str], db: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    code, out, err = cli([*argv, "--json"], db, monkeypatch)
    assert code == 0, err
    return json.loads(out)


# -- the routing verdict --------------------------------------------------------------------------


def test_a_deal_routed_through_its_offer_lists_each_event_and_the_attempts_naming_it(db, monkeypatch):
    answer = as_json(["--partner", "acme", "--deal", DEAL], db, monkeypatch)

    assert answer["entity"] == {"collection": "deals", "id": DEAL, "found": True}
    assert answer["borrowed"] == [{"via": "offerId→offers", "id": OFFER, "found": True}]
    assert answer["routing"]["routed"] is True
    assert answer["routing"]["why"] == "scope both: offerId→offers.appSource = 'acme'"
    events = {e["event"]: e for e in answer["events"]}
    assert (
        events["deal.created"]["why"] == "delivered (subscribed by 'deal.*')" and events["deal.created"]["subscribed"]
    )
    assert events["deal.created"]["trigger"] == "insert"
    # Attempts whose payload id or dealId is the deal, this partner's only, newest first
    assert answer["deliveries"]["matchedOn"] == ["payload.id", "payload.dealId"]
    got = [(a["eventId"], a["attempt"], a["status"], a["statusCode"]) for a in answer["deliveries"]["attempts"]]
    assert got == [("e-doc", 1, "delivered", None), ("e-deal-1", 2, "delivered", None), ("e-deal-1", 1, "failed", 503)]
    assert answer["deliveries"]["attempts"][2]["error"] == "HTTP 503"
    assert answer["deliveries"]["attempts"][0]["entity"] == {"entityType": "documents", "id": DOC}


def test_the_verdict_and_reasons_are_the_ones_distill_explain_gives(db, monkeypatch):
    # Given the same deal as a change event through the pipeline in --explain mode
    [outcome] = distill(
        [as_change(raw_insert("deals", db["deals"].find_one({"_id": oid(1)})))], MongoLookups(db), explain=True
    )
    pipeline = {p.partner_id: p for p in outcome.partners}["acme"]
    # When explain reads it live
    answer = as_json(["--partner", "acme", "--deal", DEAL], db, monkeypatch)
    # Then the scope reason and the emitted event's verdict read the same
    assert answer["routing"]["why"] == pipeline.why
    assert {e["event"]: e["why"] for e in answer["events"]}["deal.created"] == pipeline.events["deal.created"]


def test_a_listing_routed_through_its_sellers_organization_says_which_events_are_not_subscribed(db, monkeypatch):
    code, out, err = cli(["--partner", "acme", "--listing", LISTING], db, monkeypatch)

    assert code == 0, err
    assert "borrows sellerId→users " + SELLER + ": found" in out
    assert f"routing: ROUTED: scope both: sellerId→users.userDetails.organizationId = '{ORG}'" in out
    assert "listing.created" in out and "delivered (subscribed by 'listing.created')" in out
    assert "not subscribed (events: ['deal.*', 'listing.created'])" in out
    # The offer made on the listing names it by listingId
    assert "matched on payload.id, payload.listingId" in out and "e-offer" in out


def test_an_entity_of_another_organization_is_not_routed_and_says_why(db, monkeypatch):
    answer = as_json(["--partner", "acme", "--deal", OTHER_DEAL], db, monkeypatch)

    assert answer["routing"]["routed"] is False
    assert "appSource does not match (appSource='someone-else')" in answer["routing"]["why"]
    assert f"organization '{ORG}' not linked" in answer["routing"]["why"]
    assert {e["why"] for e in answer["events"]} == {"not routed to this partner"}
    assert [a["eventId"] for a in answer["deliveries"]["attempts"]] == ["e-other"]


def test_an_inactive_partner_is_not_routed(db, monkeypatch):
    answer = as_json(["--partner", "sleepy", "--offer", OFFER], db, monkeypatch)

    assert answer["partner"]["active"] is False
    assert answer["routing"] == {**answer["routing"], "routed": False, "why": "partner is inactive"}
    assert answer["deliveries"]["attempts"] == []


def test_an_invalid_partner_record_is_explained_as_skipped(db, monkeypatch):
    answer = as_json(["--partner", "broken", "--deal", DEAL], db, monkeypatch)

    assert answer["partner"] == {"partnerId": "broken", "valid": False}
    assert answer["routing"]["routed"] is False
    assert "skips it" in answer["routing"]["why"] and "webhookScope" in answer["routing"]["why"]


# -- --event-id -----------------------------------------------------------------------------------


def test_an_event_id_shows_its_attempts_and_the_entity_they_name(db, monkeypatch):
    answer = as_json(["--partner", "acme", "--event-id", "e-deal-1"], db, monkeypatch)

    assert answer["named"] == {"entityType": "deals", "id": DEAL}
    assert answer["deliveries"]["matchedOn"] == ["eventId"]
    assert [a["attempt"] for a in answer["deliveries"]["attempts"]] == [2, 1]
    assert answer["routing"]["routed"] is True and answer["entity"]["id"] == DEAL


def test_an_event_id_of_an_entity_without_routing_fields_is_shown_with_a_note(db, monkeypatch):
    code, out, err = cli(["--partner", "acme", "--event-id", "e-doc"], db, monkeypatch)

    assert code == 0, err
    assert f"eventId e-doc names documents {DOC}" in out
    assert "routing is explained for deals, offers, listings and users only" in out
    assert "1 attempt(s)" in out


# -- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--partner", "nobody", "--deal", DEAL], "partner 'nobody': not found in mongo privateauto.partners"),
        (["--partner", "acme", "--deal", str(oid(99))], f"'{oid(99)}': not found in collection deals"),
        (["--partner", "acme", "--event-id", "e-nope"], "eventId 'e-nope': no delivery attempts for partner 'acme'"),
        (["--partner", "bad id!", "--deal", DEAL], "partner id 'bad id!'"),
        (["--partner", "acme", "--offer", " "], "entity id: must not be empty"),
    ],
)
def test_unknown_or_bad_input_exits_2_naming_it(db, monkeypatch, argv, message):
    code, out, err = cli(argv, db, monkeypatch)

    assert code == 2 and out == ""
    assert message in err and err.startswith("distiller: explain: ")


def test_a_missing_entity_says_the_log_still_names_it(db, monkeypatch):
    db["deals"].delete_one({"_id": oid(1)})

    code, _, err = cli(["--partner", "acme", "--deal", DEAL], db, monkeypatch)

    assert code == 2 and "the delivery log holds 3 attempt(s) naming it" in err


def test_exactly_one_entity_option_is_required(db, monkeypatch, capsys):
    parser = argparse.ArgumentParser(prog="distiller")
    ops.register(parser.add_subparsers(dest="command"))
    for argv in (["--deal", DEAL, "--offer", OFFER], []):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["explain", "--mongo-uri", "m", "--partner", "acme", *argv])
        assert exit_info.value.code == 2
    assert "--deal" in capsys.readouterr().err


def test_the_limit_caps_the_attempts_and_says_so(db, monkeypatch):
    code, out, _ = cli(["--partner", "acme", "--deal", DEAL, "--limit", "2"], db, monkeypatch)

    assert code == 0 and "2 attempt(s)" in out and "limit 2 reached, there may be more" in out


def test_the_database_seam_opens_the_named_database(monkeypatch):
    import pymongo

    monkeypatch.setattr(pymongo, "MongoClient", mongomock.MongoClient)
    database = ops_explain._open_database("mongodb://db.example:27017", "otherdb")
    assert database.name == "otherdb"


def test_the_distiller_command_line_has_explain():
    from distiller_tools.cli import build_parser

    args = build_parser().parse_args(["explain", "--mongo-uri", "m", "--partner", "acme", "--offer", OFFER])
    assert args.run is ops_explain.run_explain and args.offer == OFFER
