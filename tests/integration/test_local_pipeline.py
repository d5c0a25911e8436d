"""`distiller run` (moto server + the real handlers + real HTTP) and `distiller receiver`."""

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

from distiller.cli import main
from distiller.local.receiver import WebhookReceiver

EVENTS = Path(__file__).resolve().parents[2] / "events"
SECRET = "receiver-test-secret"


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
    body = b'{"id":"1","eventId":"e-1"}'

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
        body = b"{}"
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
