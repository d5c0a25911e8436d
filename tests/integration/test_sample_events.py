"""The sample data in events/: every single-shape sample distils, and --explain accounts for every change.

The samples are complete Lambda test events (one per ingest shape); the CLI reads JSON Lines, so
each is fed as its single JSON document on one line.
"""

import json
from pathlib import Path

import pytest

from distiller_tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
NOT_SAMPLES = {"partners.json", "world.json"}
#: Samples of the other functions' events (the Dispatcher's delivery batch, the Relay's schedule, the API's requests).
OTHER_FUNCTIONS = ("dispatcher_", "relay_", "api_")
SAMPLES = sorted(
    p.name for p in EVENTS.glob("*.json") if p.name not in NOT_SAMPLES and not p.name.startswith(OTHER_FUNCTIONS)
)
FLOWS = sorted(p.stem for p in (EVENTS / "flows").glob("*.jsonl"))
#: Samples that carry another sample unchanged, as a different path delivers it (the Atlas rule
#: sends the EventBridge event to the ingest queue): the same change, hence the same resume token.
WRAPS = {"eventbridge_via_sqs.json": "eventbridge_atlas_plain.json"}

#: sample → partner → events, from the spec's trigger tables and webhookScope summary.
SAMPLE_DELIVERIES = {
    # users insert, userDetails.organizationId = acme's org (organization scope)
    "change_stream_insert.json": {"acme-motors": ["user.registered"]},
    # dealState.buyer.status → joined; lendco is routed (appSource) but not subscribed to it
    "eventbridge_atlas_plain.json": {"acme-motors": ["deal.buyer_joined"]},
    # price edit on a listing without organizationId: routed through the seller user
    "eventbridge_atlas_ejson.json": {"acme-motors": ["listing.updated"]},
    # the plain Atlas event as the rule delivers it: an SQS record on the ingest queue
    "eventbridge_via_sqs.json": {"acme-motors": ["deal.buyer_joined"]},
    # D2D offer made and withdrawn (internal status deleted → offer.cancelled), both dealer orgs
    "docdb_batch.json": {
        "acme-motors": ["offer.created", "offer.cancelled"],
        "bayside-auto": ["offer.created", "offer.cancelled"],
    },
    # carmart sign-up (appRegisteredFrom) and the C2C listing deactivated
    "sqs_ingest_batch.json": {"carmart": ["user.registered", "listing.deleted"]},
}


def run(capsys, monkeypatch, *args: str) -> tuple[int, list[dict], str]:
    monkeypatch.chdir(ROOT)
    code = main(["distill", "--partners", "events/partners.json", "--world", "events/world.json", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def one_line(sample: str, tmp_path: Path) -> str:
    path = tmp_path / f"{sample}.jsonl"
    path.write_text(json.dumps(json.loads((EVENTS / sample).read_text(encoding="utf-8"))) + "\n")
    return str(path)


def resume_tokens(record: dict) -> list[str]:
    """The `_id._data` of every change event one ingest record holds, whatever its shape."""
    if "Records" in record:
        return [t for r in record["Records"] for t in resume_tokens(json.loads(r["body"]))]
    if record.get("eventSource") == "aws:docdb":
        return [e["event"]["_id"]["_data"] for e in record["events"]]
    if "detail-type" in record:
        return [record["detail"]["_id"]["_data"]]
    return [record["_id"]["_data"]]


def test_the_samples_and_flows_are_all_there():
    assert sorted(SAMPLE_DELIVERIES) == SAMPLES
    assert FLOWS == ["c2c", "c2d_marketplace", "c2d_sell", "d2c", "d2d"]


@pytest.mark.parametrize("sample", SAMPLES)
def test_sample_distils_without_error_into_deliveries(capsys, monkeypatch, tmp_path, sample):
    code, rows, err = run(capsys, monkeypatch, one_line(sample, tmp_path))

    assert (code, err) == (0, "")
    assert rows


@pytest.mark.parametrize("sample", sorted(SAMPLE_DELIVERIES))
def test_sample_reaches_the_partners_the_spec_names(capsys, monkeypatch, tmp_path, sample):
    _, rows, _ = run(capsys, monkeypatch, one_line(sample, tmp_path))

    delivered: dict[str, list[str]] = {}
    for row in rows:
        delivered.setdefault(row["partnerId"], []).append(row["event"])
    assert delivered == SAMPLE_DELIVERIES[sample]


@pytest.mark.parametrize("flow", FLOWS)
def test_explain_prints_one_line_per_change_event(capsys, monkeypatch, flow):
    path = EVENTS / "flows" / f"{flow}.jsonl"
    tokens = [t for line in path.read_text(encoding="utf-8").splitlines() for t in resume_tokens(json.loads(line))]

    code, explained, err = run(capsys, monkeypatch, "--explain", f"events/flows/{flow}.jsonl")

    assert (code, err) == (0, "")
    assert [change["resumeToken"] for change in explained] == tokens


@pytest.mark.parametrize(("sample", "wrapped"), sorted(WRAPS.items()))
def test_a_wrapping_sample_carries_the_other_sample_unchanged(sample, wrapped):
    [record] = json.loads((EVENTS / sample).read_text())["Records"]

    assert record["eventSource"] == "aws:sqs"
    assert json.loads(record["body"]) == json.loads((EVENTS / wrapped).read_text())


def test_resume_tokens_are_unique_across_all_sample_data():
    tokens = [
        t
        for path in [*(EVENTS / "flows").glob("*.jsonl"), *(EVENTS / s for s in SAMPLES if s not in WRAPS)]
        for text in (path.read_text(encoding="utf-8").splitlines() if path.suffix == ".jsonl" else [path.read_text()])
        for t in resume_tokens(json.loads(text))
    ]

    assert len(tokens) == len(set(tokens)) > 0
