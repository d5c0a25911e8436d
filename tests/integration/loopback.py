"""A scripted HTTP server on 127.0.0.1 for tests that need a real partner endpoint.

Each request is answered by the next `Reply` of the script (then by `default`): a status, a
body, extra headers (e.g. `Location`), an optional delay, or a hang until a `threading.Event`
is set. Every request is recorded on arrival, before the reply: method, path, headers exactly
as sent (name case and order kept) and the raw body bytes.

Delays and hangs also end when the server stops, so a test that fails mid-way never blocks
the teardown.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (cut short when the server stops)."""
    hang_until: threading.Event | None = None
    """Answer only once this event is set (or the server stops)."""
    trickle_every: float = 0.0
    """Send the response (status line, headers, body) a few bytes at a time, this many seconds apart."""
    trickle_bytes: int = 4
    reset_mid_response: bool = False
    """Write the status line and part of the headers, then reset the connection (TCP RST)."""


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    header_items: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        """Header names lower-cased (HTTP names are case-insensitive)."""
        return {name.lower(): value for name, value in self.header_items}

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class LoopbackServer:
    def __init__(self, replies: Iterable[Reply] = (), default: Reply | None = None) -> None:
        self._script = list(replies)
        self.default = default or Reply()
        self._received: list[Received] = []
        self._answered = 0
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"loopback-{self.port}", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for reply in [*self._script, self.default]:
            if reply.hang_until is not None:
                reply.hang_until.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def then(self, *replies: Reply) -> LoopbackServer:
        """Script more replies (e.g. one that needs the server's own URL)."""
        with self._changed:
            self._script.extend(replies)
        return self

    # -- what the tests look at -------------------------------------------------------------

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def received(self) -> list[Received]:
        with self._changed:
            return list(self._received)

    def received_at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    @property
    def answered(self) -> int:
        """Requests whose reply has been written (or attempted: the client may have gone)."""
        with self._changed:
            return self._answered

    def wait_for(self, count: int, timeout: float = 15.0) -> bool:
        """Wait until at least `count` requests arrived; False if they did not within `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._received) >= count, timeout=timeout)

    # -- request handling -------------------------------------------------------------------

    def _arrived(self, request: Received) -> Reply:
        with self._changed:
            self._received.append(request)
            reply = self._script.pop(0) if self._script else self.default
            self._changed.notify_all()
        return reply

    def _done(self) -> None:
        with self._changed:
            self._answered += 1
            self._changed.notify_all()

    def _wait(self, reply: Reply) -> None:
        if reply.delay:
            self._stopping.wait(reply.delay)
        if reply.hang_until is not None:
            deadline = time.monotonic() + 300
            while not reply.hang_until.wait(0.05):
                if self._stopping.is_set() or time.monotonic() > deadline:
                    break


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up mid-request (a timeout test) is expected, not a server fault


def _handler_for(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real partner server

        def do_POST(self) -> None:
            self._serve()

        def do_GET(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Received(self.command, self.path, tuple(self.headers.items()), body)
            reply = server._arrived(request)
            server._wait(reply)
            try:
                if reply.reset_mid_response:
                    self._reset(reply)
                elif reply.trickle_every:
                    self._trickle(reply)
                else:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                    self.wfile.flush()
            except OSError:
                self.close_connection = True  # the client gave up (timeout): nothing to answer
            finally:
                server._done()

        def _reset(self, reply: Reply) -> None:
            self.wfile.write(f"HTTP/1.1 {reply.status} OK\r\nContent-Le".encode("latin-1"))
            self.wfile.flush()
            # SO_LINGER 0: close() sends RST instead of FIN, as a crashing partner proxy does.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _trickle(self, reply: Reply) -> None:
            head = [f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}"]
            head += [f"{name}: {value}" for name, value in reply.headers.items()]
            head += ["Content-Type: application/json", f"Content-Length: {len(reply.body)}"]
            raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body
            for start in range(0, len(raw), reply.trickle_bytes):
                self.wfile.write(raw[start : start + reply.trickle_bytes])
                self.wfile.flush()
                if server._stopping.wait(reply.trickle_every):
                    self.close_connection = True
                    return

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def loopback(replies: Iterable[Reply] = (), default: Reply | None = None) -> Iterator[LoopbackServer]:
    server = LoopbackServer(replies, default).start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
