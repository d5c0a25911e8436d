"""The Distiller function invoked in-process with the very files in events/ (as `sam local invoke` would)."""

import json
from pathlib import Path

import pytest

from distiller.lookups import MongoLookups
from distiller.world import in_memory_database, load_partners, load_world
from tests.conftest import load_function

EVENTS = Path(__file__).resolve().parents[2] / "events"
SAMPLES = sorted(p for p in EVENTS.glob("*.json") if p.name not in {"partners.json", "world.json"})


@pytest.fixture
def app(monkeypatch):
    module = load_function("distiller")
    lookups = MongoLookups(
        in_memory_database(load_partners(EVENTS / "partners.json"), load_world(EVENTS / "world.json"))
    )
    monkeypatch.setattr(module, "_lookups", lookups)
    return module


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_every_sample_event_distils_without_errors(app, lambda_context, sample):
    event = json.loads(sample.read_text())

    response = app.handler(event, lambda_context)

    assert response["errors"] == []
    assert response["deliveries"], f"{sample.name} produced no deliveries"
    for delivery in response["deliveries"]:
        # Extended JSON arrives undecoded in a Lambda event; the handler decodes it.
        assert "$numberInt" not in json.dumps(delivery) and "$oid" not in json.dumps(delivery)


def test_lambda_and_cli_agree_on_every_sample(app, lambda_context, capsys, tmp_path):
    """The handler (parsed event) and the CLI (text) produce the same deliveries for the same input."""
    from distiller.cli import main

    for sample in SAMPLES:
        response = app.handler(json.loads(sample.read_text()), lambda_context)
        capsys.readouterr()
        line = json.dumps(json.loads(sample.read_text()))
        path = tmp_path / f"{sample.stem}.jsonl"
        path.write_text(line + "\n")
        argv = ["distill", "--partners", str(EVENTS / "partners.json"), "--world", str(EVENTS / "world.json")]
        assert main([*argv, str(path)]) == 0
        cli = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert cli == response["deliveries"], sample.name


def test_a_bad_record_is_reported_and_the_rest_delivered(app, lambda_context):
    event = json.loads((EVENTS / "docdb_batch.json").read_text())
    good = len(app.handler(event, lambda_context)["deliveries"])
    event["events"].insert(0, {"event": {"operationType": "insert", "_id": {"_data": "82AB"}}})
    event["events"].insert(
        1,
        {
            "event": {
                "_id": {"_data": "82AC"},
                "operationType": "insert",
                "ns": {"coll": "deals"},
                "fullDocument": {"_id": {"$oid": "zz"}},
            }
        },
    )

    response = app.handler(event, lambda_context)

    assert len(response["deliveries"]) == good
    assert [e["origin"] for e in response["errors"]] == ["event events[0]", "event events[1]"]
    assert "ns.coll" in response["errors"][0]["reason"]
    assert "invalid Extended JSON" in response["errors"][1]["reason"]


def test_missing_mongo_setting_fails_loudly_at_first_use(monkeypatch, lambda_context):
    module = load_function("distiller")
    monkeypatch.setattr(module, "_lookups", None)
    monkeypatch.delenv("MONGODB_URI_SECRET", raising=False)

    with pytest.raises(Exception, match="MONGODB_URI_SECRET"):
        module.handler(json.loads((EVENTS / "change_stream_insert.json").read_text()), lambda_context)
