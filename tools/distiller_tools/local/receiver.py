"""`distiller receiver`: the partner side of a webhook, verifying signatures as the spec tells partners to.

Rejects a bad signature with 401, acknowledges a duplicate eventId without processing it
again, and prints one JSON line per accepted delivery. `--fail-first N` answers 503 to the
first N deliveries of each eventId, to watch retries happen.

Only what the signature covers is trusted: the raw body and `X-PA-Timestamp`. The other
`X-PA-*` headers are not signed, so the receiver dedupes on the body's `eventId` and takes
the event name and partner from the body's `eventKey` (see `signed_labels`); a header that
disagrees with the signed body is refused with 400, never believed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Mapping
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from distiller.core.clock import utc_now
from distiller.deliver.signing import SignatureError, verify

MAX_BODY_BYTES = 1024 * 1024
HOST = "127.0.0.1"
"""Where the local servers (`distiller receiver`, `distiller api`) listen."""

SECRET_ENV = "DISTILLER_RECEIVER_SECRET"  # noqa: S105 - the variable's name, not a secret
"""The environment variable `distiller receiver` reads its webhook secret from (kept out of `ps`)."""

INVALID_CONTENT_LENGTH = "invalid Content-Length"
DELIVERY_HEADERS = ("X-PA-Timestamp", "X-PA-Signature", "X-PA-Event-Id", "X-PA-Event", "X-PA-Partner")
"""The spec's `X-PA-*` webhook headers; the first two are what the signature check reads."""
_DIGITS = re.compile(r"[0-9]+")


def content_length(headers: Message) -> int | None:
    """The request's body length: 0 without the header, None when it is malformed.

    Malformed: not plain ASCII digits (`abc`, `-5`, `1e3`, `5, 5`), or the header given more
    than once (two lengths for one body are how requests are smuggled). Both local servers
    answer 400 to None, and close the connection: where the body ends is unknown.
    """
    values = headers.get_all("Content-Length") or []
    if not values:
        return 0
    if len(values) > 1:
        return None
    value = values[0].strip()
    return int(value) if _DIGITS.fullmatch(value) else None


def max_age_seconds(text: str) -> float:
    """`--max-age`: a finite number of seconds above 0."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return seconds


class SecretSourceError(ValueError):
    """No webhook secret, several, or one that cannot be read; the message never holds the secret."""


def resolve_secret(secret: str | None, secret_file: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The webhook secret from exactly one of `--secret`, `--secret-file` or `$DISTILLER_RECEIVER_SECRET`.

    A file loses one trailing line ending (`echo S > file` writes one); nothing else is stripped.
    An environment variable that is set counts as given, even when empty.
    """
    environ = os.environ if environ is None else environ
    given = [
        name
        for name, present in (
            ("--secret", secret is not None),
            ("--secret-file", secret_file is not None),
            (f"${SECRET_ENV}", SECRET_ENV in environ),
        )
        if present
    ]
    if not given:
        raise SecretSourceError(f"no webhook secret: give --secret-file PATH, ${SECRET_ENV} or --secret")
    if len(given) > 1:
        raise SecretSourceError(f"several webhook secrets given ({', '.join(given)}): give exactly one")
    if secret_file is not None:
        try:
            value = Path(secret_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            raise SecretSourceError(f"--secret-file {secret_file}: cannot read: {reason}") from None
        value = value.removesuffix("\n").removesuffix("\r")
    elif secret is not None:
        value = secret
    else:
        value = environ[SECRET_ENV]
    if not value:
        where = f"--secret-file {secret_file}" if secret_file is not None else given[0]
        raise SecretSourceError(f"{where}: the secret is empty")
    return value


def signed_labels(body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(event, partner) as the signed body names them; (None, None) when it does not.

    The body carries neither name as a field of its own: both are in its `eventKey`, which the
    distiller builds as `{resumeToken}:{partnerId}:{event}:{emissionIndex}`
    (`distiller.core.identity.event_key`). The spec tells partners not to parse eventKey (its shape may
    change without notice); this reference receiver ships with the code that builds it, so it
    may. Resume tokens are hex (as Mongo writes them) and event names and the index have no `:`,
    so the partner id is everything between the first `:` and the event: it may hold a `:`.
    """
    key = body.get("eventKey")
    if not isinstance(key, str):
        return None, None
    token, _, rest = key.partition(":")
    rest, _, index = rest.rpartition(":")
    partner, _, event = rest.rpartition(":")
    if not (token and partner and event and index.isascii() and index.isdigit()):
        return None, None
    return event, partner


def timestamp_age(timestamp: str, now: dt.datetime) -> float | None:
    """Seconds from the ISO 8601 `timestamp` to `now`, or None when it is not an instant with an offset."""
    try:
        emitted = dt.datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    if emitted.tzinfo is None:
        return None
    return (now - emitted).total_seconds()


class Refused(Exception):
    """A delivery the receiver does not accept: the status and the `error` it answers."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class WebhookReceiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        port: int,
        secret: str,
        out: IO[str],
        fail_first: int = 0,
        host: str = HOST,
        max_age: float | None = None,
    ) -> None:
        self.secret = secret
        self.out = out
        self.fail_first = fail_first
        self.max_age = max_age
        """Refuse (401) a delivery whose signed X-PA-Timestamp is older than this many seconds; None: never."""
        self.seen: set[str] = set()
        self.attempts: Counter[str] = Counter()
        self.accepted = 0
        self.rejected = 0
        self.lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def now(self) -> dt.datetime:
        return utc_now()


class _Handler(BaseHTTPRequestHandler):
    server: WebhookReceiver
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = content_length(self.headers)
        if length is None:
            self._answer(400, {"error": INVALID_CONTENT_LENGTH}, close=True)
            return
        if length > MAX_BODY_BYTES:
            self._answer(413, {"error": "body too large"}, close=True)
            return
        raw = self.rfile.read(length)
        try:
            event_id, event, partner = self._checked(raw)
        except Refused as refused:
            with self.server.lock:
                self.server.rejected += 1
            self._answer(refused.status, {"error": refused.error})
            return
        with self.server.lock:
            self.server.attempts[event_id] += 1
            attempt = self.server.attempts[event_id]
            if attempt <= self.server.fail_first:
                failing = True
            else:
                failing = False
                duplicate = event_id in self.server.seen
                self.server.seen.add(event_id)
                if not duplicate:
                    self.server.accepted += 1
        if failing:
            self._answer(503, {"error": "failing on purpose (--fail-first)"})
            return
        if duplicate:
            self._answer(200, {"status": "duplicate", "eventId": event_id})
            return
        line = {"eventId": event_id, "event": event, "partner": partner, "path": self.path, "attempt": attempt}
        with self.server.lock:
            self.server.out.write(json.dumps(line) + "\n")
            self.server.out.flush()
        self._answer(200, {"status": "accepted", "eventId": event_id})

    def _checked(self, raw: bytes) -> tuple[str, str | None, str | None]:
        """(eventId, event, partner) from the signed body of a delivery to process; `Refused` says why not.

        401: the signature (or, with `--max-age`, the signed timestamp's age) fails. 400: the body is
        not a JSON object with a string eventId, or an unsigned header contradicts the signed body.
        """
        headers = self.headers
        for name in DELIVERY_HEADERS:  # one value each, or the checks and the application could read different ones
            if len(headers.get_all(name) or []) > 1:
                raise Refused(400, f"{name} header given more than once")
        try:
            verify(self.server.secret, dict(headers.items()), raw)
        except SignatureError as exc:
            raise Refused(401, str(exc)) from None
        if self.server.max_age is not None:
            age = timestamp_age(headers.get("X-PA-Timestamp", ""), self.server.now())
            if age is None:
                raise Refused(401, "X-PA-Timestamp is not an ISO 8601 instant with a time zone (--max-age)")
            if age > self.server.max_age:
                raise Refused(401, f"X-PA-Timestamp is older than --max-age ({self.server.max_age:g} s)")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise Refused(400, "body is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("eventId"), str) or not body["eventId"]:
            raise Refused(400, "body has no eventId (a non-empty string)")
        header_id = headers.get("X-PA-Event-Id")
        if header_id is not None and header_id != body["eventId"]:
            raise Refused(400, "X-PA-Event-Id header does not match the signed body's eventId")
        event, partner = signed_labels(body)
        header_event = headers.get("X-PA-Event")
        if header_event is not None and event is not None and header_event != event:
            raise Refused(400, "X-PA-Event header does not match the event of the signed body's eventKey")
        header_partner = headers.get("X-PA-Partner")
        if header_partner is not None and partner is not None and header_partner != partner:
            raise Refused(400, "X-PA-Partner header does not match the partner of the signed body's eventKey")
        return body["eventId"], event, partner

    def _answer(self, status: int, body: dict[str, str], close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:  # the request's body was not read: the next bytes on the connection are not a request
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def listen_failure(host: str, port: int, exc: OSError) -> str:
    """One line for a server that could not listen: where, and the system's reason."""
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def serve(
    port: int,
    secret: str,
    fail_first: int = 0,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
    max_age: float | None = None,
) -> int:
    """Run a receiver until interrupted; 2 (with one line on `err`) when the port cannot be had."""
    try:
        receiver = WebhookReceiver(port, secret, out, fail_first, max_age=max_age)
    except OSError as exc:  # the port is taken, or not ours to take
        print(f"distiller: {listen_failure(HOST, port, exc)}", file=err)
        return 2
    print(f"receiver listening on {receiver.url}", file=err, flush=True)
    return serve_until_interrupted(receiver)


def serve_until_interrupted(server: ThreadingHTTPServer) -> int:
    """Serve until Ctrl-C, then close the socket; 0 (the local servers' exit status)."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
