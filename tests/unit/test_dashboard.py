"""Issue 15 item 4: the CloudWatch dashboard charts what the Dispatcher function actually emits.

The dashboard body is a `!Sub` string in template.yaml; the test substitutes it, parses the JSON
and checks every per-partner SEARCH against the metric names, namespace and dimensions the code
emits (imported from the handler module), so code and dashboard cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from distiller.deliver.handler import (
    LATENCY_METRIC,
    PARTNER_DIMENSION,
    PARTNER_METRICS,
    STAGE_DIMENSION,
    SUCCESS_RATE_METRIC,
)
from distiller.deliver.log import DeliveryAttempt
from distiller.deliver.partner_metrics import PartnerTally, emit_partner_metrics
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
