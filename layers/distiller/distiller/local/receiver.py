"""`distiller receiver`: the partner side of a webhook, verifying signatures as the spec tells partners to.

Rejects a bad signature with 401, acknowledges a duplicate eventId without processing it
again, and prints one JSON line per accepted delivery. `--fail-first N` answers 503 to the
first N deliveries of each eventId, to watch retries happen.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO

from distiller.signing import SignatureError, verify

MAX_BODY_BYTES = 1024 * 1024
HOST = "127.0.0.1"
"""Where the local servers (`distiller receiver`, `distiller api`) listen."""


class WebhookReceiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, secret: str, out: IO[str], fail_first: int = 0, host: str = HOST) -> None:
        self.secret = secret
        self.out = out
        self.fail_first = fail_first
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


class _Handler(BaseHTTPRequestHandler):
    server: WebhookReceiver
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._answer(413, {"error": "body too large"})
            return
        raw = self.rfile.read(length)
        try:
            verify(self.server.secret, dict(self.headers.items()), raw)
        except SignatureError as exc:
            with self.server.lock:
                self.server.rejected += 1
            self._answer(401, {"error": str(exc)})
            return
        event_id = self.headers.get("X-PA-Event-Id", "")
        with self.server.lock:
            self.server.attempts[event_id] += 1
            if self.server.attempts[event_id] <= self.server.fail_first:
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
        line = {
            "eventId": event_id,
            "event": self.headers.get("X-PA-Event"),
            "partner": self.headers.get("X-PA-Partner"),
            "path": self.path,
            "attempt": self.server.attempts[event_id],
        }
        with self.server.lock:
            self.server.out.write(json.dumps(line) + "\n")
            self.server.out.flush()
        self._answer(200, {"status": "accepted", "eventId": event_id})

    def _answer(self, status: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def listen_failure(host: str, port: int, exc: OSError) -> str:
    """One line for a server that could not listen: where, and the system's reason."""
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def serve(port: int, secret: str, fail_first: int = 0, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """Run a receiver until interrupted; 2 (with one line on `err`) when the port cannot be had."""
    try:
        receiver = WebhookReceiver(port, secret, out, fail_first)
    except OSError as exc:  # the port is taken, or not ours to take
        print(f"distiller: {listen_failure(HOST, port, exc)}", file=err)
        return 2
    print(f"receiver listening on {receiver.url}", file=err, flush=True)
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.server_close()
    return 0
