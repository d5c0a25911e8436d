"""`distiller run` (moto server + the real handlers + real HTTP) and `distiller receiver`."""

import datetime as dt
import hashlib
import hmac
import io
import json
import re
import socket
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from distiller_tools.cli import main
from distiller_tools.local.receiver import WebhookReceiver

EVENTS = Path(__file__).resolve().parents[2] / "events"
SECRET = "receiver-test-secret"
THROUGHPUT = re.compile(
    r"distiller run: (\d+) deliveries, (\d+) events in (\d+\.\d)s: (\d+\.\d) deliveries/s, (\d+\.\d) events/s"
)
"""`distiller run`'s last line on stderr."""


@pytest.fixture
def receiver():
    out = io.StringIO()
    server = WebhookReceiver(0, SECRET, out)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, out
    server.shutdown()
    server.server_close()


def post(url, body: bytes, headers):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def signed(body: bytes, event_id="e-1", secret=SECRET, timestamp="2026-04-21T14:00:00.000Z"):
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-PA-Timestamp": timestamp,
        "X-PA-Signature": f"sha256={digest}",
        "X-PA-Event": "deal.created",
        "X-PA-Event-Id": event_id,
        "X-PA-Partner": "acme",
    }


def test_receiver_accepts_a_good_signature_once_and_dedupes(receiver):
    server, out = receiver
    body = b'{"id":"1","eventId":"e-1","eventKey":"82f1:acme:deal.created:0"}'

    first = post(server.url + "/acme", body, signed(body))
    again = post(server.url + "/acme", body, signed(body))

    assert first == (200, {"status": "accepted", "eventId": "e-1"})
    assert again == (200, {"status": "duplicate", "eventId": "e-1"})
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines == [{"eventId": "e-1", "event": "deal.created", "partner": "acme", "path": "/acme", "attempt": 1}]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(lambda h, b: (h, b + b" "), "does not match", id="tampered-body"),
        pytest.param(
            lambda h, b: ({**h, "X-PA-Timestamp": "2026-04-21T14:00:01.000Z"}, b),
            "does not match",
            id="tampered-timestamp",
        ),
        pytest.param(lambda h, b: (signed(b, secret="other"), b), "does not match", id="wrong-secret"),
        pytest.param(
            lambda h, b: ({k: v for k, v in h.items() if k != "X-PA-Signature"}, b),
            "missing X-PA-Signature",
            id="no-signature",
        ),
    ],
)
def test_receiver_rejects_bad_signatures_with_401(receiver, mutate, message):
    server, out = receiver
    body = b'{"id":"1"}'
    headers, sent = mutate(signed(body), body)

    status, answer = post(server.url, sent, headers)

    assert status == 401 and message in answer["error"]
    assert SECRET not in answer["error"]
    assert out.getvalue() == "" and server.rejected == 1


def test_receiver_fail_first_answers_503_then_accepts():
    out = io.StringIO()
    server = WebhookReceiver(0, SECRET, out, fail_first=1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = b'{"eventId":"e-1"}'
        assert post(server.url, body, signed(body))[0] == 503
        assert post(server.url, body, signed(body))[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    assert json.loads(out.getvalue())["attempt"] == 2


def local_partners(tmp_path, url_for):
    partners = json.loads((EVENTS / "partners.json").read_text())
    for partner in partners:
        partner["webhook"] = {**partner.get("webhook", {}), "url": url_for(partner["partnerId"]), "secret": SECRET}
    path = tmp_path / "partners.json"
    path.write_text(json.dumps(partners))
    return path


def run_cli(argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    try:
        code = main(argv)
    finally:
        sys.stdout, sys.stderr = old
    return code, stdout.getvalue(), stderr.getvalue()


def test_run_delivers_every_distilled_event_signed_over_real_http(receiver, tmp_path):
    server, out = receiver
    partners = local_partners(tmp_path, lambda pid: f"{server.url}/{pid}")
    flow = str(EVENTS / "flows" / "c2d_sell.jsonl")
    world = str(EVENTS / "world.json")
    log = tmp_path / "attempts.jsonl"
    _, dry, _ = run_cli(["distill", "--partners", str(partners), "--world", world, flow])
    expected = sorted((d["partnerId"], d["eventId"]) for d in map(json.loads, dry.splitlines()))

    code, table, err = run_cli(
        [
            "run",
            "--partners",
            str(partners),
            "--world",
            world,
            "--allow-private-endpoints",
            "--retry-delays",
            "1,1,1",
            "--log",
            str(log),
            flow,
        ]
    )

    assert code == 0, err
    received = [json.loads(x) for x in out.getvalue().splitlines()]
    assert sorted((r["partner"], r["eventId"]) for r in received) == expected
    assert all(r["path"] == f"/{r['partner']}" for r in received)
    attempts = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(attempts) == len(expected)
    for attempt in attempts:
        assert attempt["status"] == "delivered" and attempt["statusCode"] == 200 and attempt["attempt"] == 1
        assert {
            "id",
            "partnerId",
            "event",
            "eventId",
            "url",
            "attemptedAt",
            "responseBodyExcerpt",
            "error",
            "payload",
        } <= set(attempt)
        assert attempt["payload"]["eventId"] == attempt["eventId"]
    assert table.splitlines()[0].split() == ["partner", "event", "delivered", "retried", "dead-lettered", "skipped"]
    assert table.splitlines()[-1].split() == ["total", str(len(expected)), "0", "0", "0"]
    throughput = THROUGHPUT.fullmatch(err.splitlines()[-1])  # the summary's throughput, on stderr
    assert throughput, err
    input_lines = sum(1 for line in Path(flow).read_text().splitlines() if line.strip())
    assert (int(throughput[1]), int(throughput[2])) == (len(expected), input_lines)
    assert float(throughput[4]) > 0 and float(throughput[5]) > 0


def test_run_retries_then_dead_letters_an_unreachable_partner(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    partners = local_partners(tmp_path, lambda pid: f"http://127.0.0.1:{closed_port}/{pid}")
    flow = tmp_path / "one.jsonl"
    flow.write_text((EVENTS / "flows" / "c2d_sell.jsonl").read_text().splitlines()[0] + "\n{not json\n")

    code, table, err = run_cli(
        [
            "run",
            "--partners",
            str(partners),
            "--world",
            str(EVENTS / "world.json"),
            "--allow-private-endpoints",
            "--retry-delays",
            "0,0,0",
            flow.as_posix(),
        ]
    )

    assert code == 1
    total = table.splitlines()[-1].split()
    assert total[0] == "total" and total[1] == "0" and int(total[3]) > 0  # nothing delivered, all dead-lettered
    assert int(total[2]) == 3 * int(total[3])  # three retries before each dead letter
    assert "dead-lettered:" in err and "after 4 attempt(s): connection error" in err
    assert re.search(r"parked: Records\[\d\]: .*not valid JSON", err)


def test_run_refuses_private_endpoints_unless_allowed(receiver, tmp_path):
    server, out = receiver
    partners = local_partners(tmp_path, lambda pid: f"{server.url}/{pid}")
    flow = str(EVENTS / "flows" / "c2d_sell.jsonl")

    code, table, err = run_cli(["run", "--partners", str(partners), "--world", str(EVENTS / "world.json"), flow])

    assert code == 1 and out.getvalue() == ""
    assert "endpoint refused: scheme 'http' refused" in err
    total = table.splitlines()[-1].split()
    assert total[2] == "0"  # refused endpoints are never retried


@pytest.fixture
def failing_first_receiver():
    """A receiver that answers 503 to the first try of each event, then accepts."""
    out = io.StringIO()
    server = WebhookReceiver(0, SECRET, out, fail_first=1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, out
    server.shutdown()
    server.server_close()


class TerminalStream(io.StringIO):
    """stderr as a terminal shows it (isatty)."""

    def isatty(self) -> bool:
        return True


def run_one_line(tmp_path, server, *options, stderr=None):
    """`distiller run` over the first line of a flow (one delivery) to `server`, retrying after 2 s."""
    partners = local_partners(tmp_path, lambda pid: f"{server.url}/{pid}")
    flow = tmp_path / "one.jsonl"
    flow.write_text((EVENTS / "flows" / "c2d_sell.jsonl").read_text().splitlines()[0] + "\n")
    argv = ["run", "--partners", str(partners), "--world", str(EVENTS / "world.json"), "--allow-private-endpoints"]
    stdout, stderr = io.StringIO(), stderr if stderr is not None else io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    started = dt.datetime.now(dt.UTC)
    try:
        code = main([*argv, "--retry-delays", "2,1,1", *options, flow.as_posix()])
    finally:
        sys.stdout, sys.stderr = old
    return code, stdout.getvalue(), stderr.getvalue(), started, dt.datetime.now(dt.UTC)


def test_run_prints_a_progress_line_per_wave_on_stderr(failing_first_receiver, tmp_path):
    server, _ = failing_first_receiver

    code, table, err, started, ended = run_one_line(tmp_path, server)

    assert code == 0, err
    progress = [line for line in err.splitlines() if line.startswith("distiller run: wave")]
    assert len(progress) == 2, err
    first = re.fullmatch(
        r"distiller run: wave 1: delivered 0, waiting for retry 1 "
        r"\(next due (\d\d):(\d\d):(\d\d) UTC, in ([12])s\), dead-lettered 0",
        progress[0],
    )
    assert first, progress[0]
    due = dt.timedelta(hours=int(first[1]), minutes=int(first[2]), seconds=int(first[3]))
    since_midnight = started - started.replace(hour=0, minute=0, second=0, microsecond=0)
    assert (due - since_midnight).total_seconds() % 86400 <= (ended - started).total_seconds() + 1
    assert progress[1] == "distiller run: wave 2: delivered 1, waiting for retry 0, dead-lettered 0"
    assert "\r" not in err
    assert table.splitlines()[-1].split() == ["total", "1", "1", "0", "0"]  # the summary is unchanged


def test_run_on_a_terminal_redraws_one_progress_line_in_place(failing_first_receiver, tmp_path, monkeypatch):
    server, _ = failing_first_receiver
    monkeypatch.setenv("COLUMNS", "72")  # the terminal's width: a longer line would wrap and not redraw

    code, _, err, _, _ = run_one_line(tmp_path, server, stderr=TerminalStream())

    assert code == 0, err
    assert "distiller run: wave" not in err
    progress, summary = err.removesuffix("\n").rsplit("\n", 1)  # the throughput line comes after the run
    assert THROUGHPUT.fullmatch(summary), summary
    start = progress.index("\r")
    shown = progress[start:]
    assert "\n" not in shown  # one line, ended (by the newline before the summary) when the run is over
    frames = [frame.rstrip() for frame in shown.split("\r") if frame.strip()]
    assert all(len(frame) <= 71 for frame in frames)
    assert re.fullmatch(r"\[\.{10}\] delivered 0, waiting 1 \(next \d\d:\d\d:\d\d UTC, in [12]s\), dead-le", frames[0])
    assert len(frames) > 2  # redrawn: the countdown, then the second wave
    assert frames[-1] == "[##########] delivered 1, waiting 0, dead-lettered 0"


def test_run_quiet_prints_no_progress(receiver, tmp_path):
    server, _ = receiver

    code, table, err, _, _ = run_one_line(tmp_path, server, "--quiet")

    assert code == 0, err
    assert "wave" not in err and "settled" not in err
    assert table.splitlines()[-1].split() == ["total", "1", "0", "0", "0"]


def test_run_reports_a_line_that_is_not_utf8_and_delivers_the_others(receiver, tmp_path):
    server, out = receiver
    partners = local_partners(tmp_path, lambda pid: f"{server.url}/{pid}")
    lines = (EVENTS / "flows" / "c2d_sell.jsonl").read_bytes().splitlines()[:2]
    flow = tmp_path / "mixed.jsonl"
    flow.write_bytes(lines[0] + b"\n\xff{}\n" + lines[1] + b"\n")

    argv = ["run", "--partners", str(partners), "--world", str(EVENTS / "world.json"), "--allow-private-endpoints"]

    code, table, err = run_cli([*argv, "--quiet", flow.as_posix()])

    assert code == 1
    assert f"error: {flow}:2: not UTF-8 text: invalid start byte at byte 0\n" in err
    assert "Traceback" not in err and "parked:" not in err  # reported, never queued
    delivered = int(table.splitlines()[-1].split()[1])
    assert delivered >= 2 and delivered == len(out.getvalue().splitlines())
