"""`distiller receiver` trusts only what the signature covers (issue 11), and both local servers
refuse a malformed Content-Length with 400.

Real servers on 127.0.0.1 (port 0) in threads; requests by `http.client`, which sends headers
exactly as given (duplicates and malformed values included).
"""

from __future__ import annotations

import datetime as dt
import http.client
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from distiller.core.identity import event_id, event_key
from distiller.deliver.signing import signature
from distiller_tools.cli import main
from distiller_tools.local.api_server import start
from distiller_tools.local.receiver import SECRET_ENV, SecretSourceError, WebhookReceiver, resolve_secret
from distiller_tools.world import in_memory_database, load_partners

ROOT = Path(__file__).resolve().parents[2]
SECRET = "receiver-test-secret"
TOKEN = "8269EB93A5000000012B042C0100296E5A1004"


def iso(instant: dt.datetime) -> str:
    """An X-PA-Timestamp as the Dispatcher writes it."""
    return instant.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> str:
    return iso(dt.datetime.now(dt.UTC))


def delivery_body(partner: str = "acme-motors", event: str = "deal.created", index: int = 0) -> tuple[bytes, str]:
    """A body shaped as the pipeline builds it (`{id, eventId, eventKey, entityType, ...}`), and its eventId."""
    key = event_key(TOKEN, partner, event, index)
    eid = event_id(key)
    body = {"id": "64a1f2e3b5c8d90012345678", "eventId": eid, "eventKey": key, "entityType": "deals", "amount": 1}
    return json.dumps(body, separators=(",", ":")).encode(), eid


def headers_for(body: bytes, *, timestamp: str | None = None, secret: str = SECRET, **extra: str) -> list[tuple]:
    """Content-Type, X-PA-Timestamp and X-PA-Signature, then `extra` (`X_PA_Event="..."` → `X-PA-Event`)."""
    timestamp = timestamp or now()
    headers = [
        ("Content-Type", "application/json"),
        ("X-PA-Timestamp", timestamp),
        ("X-PA-Signature", signature(secret, timestamp, body)),
    ]
    return headers + [(name.replace("_", "-"), value) for name, value in extra.items()]


def spec_headers(body: bytes, eid: str, partner: str = "acme-motors", event: str = "deal.created", **kw) -> list:
    """Every header the Dispatcher sends."""
    return headers_for(body, X_PA_Event=event, X_PA_Partner=partner, X_PA_Event_Id=eid, **kw)


def send(url: str, body: bytes, headers: list[tuple], path: str = "/acme-motors", method: str = "POST"):
    """(status, JSON answer, response headers); `headers` sent as given, Content-Length added unless present."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if not any(name.lower() == "content-length" for name, _ in headers):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def answer(url: str, body: bytes, headers: list[tuple], path: str = "/acme-motors"):
    status, data, _ = send(url, body, headers, path)
    return status, data


@pytest.fixture
def receiver_factory() -> Iterator:
    servers: list[WebhookReceiver] = []

    def make(**options) -> tuple[WebhookReceiver, io.StringIO]:
        out = io.StringIO()
        server = WebhookReceiver(0, SECRET, out, **options)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, out

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver(receiver_factory):
    return receiver_factory()


def printed(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


# --- what is deduped and printed comes from the signed body ------------------------------------


def test_a_replay_with_another_event_id_header_is_refused_and_not_accepted(receiver):
    server, out = receiver
    body, eid = delivery_body()
    forged = "f" * 64

    replay = answer(server.url, body, spec_headers(body, forged))
    genuine = answer(server.url, body, spec_headers(body, eid))
    replay_again = answer(server.url, body, spec_headers(body, "0" * 64))

    assert replay == (400, {"error": "X-PA-Event-Id header does not match the signed body's eventId"})
    assert genuine == (200, {"status": "accepted", "eventId": eid})
    assert replay_again[0] == 400
    assert server.accepted == 1 and server.rejected == 2
    assert [line["eventId"] for line in printed(out)] == [eid]
    assert forged not in out.getvalue()


def test_the_same_delivery_twice_is_accepted_once_whatever_its_event_id_header(receiver):
    server, out = receiver
    body, eid = delivery_body()

    first = answer(server.url, body, spec_headers(body, eid))
    without_header = answer(server.url, body, headers_for(body, X_PA_Event="deal.created"))
    again = answer(server.url, body, spec_headers(body, eid))

    assert first == (200, {"status": "accepted", "eventId": eid})
    assert without_header == again == (200, {"status": "duplicate", "eventId": eid})
    assert server.accepted == 1 and len(printed(out)) == 1


@pytest.mark.parametrize(
    ("header", "value", "error"),
    [
        pytest.param(
            "X_PA_Event", "deal.completed", "X-PA-Event header does not match the event of the signed body's eventKey"
        ),
        pytest.param(
            "X_PA_Partner", "carmart", "X-PA-Partner header does not match the partner of the signed body's eventKey"
        ),
    ],
)
def test_a_relabelled_event_or_partner_header_is_refused(receiver, header, value, error):
    server, out = receiver
    body, eid = delivery_body()
    headers = [h for h in spec_headers(body, eid) if h[0] != header.replace("_", "-")]

    status, data = answer(server.url, body, [*headers, (header.replace("_", "-"), value)])

    assert (status, data) == (400, {"error": error})
    assert server.accepted == 0 and out.getvalue() == ""
    assert answer(server.url, body, spec_headers(body, eid))[0] == 200  # the genuine delivery still goes through


@pytest.mark.parametrize("partner", ["acme-motors", "org:acme"])
def test_the_printed_line_comes_from_the_signed_body_not_the_headers(receiver, partner):
    server, out = receiver
    body, eid = delivery_body(partner, "offer.accepted", 2)

    status, _ = answer(server.url, body, headers_for(body), path="/hooks")  # no X-PA-Event/-Partner/-Event-Id

    assert status == 200
    assert printed(out) == [
        {"eventId": eid, "event": "offer.accepted", "partner": partner, "path": "/hooks", "attempt": 1}
    ]


def test_a_signed_body_without_event_key_prints_no_event_or_partner_and_ignores_those_headers(receiver):
    server, out = receiver
    body = b'{"eventId":"e-1"}'

    status, _ = answer(server.url, body, headers_for(body, X_PA_Event="deal.completed", X_PA_Partner="acme"))

    assert status == 200
    assert printed(out) == [{"eventId": "e-1", "event": None, "partner": None, "path": "/acme-motors", "attempt": 1}]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param(b"not json", "body is not JSON", id="not-json"),
        pytest.param(b"\xff\xfe", "body is not JSON", id="not-utf8"),
        pytest.param(b"[1]", "body has no eventId (a non-empty string)", id="array"),
        pytest.param(b"{}", "body has no eventId (a non-empty string)", id="no-event-id"),
        pytest.param(b'{"eventId":5}', "body has no eventId (a non-empty string)", id="number-event-id"),
        pytest.param(b'{"eventId":""}', "body has no eventId (a non-empty string)", id="empty-event-id"),
    ],
)
def test_a_signed_body_that_is_not_an_object_with_an_event_id_is_refused(receiver, body, error):
    server, out = receiver

    assert answer(server.url, body, headers_for(body, X_PA_Event_Id="e-1")) == (400, {"error": error})
    assert server.accepted == 0 and server.rejected == 1 and out.getvalue() == ""


def test_fail_first_counts_attempts_by_the_body_event_id(receiver_factory):
    server, out = receiver_factory(fail_first=1)
    body, eid = delivery_body()

    first = answer(server.url, body, headers_for(body))  # no X-PA-Event-Id header
    second = answer(server.url, body, spec_headers(body, eid))

    assert first[0] == 503 and second == (200, {"status": "accepted", "eventId": eid})
    assert printed(out)[0]["attempt"] == 2


@pytest.mark.parametrize("name", ["X-PA-Timestamp", "X-PA-Event-Id", "X-PA-Event"])
def test_a_delivery_header_given_twice_is_refused(receiver_factory, name):
    server, out = receiver_factory(max_age=60)
    old = iso(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    body, eid = delivery_body()
    headers = spec_headers(body, eid, timestamp=old)
    first_value = {"X-PA-Timestamp": now(), "X-PA-Event-Id": eid, "X-PA-Event": "deal.created"}[name]

    status, data = answer(server.url, body, [(name, first_value), *headers])

    assert (status, data) == (400, {"error": f"{name} header given more than once"})
    assert server.accepted == 0 and out.getvalue() == ""


# --- --max-age ---------------------------------------------------------------------------------


def test_max_age_refuses_an_old_timestamp_and_accepts_a_fresh_one_and_is_off_by_default(receiver_factory):
    strict, strict_out = receiver_factory(max_age=60)
    default, default_out = receiver_factory()
    old_body, old_id = delivery_body(index=0)
    fresh_body, fresh_id = delivery_body(index=1)
    two_hours_ago = iso(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))

    stale = answer(strict.url, old_body, spec_headers(old_body, old_id, timestamp=two_hours_ago))
    fresh = answer(strict.url, fresh_body, spec_headers(fresh_body, fresh_id))
    years_old = answer(default.url, old_body, spec_headers(old_body, old_id, timestamp="2020-01-01T00:00:00.000Z"))

    assert stale == (401, {"error": "X-PA-Timestamp is older than --max-age (60 s)"})
    assert fresh == (200, {"status": "accepted", "eventId": fresh_id})
    assert [line["eventId"] for line in printed(strict_out)] == [fresh_id] and strict.rejected == 1
    assert years_old == (200, {"status": "accepted", "eventId": old_id})  # verify() alone does not check age
    assert [line["eventId"] for line in printed(default_out)] == [old_id]


def test_max_age_still_checks_the_signature_first_and_refuses_a_timestamp_that_is_no_instant(receiver_factory):
    server, out = receiver_factory(max_age=3600)
    body, eid = delivery_body()
    headers = spec_headers(body, eid)
    tampered = [(n, now() if n == "X-PA-Timestamp" else v) for n, v in spec_headers(body, eid, timestamp="x")]

    not_an_instant = answer(server.url, body, spec_headers(body, eid, timestamp="yesterday"))
    unsigned_fresh = answer(server.url, body, tampered)

    assert not_an_instant == (401, {"error": "X-PA-Timestamp is not an ISO 8601 instant with a time zone (--max-age)"})
    assert unsigned_fresh == (401, {"error": "X-PA-Signature does not match the body and timestamp"})
    assert answer(server.url, body, headers)[0] == 200
    assert len(printed(out)) == 1


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_max_age_must_be_a_number_of_seconds_above_0(capsys, value):
    with pytest.raises(SystemExit) as exit_:
        main(["receiver", "--port", "0", "--secret", "s", "--max-age", value])

    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --max-age: {value!r} is not a number of seconds" in err and "Traceback" not in err


# --- where the secret comes from ---------------------------------------------------------------


def test_the_secret_comes_from_exactly_one_source(tmp_path):
    file = tmp_path / "secret"
    file.write_text("from file\n")
    crlf = tmp_path / "crlf"
    crlf.write_bytes(b" spaced secret \r\n")

    assert resolve_secret("from flag", None, {}) == "from flag"
    assert resolve_secret(None, str(file), {}) == "from file"
    assert resolve_secret(None, str(crlf), {}) == " spaced secret "  # one line ending dropped, nothing else
    assert resolve_secret(None, None, {SECRET_ENV: "from env"}) == "from env"
    with pytest.raises(SecretSourceError, match="several webhook secrets given"):
        resolve_secret("a", None, {SECRET_ENV: "b"})


@pytest.fixture
def served(monkeypatch) -> list[dict]:
    """`serve` replaced by a recorder: what `distiller receiver` would serve with, without serving."""
    calls: list[dict] = []

    def fake_serve(port, secret, fail_first=0, out=None, err=None, max_age=None):
        calls.append({"port": port, "secret": secret, "fail_first": fail_first, "max_age": max_age})
        return 0

    monkeypatch.setattr("distiller_tools.local.receiver.serve", fake_serve)
    monkeypatch.delenv(SECRET_ENV, raising=False)
    return calls


def test_the_receiver_command_serves_with_the_secret_of_its_one_source(served, tmp_path, monkeypatch, capsys):
    file = tmp_path / "secret"
    file.write_text("file secret\n")

    assert main(["receiver", "--port", "0", "--secret-file", str(file), "--max-age", "1500"]) == 0
    monkeypatch.setenv(SECRET_ENV, "env secret")
    assert main(["receiver", "--port", "0", "--fail-first", "1"]) == 0
    monkeypatch.delenv(SECRET_ENV)
    assert main(["receiver", "--port", "0", "--secret", "flag secret"]) == 0

    assert served == [
        {"port": 0, "secret": "file secret", "fail_first": 0, "max_age": 1500.0},
        {"port": 0, "secret": "env secret", "fail_first": 1, "max_age": None},
        {"port": 0, "secret": "flag secret", "fail_first": 0, "max_age": None},
    ]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("argv", "env", "file_text", "expected"),
    [
        pytest.param(
            [],
            None,
            None,
            "no webhook secret: give --secret-file PATH, $DISTILLER_RECEIVER_SECRET or --secret",
            id="none",
        ),
        pytest.param(
            ["--secret", "hunter2"],
            "hunter3",
            None,
            "several webhook secrets given (--secret, $DISTILLER_RECEIVER_SECRET): give exactly one",
            id="flag-and-env",
        ),
        pytest.param(
            ["--secret", "hunter2", "--secret-file", "{file}"],
            None,
            "hunter3\n",
            "several webhook secrets given (--secret, --secret-file): give exactly one",
            id="flag-and-file",
        ),
        pytest.param(
            ["--secret-file", "{missing}"],
            None,
            None,
            "--secret-file {missing}: cannot read: No such file or directory",
            id="missing-file",
        ),
        pytest.param(
            ["--secret-file", "{file}"], None, "\n", "--secret-file {file}: the secret is empty", id="empty-file"
        ),
        pytest.param(
            ["--secret-file", "{file}"],
            None,
            b"\xffhunter2",
            "--secret-file {file}: cannot read: not UTF-8 text",
            id="binary-file",
        ),
        pytest.param(
            ["--secret-file", "{dir}"], None, None, "--secret-file {dir}: cannot read: Is a directory", id="directory"
        ),
        pytest.param([], "", None, "$DISTILLER_RECEIVER_SECRET: the secret is empty", id="empty-env"),
        pytest.param(["--secret", ""], None, None, "--secret: the secret is empty", id="empty-flag"),
    ],
)
def test_a_bad_secret_source_is_one_line_and_exit_2(
    served, tmp_path, monkeypatch, capsys, argv, env, file_text, expected
):
    paths = {"file": tmp_path / "secret", "missing": tmp_path / "nothing-here", "dir": tmp_path}
    if isinstance(file_text, bytes):
        paths["file"].write_bytes(file_text)
    elif file_text is not None:
        paths["file"].write_text(file_text)
    if env is not None:
        monkeypatch.setenv(SECRET_ENV, env)
    argv = [a.format(**paths) for a in argv]

    code = main(["receiver", "--port", "0", *argv])

    captured = capsys.readouterr()
    assert (code, captured.out, served) == (2, "", [])
    assert captured.err == f"distiller: {expected.format(**paths)}\n"
    assert "hunter" not in captured.err


# --- Content-Length, on both local servers -----------------------------------------------------


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    partners = load_partners(ROOT / "events" / "partners.json")
    server = start(0, in_memory_database(partners, {}), partners, io.StringIO())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.url
    server.shutdown()
    server.server_close()


MALFORMED_LENGTHS = [
    pytest.param([("Content-Length", "abc")], id="letters"),
    pytest.param([("Content-Length", "-5")], id="negative"),
    pytest.param([("Content-Length", "1e3")], id="exponent"),
    pytest.param([("Content-Length", "+2")], id="plus-sign"),
    pytest.param([("Content-Length", "2, 2")], id="list"),
    pytest.param([("Content-Length", "²")], id="unicode-digit"),
    pytest.param([("Content-Length", "2"), ("Content-Length", "2")], id="duplicated"),
    pytest.param([("Content-Length", "2"), ("Content-Length", "5")], id="duplicated-different"),
]


@pytest.mark.parametrize("lengths", MALFORMED_LENGTHS)
def test_a_malformed_content_length_is_400_on_the_receiver(receiver, lengths):
    server, out = receiver
    body, eid = delivery_body()

    status, data, headers = send(server.url, body, [*lengths, *spec_headers(body, eid)])

    assert (status, data) == (400, {"error": "invalid Content-Length"})
    assert headers.get("connection") == "close"
    assert out.getvalue() == "" and server.accepted == 0
    assert answer(server.url, body, spec_headers(body, eid))[0] == 200  # and the server still serves


@pytest.mark.parametrize("lengths", MALFORMED_LENGTHS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_malformed_content_length_is_400_on_the_api_server(api_url, lengths, method):
    status, data, headers = send(api_url, b"{}", lengths, path="/data/deals/acme-motors", method=method)

    assert (status, data) == (400, {"error": "invalid Content-Length"})
    assert headers.get("connection") == "close"
    assert send(api_url, b"", [], path="/data/deals/acme-motors", method="GET")[0] == 401  # still serving


def test_a_well_formed_content_length_still_works_and_too_large_is_413(receiver):
    server, _ = receiver
    body, eid = delivery_body()

    padded = answer(server.url, body, [("Content-Length", f" {len(body)} "), *spec_headers(body, eid)])
    too_large = send(server.url, b"", [("Content-Length", str(2 * 1024 * 1024)), *spec_headers(body, eid)])

    assert padded == (200, {"status": "accepted", "eventId": eid})
    assert too_large[:2] == (413, {"error": "body too large"}) and too_large[2].get("connection") == "close"
