"""Issue 15 item 4: per-partner metrics from the Dispatcher function, one EMF blob per partner per batch.

The dispatcher is the real one over moto SQS/Secrets Manager and a mongomock log (tests/
delivery_world.py) with a fake sender (no sockets); the handler is `handle_deliveries` itself.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from distiller.deliver.handler import (
    DEAD_LETTERED_METRIC,
    DELIVERED_METRIC,
    FAILED_METRIC,
    LATENCY_METRIC,
    PARTNER_DIMENSION,
    STAGE_DIMENSION,
    SUCCESS_RATE_METRIC,
    handle_deliveries,
)
from distiller.deliver.log import DeliveryAttempt
from distiller.deliver.partner_metrics import PartnerTally, emit_partner_metrics
from distiller.deliver.sender import SendResult
from distiller.observability import metrics
from tests.delivery_world import message

URLS = {"acme-motors": "https://acme.example/hooks?token=s3cret", "lendco": "https://lendco.example/hooks"}


class FakeSender:
    """acme-motors accepts everything; lendco answers 500."""

    per_host_connections = 4

    def post(self, url: str, headers: dict[str, str], body: bytes, *, start_by: float | None = None) -> SendResult:
        if url.startswith("https://acme.example"):
            return SendResult(True, status_code=200, body_excerpt="ok")
        return SendResult(False, status_code=500, body_excerpt="down", error="HTTP 500")


def blobs(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict) and "_aws" in parsed:
            out.append(parsed)
    return out


def partner_blobs(text: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for blob in blobs(text):
        [directive] = blob["_aws"]["CloudWatchMetrics"]
        if PARTNER_DIMENSION in directive["Dimensions"][0]:
            found.setdefault(blob[PARTNER_DIMENSION], []).append(blob)
    return found


@pytest.fixture(autouse=True)
def clean_metrics():
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


def run_batch(world: Any, lambda_context: Any, batch: list[Any]) -> dict[str, Any]:
    for partner_id, url in URLS.items():
        world.add_partner(partner_id, url)
    dispatcher = world.dispatcher(sender=FakeSender())
    world.queue(world.delivery_url).send([world_outgoing(m) for m in batch])
    received = world.receive(world.delivery_url)
    return handle_deliveries(world.sqs_event(world.delivery_url, received), lambda_context, world.runtime(dispatcher))


def world_outgoing(msg: Any) -> Any:
    from distiller.adapters.queues import OutgoingMessage

    return OutgoingMessage(msg.to_body())


def test_a_batch_emits_one_blob_per_partner_with_counts_and_latencies_and_keeps_the_totals(
    world, lambda_context, capsys, monkeypatch
):
    monkeypatch.setenv("STAGE", "dev")
    # Given two deliveries to a healthy partner and one to a failing one, plus one dead-lettering
    batch = [message("acme-motors"), message("acme-motors"), message("lendco"), message("lendco", attempt=3)]

    # When the Dispatcher function handles the batch
    response = run_batch(world, lambda_context, batch)

    # Then each partner has exactly one blob, dimensioned by partner (and service), with its counts
    assert response == {"batchItemFailures": []}
    out = capsys.readouterr().out
    per_partner = partner_blobs(out)
    assert sorted(per_partner) == ["acme-motors", "lendco"]
    [acme] = per_partner["acme-motors"]
    [lendco] = per_partner["lendco"]
    [directive] = acme["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "TriggerDistillerTest"
    assert sorted(directive["Dimensions"][0]) == sorted([PARTNER_DIMENSION, "service", STAGE_DIMENSION])
    assert (acme["service"], acme[STAGE_DIMENSION]) == ("trigger-distiller", "dev")
    assert (acme[DELIVERED_METRIC], acme[FAILED_METRIC]) == ([2.0], [0.0])
    assert DEAD_LETTERED_METRIC not in acme
    assert (lendco[DELIVERED_METRIC], lendco[FAILED_METRIC], lendco[DEAD_LETTERED_METRIC]) == ([0.0], [2.0], [1.0])
    # the success rate's samples: their Average is the rate in percent
    assert sorted(acme[SUCCESS_RATE_METRIC]) == [100.0, 100.0] and lendco[SUCCESS_RATE_METRIC] == [0.0, 0.0]
    # latency: one value per POST, in one list per partner
    assert len(acme[LATENCY_METRIC]) == 2 and all(v >= 0 for v in acme[LATENCY_METRIC])
    assert len(lendco[LATENCY_METRIC]) == 2
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units[LATENCY_METRIC] == "Milliseconds" and units[DELIVERED_METRIC] == "Count"
    # never the URL (with its token) or the payload
    assert "s3cret" not in out and "acme.example" not in out and "Octavia" not in out
    # and the un-dimensioned totals are still there, on the shared Metrics object
    totals = {name: metric["Value"] for name, metric in metrics.metric_set.items()}
    assert totals == {"Delivered": [2.0], "RetryScheduled": [1.0], "DeadLettered": [1.0]}


def test_the_log_keeps_latency_for_a_post_and_none_for_a_skip(world, lambda_context):
    world.add_partner("oldroad-motors", "https://oldroad.example/hooks", active=False)
    run_batch(world, lambda_context, [message("acme-motors"), message("oldroad-motors")])

    by_partner = {e["partnerId"]: e for e in world.entries()}
    assert isinstance(by_partner["acme-motors"]["latencyMs"], int)
    assert by_partner["oldroad-motors"]["status"] == "skipped"
    assert "latencyMs" not in by_partner["oldroad-motors"]


def attempt(status: str, latency_ms: int | None, **extra: Any) -> DeliveryAttempt:
    return DeliveryAttempt(
        partner_id="acme-motors",
        event="deal.completed",
        event_id="e1",
        attempt=1,
        status=status,  # type: ignore[arg-type]
        url=None,
        attempted_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        payload={},
        latency_ms=latency_ms,
        **extra,
    )


def test_more_than_100_latencies_go_out_as_full_lists_with_the_counts_once(capsys):
    tally = PartnerTally()
    for n in range(150):
        tally.add(attempt("delivered", n))

    assert emit_partner_metrics(tally, "trigger-distiller") == 1

    sent = partner_blobs(capsys.readouterr().out)["acme-motors"]
    latencies = [v for blob in sent for v in blob.get(LATENCY_METRIC, [])]
    assert sorted(latencies) == [float(n) for n in range(150)]
    assert all(len(blob.get(name, [])) <= 100 for blob in sent for name in (LATENCY_METRIC, SUCCESS_RATE_METRIC))
    assert [blob[DELIVERED_METRIC] for blob in sent if DELIVERED_METRIC in blob] == [[150.0]]


def test_only_skips_emit_nothing_and_disabled_metrics_print_nothing(capsys, monkeypatch):
    skipped = PartnerTally()
    skipped.add(attempt("skipped", None))
    assert emit_partner_metrics(skipped, "trigger-distiller") == 0

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    delivered = PartnerTally()
    delivered.add(attempt("delivered", 5))
    assert emit_partner_metrics(delivered, "trigger-distiller") == 0
    assert blobs(capsys.readouterr().out) == []


def test_held_attempts_are_counted_for_item_2():
    tally = PartnerTally()
    tally.add(attempt("held", None))
    tally.add(attempt("failed", 12, dead_lettered=True))
    counts = tally.by_partner()["acme-motors"]
    assert (counts.held, counts.failed, counts.dead_lettered, counts.latencies_ms) == (1, 1, 1, [12])


def test_partner_metrics_off_keeps_the_totals_and_prints_no_partner_blob(world, lambda_context, capsys):
    for partner_id, url in URLS.items():
        world.add_partner(partner_id, url)
    runtime = world.runtime(world.dispatcher(sender=FakeSender()))
    runtime.partner_metrics = False
    world.queue(world.delivery_url).send([world_outgoing(message("acme-motors")), world_outgoing(message("lendco"))])
    event = world.sqs_event(world.delivery_url, world.receive(world.delivery_url))

    assert handle_deliveries(event, lambda_context, runtime) == {"batchItemFailures": []}

    assert partner_blobs(capsys.readouterr().out) == {}
    totals = {name: metric["Value"] for name, metric in metrics.metric_set.items()}
    assert totals == {"Delivered": [1.0], "RetryScheduled": [1.0]}
