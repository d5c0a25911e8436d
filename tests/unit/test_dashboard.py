"""Issue 15 item 4: the CloudWatch dashboard charts what the Dispatcher function actually emits.

The dashboard body is a `!Sub` string in template.yaml; the test substitutes it, parses the JSON
and checks every per-partner SEARCH against the metric names, namespace and dimensions the code
emits (imported from the handler module), so code and dashboard cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from distiller.deliver.handler import (
    HELD_METRIC,
    LATENCY_METRIC,
    PARTNER_DIMENSION,
    PARTNER_METRICS,
    STAGE_DIMENSION,
    SUCCESS_RATE_METRIC,
)
from distiller.deliver.health import PAUSED_METRIC, RESUMED_METRIC
from distiller.deliver.log import DeliveryAttempt
from distiller.deliver.partner_metrics import STAGE_DIMENSION as EMITTED_STAGE_DIMENSION
from distiller.deliver.partner_metrics import PartnerTally, emit_partner_metrics, emit_stage_metric
from tests.unit.test_template import CfnLoader

ROOT = Path(__file__).resolve().parents[2]
SEARCH = re.compile(
    r"SEARCH\('\{(?P<schema>[^}]*)\} MetricName=\"(?P<name>[^\"]+)\" (?P<filters>[^']*)', '(?P<stat>[^']+)'"
)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)


@pytest.fixture(scope="module")
def dashboard(template) -> dict[str, Any]:
    [resource] = [r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    assert resource["Properties"]["DashboardName"] == {"!Sub": "trigger-distiller-${Stage}"}
    body = resource["Properties"]["DashboardBody"]["!Sub"]
    resources = template["Resources"]

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "AWS::Region":
            return "us-east-2"
        if name == "Stage":
            return "prod"
        logical, _, attribute = name.partition(".")
        assert logical in resources, f"dashboard refers to unknown resource {logical}"
        assert (resources[logical]["Type"], attribute) == ("AWS::SQS::Queue", "QueueName"), name
        return f"queue:{logical}"

    text = re.sub(r"\$\{([^}]+)\}", substitute, body)
    return json.loads(text)


def searches(dashboard: dict[str, Any]) -> list[dict[str, str]]:
    found = []
    for widget in dashboard["widgets"]:
        for line in widget["properties"]["metrics"]:
            for item in line:
                if isinstance(item, dict) and "expression" in item:
                    match = SEARCH.search(item["expression"])
                    assert match, f"{widget['properties']['title']}: not a SEARCH we understand: {item['expression']}"
                    found.append({**match.groupdict(), "title": widget["properties"]["title"]})
    return found


def test_every_partner_search_names_a_metric_the_dispatcher_emits_in_its_namespace_and_stage(template, dashboard):
    namespace = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    found = searches(dashboard)
    assert {s["name"] for s in found} == set(PARTNER_METRICS)  # each emitted metric is charted, none invented
    for s in found:
        schema = [part.strip() for part in s["schema"].split(",")]
        assert schema[0] == namespace
        assert set(schema[1:]) == {PARTNER_DIMENSION, "service", STAGE_DIMENSION}
        assert s["filters"] == f'{STAGE_DIMENSION}="prod"'


def test_success_rate_is_the_average_and_latency_the_p95(dashboard):
    stats = {s["name"]: s["stat"] for s in searches(dashboard)}
    assert stats[SUCCESS_RATE_METRIC] == "Average"
    assert stats[LATENCY_METRIC] == "p95"


def test_the_searched_dimensions_are_exactly_the_ones_an_emitted_blob_carries(dashboard, capsys):
    tally = PartnerTally()
    tally.add(
        DeliveryAttempt(
            "acme-motors", "deal.completed", "e1", 1, "delivered", None, dt.datetime.now(dt.UTC), {}, latency_ms=3
        )
    )
    emit_partner_metrics(tally, "trigger-distiller", "prod")
    [blob] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    schema = searches(dashboard)[0]["schema"].split(",")
    assert directive["Namespace"] == "TriggerDistillerTest"  # the tests' namespace; the template's is checked above
    assert sorted(directive["Dimensions"][0]) == sorted(part.strip() for part in schema[1:])


def test_queue_depth_and_age_cover_the_delivery_retry_and_both_dead_letter_queues(dashboard):
    wanted = {"DeliveryQueue", "RetryQueue", "DeliveryDeadLetterQueue", "IngestDeadLetterQueue"}
    charted: dict[str, set[str]] = {}
    for widget in dashboard["widgets"]:
        for line in widget["properties"]["metrics"]:
            if line and line[0] == "AWS/SQS":
                _, metric, dimension, queue = line[:4]
                assert dimension == "QueueName"
                charted.setdefault(metric, set()).add(queue.removeprefix("queue:"))
    assert charted["ApproximateNumberOfMessagesVisible"] >= wanted
    assert charted["ApproximateAgeOfOldestMessage"] >= wanted


def test_every_widget_is_in_the_stack_region(dashboard):
    assert {w["properties"]["region"] for w in dashboard["widgets"]} == {"us-east-2"}


# --- issue 15 item 2: paused partners (stage-wide metrics: service and stage, no partner) ---------


def stage_metric_lines(dashboard: dict[str, Any], namespace: str) -> dict[str, tuple[dict, dict[str, str], dict]]:
    """Plain metric lines of `namespace`: metric name -> (widget, {dimension: value}, options)."""
    found = {}
    for widget in dashboard["widgets"]:
        for line in widget["properties"]["metrics"]:
            if line and line[0] == namespace:
                options = line[-1] if isinstance(line[-1], dict) else {}
                pairs = [item for item in line[2:] if not isinstance(item, dict)]
                assert len(pairs) % 2 == 0, line
                found[line[1]] = (widget, dict(zip(pairs[::2], pairs[1::2], strict=True)), options)
    return found


def emitted_stage_dimensions(capsys, name: str) -> set[str]:
    emit_stage_metric(name, 1, "trigger-distiller", "prod")
    [blob] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert [m["Name"] for m in directive["Metrics"]] == [name]
    [dimensions] = directive["Dimensions"]
    assert {d: blob[d] for d in dimensions} == {"service": "trigger-distiller", EMITTED_STAGE_DIMENSION: "prod"}
    return set(dimensions)


def test_paused_and_resumed_partners_are_charted_with_the_dimensions_the_code_emits(template, dashboard, capsys):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    lines = stage_metric_lines(dashboard, env["POWERTOOLS_METRICS_NAMESPACE"])

    for name in (PAUSED_METRIC, RESUMED_METRIC):
        widget, dimensions, options = lines[name]
        assert dimensions == {"service": env["POWERTOOLS_SERVICE_NAME"], EMITTED_STAGE_DIMENSION: "prod"}
        assert set(dimensions) == emitted_stage_dimensions(capsys, name)  # a metric matches on every dimension
        assert options.get("stat", widget["properties"].get("stat")) == "Sum"
    assert lines[PAUSED_METRIC][0] is lines[RESUMED_METRIC][0]  # one widget: paused against resumed


def test_the_paused_widget_sits_next_to_the_held_series(dashboard):
    by_title = {w["properties"]["title"]: w for w in dashboard["widgets"]}
    [held] = [w for w in dashboard["widgets"] if any(s["name"] == HELD_METRIC for s in searches({"widgets": [w]}))]
    [paused] = [w for w in dashboard["widgets"] if "paused" in w["properties"]["title"].lower()]

    assert paused["y"] == held["y"] and paused["x"] == held["x"] + held["width"]
    # the row still fits the dashboard's 24 columns and no two widgets overlap
    row = sorted((w["x"], w["x"] + w["width"]) for w in by_title.values() if w["y"] == held["y"])
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(row)) and row[-1][1] <= 24


def test_the_partner_paused_alarm_watches_the_metric_the_dispatcher_emits(template, capsys):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    props = template["Resources"]["PartnerPausedAlarm"]["Properties"]
    dimensions = {d["Name"]: d["Value"] for d in props["Dimensions"]}

    assert (props["Namespace"], props["MetricName"]) == (env["POWERTOOLS_METRICS_NAMESPACE"], PAUSED_METRIC)
    assert set(dimensions) == emitted_stage_dimensions(capsys, PAUSED_METRIC)
    assert dimensions == {"service": env["POWERTOOLS_SERVICE_NAME"], EMITTED_STAGE_DIMENSION: {"!Ref": "Stage"}}
    assert env["STAGE"] == {"!Ref": "Stage"}  # what the functions emit as the stage dimension
