"""POSTing one webhook: SSRF-checked, pinned to the checked address, no redirects, 10 s budget.

Connections are pooled per (address, host) and kept alive across deliveries and warm
invocations; each host has at most `per_host_connections` slots, so a burst to one partner never
takes every connection and a slow partner cannot starve the others.

The budget is per HTTP attempt (connect + send + response) and starts once the attempt holds a
slot: a delivery queued behind a slow partner's other deliveries is never cut off, or its 200
discarded, for time it spent waiting. Waiting is bounded instead by `start_by`, the caller's
last moment to begin (the invocation must still have a whole budget left); past it the
attempt is not made at all and says so (`deferred`), so the caller can put it back unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import certifi
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from distiller.deliver.ssrf import (
    EndpointRefused,
    EndpointUnresolved,
    ResolvedEndpoint,
    Resolver,
    resolve_endpoint,
    system_resolver,
)

logger = logging.getLogger(__name__)

USER_AGENT = "PrivateAuto-Webhooks/1.0"
EXCERPT_BYTES = 4096
"""Response bytes read for the delivery log's excerpt; the rest of a large body is not read."""


@dataclass(frozen=True, slots=True)
class SendResult:
    delivered: bool
    status_code: int | None = None
    body_excerpt: str | None = None
    error: str | None = None
    refused: bool = False
    """The endpoint may not be called at all (SSRF, scheme, unencodable host or header): final."""
    deferred: bool = False
    """Not attempted: no slot for this host freed up before `start_by`. Nothing was sent."""


_active = threading.local()


class _Watched:
    """Records the connection a request runs on, so a watchdog can cut it at the deadline."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(_active, "watch", None)
        if watch is not None:
            watch.connection = self
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _Watchdog:
    """Shuts the request's socket down when the total budget runs out.

    urllib3's timeouts bound each socket operation; a partner dribbling a byte at a time would
    never trip them. Cutting the socket makes the blocked read fail at once.
    """

    def __init__(self, seconds: float) -> None:
        self.connection: HTTPConnection | None = None
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        _active.watch = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _active.watch = None

    def _fire(self) -> None:
        self.fired = True
        sock = getattr(self.connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class WebhookSender:
    def __init__(
        self,
        *,
        timeout_seconds: float = 10.0,
        allow_private: bool = False,
        per_host_connections: int = 4,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.allow_private = allow_private
        self.per_host_connections = per_host_connections
        self._resolver = resolver
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._slots: dict[tuple[str, str, int, str], threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def post(self, url: str, headers: dict[str, str], body: bytes, *, start_by: float | None = None) -> SendResult:
        """One attempt. `start_by` (a `time.monotonic()` instant) bounds the wait for a slot."""
        try:
            endpoint = resolve_endpoint(url, allow_private=self.allow_private, resolver=self._resolver)
        except EndpointUnresolved as exc:
            return SendResult(False, error=f"DNS resolution failed: {exc}")
        except EndpointRefused as exc:
            if exc.address is not None:
                # The operator's side only: the error below goes to the partner-visible delivery log,
                # which names the class of address a host name resolves to, never the address.
                logger.warning(
                    "webhook endpoint refused: host %r resolved to %s (%s)", exc.host, exc.address, exc.detail
                )
            return SendResult(False, error=f"endpoint refused: {exc}", refused=True)
        problem = header_problem(headers)
        if problem is not None:
            return SendResult(False, error=f"request refused: {problem}", refused=True)
        pool, slots = self._pool(endpoint)
        wait = None if start_by is None else max(0.0, start_by - time.monotonic())
        if not slots.acquire(timeout=wait):
            return SendResult(False, error="not started: every connection to this host stayed busy", deferred=True)
        try:
            deadline = time.monotonic() + self.timeout_seconds
            with _Watchdog(self.timeout_seconds) as watchdog:
                result = self._exchange(pool, endpoint, headers, body, deadline)
        finally:
            slots.release()
        if watchdog.fired:  # whatever was read, the answer was not complete within the budget
            return SendResult(False, error=f"timeout: no complete response within {self.timeout_seconds:g}s")
        return result

    def _exchange(
        self,
        pool: urllib3.HTTPConnectionPool,
        endpoint: ResolvedEndpoint,
        headers: dict[str, str],
        body: bytes,
        deadline: float,
    ) -> SendResult:
        try:
            response = pool.urlopen(
                "POST",
                endpoint.path,
                body=body,
                headers={**headers, "Host": endpoint.host_header},
                redirect=False,
                retries=False,
                assert_same_host=False,
                timeout=urllib3.Timeout(total=self.timeout_seconds),
                preload_content=False,
                release_conn=False,
            )
        except NewConnectionError as exc:  # before ConnectTimeoutError: urllib3 makes it a subclass
            return SendResult(False, error=f"connection error: {_reason(exc)}")
        except (ConnectTimeoutError, ReadTimeoutError, TimeoutError):
            return SendResult(False, error=f"timeout: no response within {self.timeout_seconds:g}s")
        except SSLError as exc:
            return SendResult(False, error=f"TLS error: {_reason(exc)}")
        except (ProtocolError, HTTPError, OSError) as exc:
            return SendResult(False, error=f"connection error: {_reason(exc)}")

        excerpt = _read_excerpt(response, deadline)
        status = response.status
        if 200 <= status < 300:
            return SendResult(True, status, excerpt)
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            return SendResult(False, status, excerpt, f"redirect not followed (HTTP {status} to {location!r})")
        return SendResult(False, status, excerpt, f"HTTP {status}")

    def _pool(self, endpoint: ResolvedEndpoint) -> tuple[urllib3.HTTPConnectionPool, threading.BoundedSemaphore]:
        key = (endpoint.scheme, endpoint.address, endpoint.port, endpoint.host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                self._slots[key] = threading.BoundedSemaphore(self.per_host_connections)
                common = {"maxsize": self.per_host_connections, "block": True, "retries": False}
                if endpoint.scheme == "https":
                    pool = urllib3.HTTPSConnectionPool(
                        endpoint.address,
                        endpoint.port,
                        server_hostname=endpoint.host,
                        assert_hostname=endpoint.host,
                        cert_reqs="CERT_REQUIRED",
                        ca_certs=certifi.where(),
                        **common,
                    )
                    pool.ConnectionCls = _WatchedHTTPSConnection
                else:
                    pool = urllib3.HTTPConnectionPool(endpoint.address, endpoint.port, **common)
                    pool.ConnectionCls = _WatchedHTTPConnection
                self._pools[key] = pool
            return pool, self._slots[key]

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
            self._slots.clear()


def header_problem(headers: dict[str, str]) -> str | None:
    """Why these header values cannot go on the wire (not Latin-1, or a line break), or None."""
    for name, value in headers.items():
        if any(ch in value for ch in "\r\n\0"):
            return f"header {name}: value contains a line break or NUL"
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return f"header {name}: value {value!r} is not Latin-1"
    return None


def _read_excerpt(response: urllib3.BaseHTTPResponse, deadline: float) -> str | None:
    """Read at most EXCERPT_BYTES of the body, stopping at the deadline; keep the connection if clean."""
    chunks: list[bytes] = []
    read = 0
    complete = False
    try:
        while read < EXCERPT_BYTES and time.monotonic() < deadline:
            chunk = response.read(min(1024, EXCERPT_BYTES - read))
            if not chunk:
                complete = True
                break
            chunks.append(chunk)
            read += len(chunk)
    except (HTTPError, OSError):
        complete = False
    if not complete:
        response.close()  # unread or broken body: this connection must not carry the next delivery
    response.release_conn()  # always give the slot back (a closed connection reconnects on next use)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return text or None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason).split(": ", 1)[-1] if isinstance(reason, BaseException) else str(reason)
