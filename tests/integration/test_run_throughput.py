"""`distiller run` at volume: batched, concurrent event sources deliver each delivery exactly once, and the
run bench reports what it measured (never asserting a time)."""

import json
from pathlib import Path

import pytest

from bench import run_bench
from distiller_tools.local import pipeline as local_pipeline
from distiller_tools.local.event_source import EventSourceMapping
from tests.unit.test_template import CfnLoader

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def invocations(monkeypatch):
    """Every handler invocation's (function, number of records)."""
    seen: list[tuple[str, int]] = []
    invoke = EventSourceMapping._invoke

    def counting(self, messages):
        seen.append((self.function_name, len(messages)))
        return invoke(self, messages)

    monkeypatch.setattr(EventSourceMapping, "_invoke", counting)
    return seen


def test_a_few_hundred_events_are_delivered_once_each_in_batches(invocations):
    # Given 300 generated change events for 20 partners, all answered at once by one local receiver
    result = run_bench.run_once(300, run_bench.DEFAULT_SEED)

    # Then every delivery reached the receiver exactly once and was logged once, delivered
    attempts = result.report.attempts
    assert result.deliveries == len(attempts) == result.received > 300
    assert len({(a["partnerId"], a["eventId"]) for a in attempts}) == len(attempts)
    assert not result.report.parked
    # And the handlers were invoked with batches, as Lambda's event source mapping would, within BatchSize
    sizes = {name: [n for f, n in invocations if f.endswith(name)] for name in ("distiller", "dispatcher")}
    assert sum(sizes["distiller"]) >= result.lines and max(sizes["distiller"]) > 10
    assert sum(sizes["dispatcher"]) >= len(attempts) and max(sizes["dispatcher"]) > 10
    assert max(sizes["distiller"]) <= local_pipeline.BATCH_SIZES["ingest"]
    assert max(sizes["dispatcher"]) <= local_pipeline.BATCH_SIZES["delivery"]


def test_batch_sizes_are_the_templates():
    import yaml

    resources = yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)["Resources"]
    sources = {
        props["Queue"]["!GetAtt"].removesuffix(".Arn"): props["BatchSize"]
        for function in ("DistillerFunction", "DispatcherFunction")
        for event in resources[function]["Properties"]["Events"].values()
        if event["Type"] == "SQS"
        for props in [event["Properties"]]
    }

    assert sources == {
        "IngestQueue": local_pipeline.BATCH_SIZES["ingest"],
        "DeliveryQueue": local_pipeline.BATCH_SIZES["delivery"],
        "RetryQueue": local_pipeline.BATCH_SIZES["retry"],
    }


def test_run_bench_writes_its_figures_as_json(tmp_path, capsys):
    out = tmp_path / "run.json"

    code = run_bench.main(["--events", "40", "--json", str(out)])

    figures = json.loads(out.read_text())
    assert code == 0
    assert {"bench", "python", "cpus", "events", "deliveries", "seconds", "per_second", "events_per_second"} <= set(
        figures
    )
    assert figures["bench"] == "run" and figures["events"] == 40 and figures["deliveries"] > 0
    assert figures["per_second"] == pytest.approx(figures["deliveries"] / figures["seconds"], rel=0.01)
    printed = capsys.readouterr().out
    assert "deliveries/s" in printed and "target >= 100" in printed
