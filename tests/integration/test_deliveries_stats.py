"""Issue 15 item 4: `distiller deliveries --stats`, a table per partner from the delivery log.

In-process through the `deliveries` parser; the log is mongomock (with the partners collection
beside it) or a `distiller run --log` file written from the same attempts.
"""

from __future__ import annotations

import datetime as dt
import json

import mongomock
import pytest

from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.core.lookups import PARTNERS_COLLECTION
from distiller.deliver.health import HELD_REASON
from distiller.deliver.log import DELIVERIES_COLLECTION, DeliveryAttempt
from distiller_tools.ops import cli as ops_cli
from distiller_tools.ops.deliveries import percentile
from tests.integration.test_ops_cli import cli

T0 = dt.datetime(2025, 3, 14, 12, 0, tzinfo=dt.UTC)


def attempt(n: int, partner: str, status: str, latency: int | None, *, error: str | None = None) -> DeliveryAttempt:
    return DeliveryAttempt(
        partner_id=partner,
        event="deal.created",
        event_id=f"e{n}",
        attempt=1,
        status=status,  # type: ignore[arg-type]
        url="https://hooks.example/x?token=s3cret",
        attempted_at=T0 + dt.timedelta(minutes=n),
        payload={"n": n},
        error=error,
        latency_ms=latency,
    )


ATTEMPTS = [
    attempt(0, "acme", "failed", 900, error="HTTP 500"),
    attempt(1, "acme", "delivered", 100),
    attempt(2, "acme", "delivered", None),  # written before latencyMs was kept: counted, no latency
    attempt(3, "acme", "skipped", None, error="partner is inactive"),
    attempt(4, "acme", "failed", 300, error="connection refused\n  by  hooks.example " + "x" * 200),
    attempt(5, "carmart", "delivered", 50),
    attempt(6, "carmart", "held", None, error=HELD_REASON),  # paused since: kept, not attempted
    attempt(7, "carmart", "held", None, error=HELD_REASON),
]


@pytest.fixture
def collection():
    database = mongomock.MongoClient(tz_aware=True)["privateauto"]
    log = MongoDeliveryLog(database[DELIVERIES_COLLECTION])
    for a in ATTEMPTS:
        log.record(a)
    database[DELIVERIES_COLLECTION].update_one({"eventId": "e2"}, {"$unset": {"latencyMs": ""}})
    database[PARTNERS_COLLECTION].insert_many(
        [
            {"partnerId": "acme", "active": True},
            {"partnerId": "carmart", "active": True, "state": "paused"},
            {"partnerId": "oldroad", "active": False},
        ]
    )
    return database[DELIVERIES_COLLECTION]


def table(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    header = lines[0].split("  ")
    assert [h.strip() for h in header if h.strip()][:4] == ["PARTNER", "ATTEMPTS", "DELIVERED", "SUCCESS"]
    assert [h.strip() for h in header if h.strip()][6:] == ["HELD", "STATE", "LAST ERROR"]
    return {line.split()[0]: line.split(None, 8) for line in lines[1:]}


def test_stats_count_attempts_rates_latency_percentiles_and_the_last_error(source):
    code, out, err = cli(["deliveries", "--stats", *source])

    assert code == 0, err
    rows = table(out)
    # acme: 4 attempts (the skip is not one), 2 delivered; latencies 100, 300, 900 (one entry has none)
    assert rows["acme"][:6] == ["acme", "4", "2", "50.0%", "300", "900"]
    last_error = rows["acme"][8]
    assert last_error.startswith("connection refused by hooks.example x")  # newest failure, on one line
    assert last_error.endswith("…") and len(last_error) == 60
    assert rows["carmart"][:6] == ["carmart", "1", "1", "100.0%", "50", "50"]
    assert "s3cret" not in out and "hooks.example/x" not in out
    assert (
        err.strip()
        == f"deliveries: 5 attempt(s) across {len(rows)} partner(s); 2 held for paused partners (not attempts)"
    )


def test_held_entries_are_counted_apart_from_attempts_and_the_paused_state_is_shown(source):
    code, out, err = cli(["deliveries", "--stats", *source])

    assert code == 0, err
    rows = table(out)
    # carmart: 1 attempt, delivered; its 2 held deliveries are neither attempts nor failures
    assert rows["carmart"][:7] == ["carmart", "1", "1", "100.0%", "50", "50", "2"]
    assert rows["carmart"][8] == "-"  # a held entry's reason is not an error
    assert rows["acme"][6] == "0"
    if "--mongo-uri" in source:
        assert rows["carmart"][7] == "paused"
    code, out, err = cli(["deliveries", "--stats", "--since", "2025-03-14T12:07:00Z", *source])
    assert table(out)["carmart"][1:7] == ["0", "0", "-", "-", "-", "1"]  # the window applies to held entries too
    assert err.strip().endswith("; 1 held for paused partners (not attempts)")


def test_state_comes_from_the_partner_records_with_mongo_and_is_a_dash_for_a_log(log_file, collection, monkeypatch):
    monkeypatch.setattr(ops_cli, "_open_collection", lambda uri, database: collection)
    _, out, _ = cli(["deliveries", "--stats", "--mongo-uri", "mongodb://db.example:27017"])
    states = {partner: row[7] for partner, row in table(out).items()}
    assert states == {"acme": "active", "carmart": "paused", "oldroad": "inactive"}
    assert table(out)["oldroad"][1:4] == ["0", "0", "-"]  # no attempts: no rate, but listed

    _, out, _ = cli(["deliveries", "--stats", "--log", str(log_file)])
    assert {partner: row[7] for partner, row in table(out).items()} == {"acme": "-", "carmart": "-"}


def test_since_and_partner_narrow_the_window(source):
    code, out, _ = cli(["deliveries", "--stats", "--partner", "acme", "--since", "2025-03-14T12:01:00Z", *source])
    assert code == 0
    rows = table(out)
    assert list(rows) == ["acme"]
    assert rows["acme"][:6] == ["acme", "3", "2", "66.7%", "100", "300"]


def test_an_event_filter_counts_that_events_attempts_from_either_source(source):
    code, out, _ = cli(["deliveries", "--stats", "--event", "deal.created", *source])
    assert code == 0
    assert table(out)["carmart"][:3] == ["carmart", "1", "1"]
    code, out, err = cli(["deliveries", "--stats", "--event", "offer.created", *source])
    assert code == 0 and "0 attempt(s)" in err


@pytest.mark.parametrize("flag", [["--status", "failed"], ["--event-id", "e1"], ["--limit", "5"]])
def test_list_only_filters_are_refused_with_stats(log_file, flag):
    code, out, err = cli(["deliveries", "--stats", "--log", str(log_file), *flag])
    assert (code, out) == (2, "")
    assert f"{flag[0]} cannot be used with --stats" in err


def test_since_after_until_is_refused(log_file):
    code, _, err = cli(
        ["deliveries", "--stats", "--log", str(log_file), "--since", "2025-03-15T00:00:00Z", "--until", "2025-03-14"]
    )
    assert code == 2 and "since is after until" in err


def test_without_stats_partner_is_still_required(log_file, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["deliveries", "--log", str(log_file)])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --partner" in capsys.readouterr().err


def test_the_list_keeps_its_default_limit_and_now_carries_latency(log_file):
    code, out, err = cli(["deliveries", "--partner", "acme", "--log", str(log_file)])
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 5 and "limit" not in err
    assert [line.get("latencyMs") for line in lines] == [300, None, None, 100, 900]


def test_percentile_is_nearest_rank():
    assert percentile([], 95) is None
    assert percentile([5.0], 50) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (50.0, 95.0, 100.0)
