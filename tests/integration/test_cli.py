"""`distiller distill`: the dry-run contract other tools run against."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from bson import json_util

from distiller_tools.cli import main
from tests.factories import oid, partner, raw_insert, raw_update

ORG = "67e446a09d2eb254a3b130e7"


def ejson_line(event) -> str:
    return json_util.dumps(event, json_options=json_util.RELAXED_JSON_OPTIONS)


@pytest.fixture
def partners_file(tmp_path: Path) -> Path:
    path = tmp_path / "partners.json"
    path.write_text(
        json.dumps(
            [
                partner("acme", organizationId=ORG, events=["deal.*"]),
                partner("carmart", webhookScope="appSource"),
                partner("sleepy", active=False, organizationId=ORG),
            ]
        )
    )
    return path


def run(argv, stdin_text=""):
    stdin, stdout, stderr = io.StringIO(stdin_text), io.StringIO(), io.StringIO()
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    try:
        code = main(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
    return code, stdout.getvalue(), stderr.getvalue()


DEAL = {"_id": oid(1), "guid": "g-1", "appSource": "carmart", "buyer": {"id": oid(2), "organizationId": ORG}}


def test_output_lines_have_exactly_the_contract_fields(partners_file):
    line = ejson_line(raw_insert("deals", DEAL, token="82AA"))

    code, out, err = run(["distill", "--partners", str(partners_file)], line + "\n")

    assert (code, err) == (0, "")
    rows = [json.loads(x) for x in out.splitlines()]
    assert [(r["partnerId"], r["event"]) for r in rows] == [("acme", "deal.created"), ("carmart", "deal.created")]
    for r in rows:
        assert list(r) == ["partnerId", "event", "eventId", "eventKey", "payload"]
        assert r["eventKey"] == f"82AA:{r['partnerId']}:deal.created:0"
        assert r["payload"]["eventId"] == r["eventId"]
        assert r["payload"]["entityType"] == "deals"
        assert r["payload"]["id"] == str(oid(1))


def test_bad_lines_are_reported_with_their_line_number_and_the_rest_still_runs(partners_file, tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                "{not json",
                ejson_line(raw_insert("deals", DEAL)),
                '{"hello": "world"}',
                "",
                ejson_line(raw_update("deals", {"status": "sold"}, DEAL)),
            ]
        )
        + "\n"
    )

    code, out, err = run(["distill", "--partners", str(partners_file), str(events)])

    assert code == 1
    errors = err.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {events}:1: not valid JSON")
    assert errors[1].startswith(f"error: {events}:3: not a recognisable change event")
    assert [json.loads(x)["event"] for x in out.splitlines()] == ["deal.created"] * 2 + ["deal.completed"] * 2


def test_reads_stdin_when_no_file_is_given(partners_file):
    code, _, err = run(["distill", "--partners", str(partners_file)], "[1, 2]\n")

    assert code == 1
    assert err.startswith("error: <stdin>:1: not a recognisable change event: expected a JSON object, got an array")


def test_world_file_supplies_lookups(partners_file, tmp_path):
    world = tmp_path / "world.json"
    world.write_text(json_util.dumps({"users": [{"_id": oid(9), "userDetails": {"organizationId": ORG}}]}))
    listing = raw_insert("seller_listings", {"_id": oid(5), "sellerId": oid(9), "status": "draft"})
    acme_all = tmp_path / "p.json"
    acme_all.write_text(json.dumps([partner("acme", organizationId=ORG, webhookScope="organization")]))

    without = run(["distill", "--partners", str(acme_all)], ejson_line(listing))
    with_world = run(["distill", "--partners", str(acme_all), "--world", str(world)], ejson_line(listing))

    assert without[1] == ""
    assert [json.loads(x)["event"] for x in with_world[1].splitlines()] == ["listing.created"]


def test_explain_says_why_each_partner_was_or_was_not_routed(partners_file):
    update = raw_update("offers", {"status": "declined"}, {"appSource": "carmart", "price": 100})

    code, out, _ = run(["distill", "--partners", str(partners_file), "--explain"], ejson_line(update))

    assert code == 0
    [explained] = [json.loads(x) for x in out.splitlines()]
    assert explained["events"] == [
        {"event": "offer.rejected", "emissionIndex": 0, "trigger": "offers status → declined"}
    ]
    by_partner = {p["partnerId"]: p for p in explained["partners"]}
    assert by_partner["acme"]["routed"] is False
    assert "appSource does not match" in by_partner["acme"]["why"]
    assert by_partner["carmart"]["events"] == {"offer.rejected": "delivered (subscribed by '*')"}
    assert by_partner["sleepy"]["why"] == "partner is inactive"
    assert explained["deliveries"] == 1


def test_explain_shows_unsubscribed_events(partners_file):
    update = raw_update("offers", {"status": "accepted"}, {"offeredToOrganizationId": ORG})

    _, out, _ = run(["distill", "--partners", str(partners_file), "--explain"], ejson_line(update))

    acme = next(p for p in json.loads(out)["partners"] if p["partnerId"] == "acme")
    assert acme["routed"] is True
    assert acme["events"] == {"offer.accepted": "not subscribed (events: ['deal.*'])"}


def test_explain_notes_changes_that_produce_nothing(partners_file):
    delete = {"_id": {"_data": "82DD"}, "operationType": "delete", "ns": {"coll": "deals"}, "documentKey": {"_id": "x"}}

    _, out, _ = run(["distill", "--partners", str(partners_file), "--explain"], json.dumps(delete))

    explained = json.loads(out)
    assert explained["events"] == [] and explained["deliveries"] == 0
    assert "delete" in explained["note"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("{", "not valid JSON", id="not-json"),
        pytest.param('{"partnerId": "a"}', "expected a JSON array", id="not-array"),
        pytest.param('[{"partnerId": "a", "webhookScope": "x"}]', "webhookScope", id="bad-record"),
        pytest.param('[{"partnerId": "a"}, {"partnerId": "a"}]', "appears twice", id="duplicate"),
    ],
)
def test_unusable_partners_file_exits_2_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "partners.json"
    path.write_text(content)

    code, out, err = run(["distill", "--partners", str(path)], "")

    assert code == 2 and out == ""
    assert str(path) in err and message in err


def test_console_script_runs_as_installed(partners_file):
    line = ejson_line(raw_insert("deals", DEAL))
    script = Path(sys.executable).with_name("distiller")

    proc = subprocess.run(
        [str(script), "distill", "--partners", str(partners_file)],
        input=line + "\n",
        capture_output=True,
        text=True,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    "flow", sorted((Path(__file__).resolve().parents[2] / "events" / "flows").glob("*.jsonl")), ids=lambda p: p.stem
)
def test_explain_mode_routes_exactly_like_the_fast_path(flow):
    """--explain visits every partner and spells out reasons; the deliveries must not change."""
    from distiller.adapters.lookups import MongoLookups
    from distiller.core.pipeline import deliveries_of, distill
    from distiller.ingest.sources import change_events_from_text
    from distiller_tools.world import in_memory_database, load_partners, load_world

    events = flow.parents[1]
    database = in_memory_database(load_partners(events / "partners.json"), load_world(events / "world.json"))
    items = [x for n, line in enumerate(flow.read_text().splitlines()) for x in change_events_from_text(line, str(n))]

    fast = deliveries_of(distill(items, MongoLookups(database)))
    explained = deliveries_of(distill(items, MongoLookups(database), explain=True))

    assert fast and fast == explained
