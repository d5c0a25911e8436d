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
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
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
    never trip them. Cutting the socket makes the blocked read fail at once. One shared
    `_Deadlines` thread keeps every attempt's deadline: a timer thread per attempt cost more CPU
    than the rest of the attempt's own work.
    """

    def __init__(self, seconds: float, deadlines: _Deadlines | None = None) -> None:
        self.seconds = seconds
        self.connection: HTTPConnection | None = None
        self.fired = False
        self.done = False
        """Set (under the deadlines' lock) once the attempt finished: the watchdog may no longer fire."""
        self._deadlines = deadlines or _DEADLINES

    def __enter__(self) -> _Watchdog:
        _active.watch = self
        self._deadlines.arm(self, time.monotonic() + self.seconds)
        return self

    def finish(self) -> bool:
        """Disarm before the connection goes back to the pool (another attempt may take it at once);
        whether the deadline had already fired."""
        return self._deadlines.disarm(self)

    def __exit__(self, *exc: object) -> None:
        self.finish()
        _active.watch = None

    def fire(self) -> None:
        sock = getattr(self.connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Deadlines:
    """One daemon thread that fires the watchdogs whose deadline passed, earliest first.

    A finished attempt is only marked `done`; its entry leaves the heap when it reaches the top,
    so arming and disarming stay O(log n) and O(1) without searching the heap.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """Start empty, thread not started (also in a forked child, which has no copy of the thread)."""
        self._changed = threading.Condition()
        self._heap: list[tuple[float, int, _Watchdog]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, watch: _Watchdog, deadline: float) -> None:
        with self._changed:
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            if self._thread is None or not self._thread.is_alive():
                # Kept only once started: a failed start (or a thread that died) is retried on the next arm.
                thread = threading.Thread(target=self._run, name="sender-deadlines", daemon=True)
                thread.start()
                self._thread = thread
            if self._heap[0][2] is watch:  # a new earliest deadline: the thread must wake sooner
                self._changed.notify()

    def disarm(self, watch: _Watchdog) -> bool:
        """The attempt is over: its socket is never touched again. Whether the deadline fired first."""
        with self._changed:
            watch.done = True
            return watch.fired

    def _run(self) -> None:
        with self._changed:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                wait = self._heap[0][0] - time.monotonic() if self._heap else None
                if wait is None or wait > 0:
                    self._changed.wait(wait)
                    continue
                _, _, watch = heapq.heappop(self._heap)
                # Under the lock, so once `disarm` returned the socket is never touched again.
                watch.fired = watch.done = True
                try:
                    watch.fire()
                except Exception:  # never let one watchdog end the thread that keeps every deadline
                    logger.exception("cutting a late webhook attempt failed")


_DEADLINES = _Deadlines()
os.register_at_fork(after_in_child=_DEADLINES._reset)


class WebhookSender:
    def __init__(
        self,
        *,
        timeout_seconds: float = 10.0,
        allow_private: bool = False,
        per_host_connections: int = 10,
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
                result = self._exchange(pool, endpoint, headers, body, deadline, watchdog)
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
        watchdog: _Watchdog,
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

        excerpt = _read_excerpt(response, deadline, watchdog.finish)
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


def _read_excerpt(response: urllib3.BaseHTTPResponse, deadline: float, finish: Callable[[], bool]) -> str | None:
    """Read at most EXCERPT_BYTES of the body, stopping at the deadline; keep the connection if clean.

    `finish` disarms the attempt's watchdog before the connection is released: once released, the
    pool may hand it to another attempt, whose socket a late deadline must never cut.
    """
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
    if finish() or not complete:  # cut by the deadline, or an unread or broken body:
        response.close()  # this connection must not carry the next delivery
    response.release_conn()  # always give the slot back (a closed connection reconnects on next use)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return text or None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason).split(": ", 1)[-1] if isinstance(reason, BaseException) else str(reason)
