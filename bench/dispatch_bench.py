"""`make bench`: dispatch throughput against local partner receivers that answer after a fixed latency.

The receivers are ThreadingHTTPServers on 127.0.0.1 in a child process (one port per partner
endpoint, HTTP/1.1 keep-alive, Content-Length set, Nagle off) that read the request, sleep
`--latency-ms`, then answer 200 with a small JSON body. They run in their own process, as a
partner's server does: their CPU is not the dispatcher's, and they never hold its GIL. Nothing
leaves 127.0.0.1.

Measured in the same run, against the same receivers:

* sequential: the baseline the issue names, a plain `requests.post` per delivery (no Session,
  so a new connection each), signed with the dispatcher's own headers; no log, no queues;
  `--sequential` deliveries (it is compared by rate);
* the deployed defaults, THE row the verdict is about: the Dispatcher function's flow
  (`handle_deliveries`) fed SQS records in batches of the template's BatchSize, one batch after
  another on one warm instance, with `DispatcherSettings`' defaults (workers, connections per
  host), every attempt's log line formatted as in Lambda (powertools JSON, to /dev/null) and the
  metrics flushed per invocation;
* the same defaults in one `dispatch_all` call (no batch boundary: what the batch tail costs);
* the previous defaults (16 workers, 4 per host, batches of 20), for comparison;
* one slow partner: the defaults in one call, one of the five partners answering after
  `--slow-ms`; the four others' rate is compared with their rate when no partner is slow.

The delivery log is an indexed in-memory store behind the `DeliveryLog` port: dict lookups, as
the production indexes answer them, each entry BSON-encoded (what pymongo pays) and each call
delayed by `--log-rtt-ms` (a round trip to the database). mongomock is not used here: its lookups
scan every stored entry, so its cost grew with the run and dominated it.

Each configuration is one warm dispatcher (its worker threads and connection pools persist, as
across warm invocations), warmed up first; the runs alternate, best of `--repeat`, each run on
fresh eventIds. Printed, never asserted. A run whose deliveries did not all arrive is reported
and makes the exit status 1. `--json PATH` writes the figures as one JSON object.

    .venv/bin/python -m bench.dispatch_bench [--deliveries N] [--sequential N] [--latency-ms MS]
        [--slow-ms MS] [--log-rtt-ms MS] [--repeat R] [--receivers K] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import platform
import secrets as token_source
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import bson
import requests
import yaml
from aws_lambda_powertools import Logger

from distiller.adapters.queues import OutgoingMessage
from distiller.core.partners import Partner
from distiller.deliver.dispatch import Dispatcher, webhook_headers
from distiller.deliver.handler import handle_deliveries
from distiller.deliver.log import AttemptKey, ClaimHeld, DeliveryAttempt
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.sender import SendResult, WebhookSender
from distiller.observability import configure_logging, metrics
from distiller.observability import logger as service_logger
from distiller.runtime import DispatcherRuntime
from distiller.settings import DispatcherSettings

TARGET_RATIO = 25.0
TARGET_PER_SECOND = 500.0
DEFAULT_DELIVERIES = 1000
DEFAULT_SEQUENTIAL = 200
DEFAULT_LATENCY_MS = 50.0
DEFAULT_SLOW_MS = 500.0
DEFAULT_LOG_RTT_MS = 1.0
DEFAULT_RECEIVERS = 5
PREVIOUS = (16, 4, 20)
"""The defaults before issue 14: workers, connections per host, BatchSize."""
FUNCTION_TIMEOUT_SECONDS = 90
EMITTED_AT = "2026-04-21T13:00:00.000Z"
RESPONSE_BODY = b'{"received":true}'
DIRECT: dict[str, str | None] = {"http": None, "https": None}
"""requests' proxies: never an HTTP(S)_PROXY from the environment, the receivers are on 127.0.0.1."""
ROOT = Path(__file__).resolve().parents[1]

warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)  # a batch that just flushed


# --------------------------------------------------------------------------------------------
# What a deployed stack uses.
# --------------------------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation short tags (`!Ref`, `!GetAtt`, ...) read as plain values."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


@dataclass(frozen=True)
class Deployed:
    workers: int
    per_host: int
    batch_size: int


def deployed() -> Deployed:
    """`DispatcherSettings`' defaults and the Dispatcher's SQS BatchSize in template.yaml."""
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)  # noqa: S506  # a SafeLoader
    events = template["Resources"]["DispatcherFunction"]["Properties"]["Events"]
    sizes = {e["Properties"]["BatchSize"] for e in events.values() if e["Type"] == "SQS"}
    if len(sizes) != 1:
        raise SystemExit(f"template.yaml: the Dispatcher's SQS sources disagree on BatchSize: {sorted(sizes)}")
    fields = DispatcherSettings.model_fields
    return Deployed(fields["concurrency"].default, fields["per_host_connections"].default, sizes.pop())


# --------------------------------------------------------------------------------------------
# The receivers: one port per partner endpoint, in a child process.
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # a burst of new connections must not wait on the listen backlog

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up (connection closed at the end of a run) is not a server fault


class Receiver:
    """A partner endpoint on 127.0.0.1 that answers every request after `latency` seconds."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.lock = threading.Lock()
        self.requests = 0
        self.connections = 0
        self.in_flight = 0
        self.peak = 0
        self.server = _Server(("127.0.0.1", 0), _handler_for(self))
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name=f"receiver-{self.port}", daemon=True).start()

    def stats(self) -> tuple[int, int, int]:
        with self.lock:
            return self.requests, self.connections, self.peak

    def reset_peak(self) -> None:
        with self.lock:
            self.peak = self.in_flight


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real partner server
        disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stalls

        def setup(self) -> None:
            super().setup()
            with receiver.lock:
                receiver.connections += 1

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            with receiver.lock:
                receiver.requests += 1
                receiver.in_flight += 1
                receiver.peak = max(receiver.peak, receiver.in_flight)
            try:
                time.sleep(receiver.latency)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(RESPONSE_BODY)))
                self.end_headers()
                self.wfile.write(RESPONSE_BODY)
                self.wfile.flush()
            except OSError:
                self.close_connection = True
            finally:
                with receiver.lock:
                    receiver.in_flight -= 1

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def _serve(latencies: list[float], commands: Connection) -> None:
    """The child process: start the receivers, send their ports, then answer commands until `stop`."""
    receivers = [Receiver(latency) for latency in latencies]
    commands.send([r.port for r in receivers])
    while (command := commands.recv()) != "stop":
        if command == "reset":
            for r in receivers:
                r.reset_peak()
            commands.send(None)
        else:
            commands.send([r.stats() for r in receivers])
    for r in receivers:
        r.server.shutdown()
        r.server.server_close()


class Receivers:
    """The partner endpoints, served by a child process; counters are read over a pipe."""

    def __init__(self, latencies: Sequence[float]) -> None:
        context = multiprocessing.get_context("spawn")
        self._commands, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(list(latencies), child), daemon=True)
        self._process.start()
        self.ports: list[int] = self._commands.recv()

    def url(self, index: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[index]}{path}"

    def stats(self) -> list[tuple[int, int, int]]:
        """(requests, connections, peak in flight) per receiver."""
        self._commands.send("stats")
        return self._commands.recv()

    def reset_peaks(self) -> None:
        self._commands.send("reset")
        self._commands.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._commands.send("stop")
        self._process.join(timeout=10)


# --------------------------------------------------------------------------------------------
# The dispatcher's collaborators, in memory.
# --------------------------------------------------------------------------------------------


class MemorySecrets:
    def __init__(self, partner_ids: Sequence[str]) -> None:
        self._secrets = {p: f"whsec_bench_{p}" for p in partner_ids}

    def webhook_secret(self, partner_id: str) -> str:
        return self._secrets[partner_id]


class MemoryQueue:
    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []
        self._lock = threading.Lock()

    def send(self, messages: Sequence[OutgoingMessage]) -> list[int]:
        with self._lock:
            self.sent.extend(messages)
        return []

    def park(self, body: object, reason: str, message_id: str) -> bool:
        self.sent.append(OutgoingMessage(json.dumps({"body": body, "reason": reason})))
        return True


class IndexedDeliveryLog:
    """The `DeliveryLog` port as an indexed database answers it: one dict lookup per question,
    each entry BSON-encoded as pymongo would, each call `round_trip` seconds long."""

    def __init__(self, round_trip: float) -> None:
        self.round_trip = round_trip
        self.delivered = 0
        self.encoded_bytes = 0
        self._lock = threading.Lock()
        self._delivered: dict[tuple[str, str, int], int] = {}
        self._failed: set[tuple[str, str, int, int]] = set()
        self._claims: dict[AttemptKey, tuple[str, float]] = {}

    def _trip(self) -> None:
        if self.round_trip:
            time.sleep(self.round_trip)

    def claim(self, key: AttemptKey, lease_seconds: float) -> ClaimHeld | str:
        self._trip()
        now, token = time.monotonic(), token_source.token_hex(8)
        with self._lock:
            held = self._claims.get(key)
            if held is not None and held[1] > now:
                return ClaimHeld(f"attempt {key.attempt} is being made by another invocation", int(held[1] - now) + 1)
            self._claims[key] = (token, now + lease_seconds)
        return token

    def release(self, key: AttemptKey, token: str) -> None:
        self._trip()
        with self._lock:
            if self._claims.get(key, ("",))[0] == token:
                del self._claims[key]

    def record(self, attempt: DeliveryAttempt) -> None:
        encoded = bson.encode(attempt.to_document())
        self._trip()
        with self._lock:
            self.encoded_bytes += len(encoded)
            if attempt.status == "delivered":
                self.delivered += 1
                self._delivered.setdefault((attempt.partner_id, attempt.event_id, attempt.redrive), attempt.attempt)
            elif attempt.status == "failed":
                self._failed.add((attempt.partner_id, attempt.event_id, attempt.redrive, attempt.attempt))

    def already_processed(self, partner_id: str, event_id: str, attempt: int, redrive: int = 0) -> str | None:
        self._trip()
        with self._lock:
            delivered = self._delivered.get((partner_id, event_id, redrive))
            made = (partner_id, event_id, redrive, attempt) in self._failed
        if delivered is not None:
            return f"already delivered (attempt {delivered})"
        return f"attempt {attempt} was already made (redelivered message)" if made else None


class StampedSender:
    """The real sender; notes when each partner's last POST of the run finished."""

    def __init__(self, inner: WebhookSender) -> None:
        self.inner = inner
        self.per_host_connections = inner.per_host_connections
        self.finished: dict[str, float] = {}

    def post(self, url: str, headers: dict[str, str], body: bytes, *, start_by: float | None = None) -> SendResult:
        result = self.inner.post(url, headers, body, start_by=start_by)
        self.finished[headers["X-PA-Partner"]] = time.perf_counter()
        return result


class FakeContext:
    """What `handle_deliveries` reads of a LambdaContext: a fresh invocation's time left."""

    function_name = "trigger-distiller-bench-dispatcher"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-2:000000000000:function:trigger-distiller-bench-dispatcher"
    aws_request_id = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return FUNCTION_TIMEOUT_SECONDS * 1000


_run_ids = itertools.count(1)


def make_messages(count: int, partner_ids: Sequence[str]) -> list[DeliveryMessage]:
    """Deliveries as the distiller queues them, round-robin over the partners, eventIds new each call."""
    run = next(_run_ids)
    messages = []
    for n in range(count):
        partner_id = partner_ids[n % len(partner_ids)]
        event = ("deal.completed", "offer.created", "listing.sold")[n % 3]
        key = f"8269E7A1{run:04X}{n:08X}|{partner_id}|{event}|0"
        event_id = hashlib.sha256(key.encode()).hexdigest()
        payload = {
            "event": event,
            "eventId": event_id,
            "eventKey": key,
            "entityType": event.split(".", 1)[0],
            "timestamp": EMITTED_AT,
            "data": {
                "dealId": f"deal-{n}",
                "status": "completed",
                "amount": 18500 + n,
                "vehicle": {"year": 2021, "make": "Toyota", "model": "RAV4", "trim": "XLE"},
                "buyer": {"id": f"user-{n}", "firstName": "Maria", "lastName": "Garcia"},
            },
        }
        messages.append(
            DeliveryMessage(
                partner_id=partner_id,
                event=event,
                event_id=event_id,
                event_key=key,
                payload=payload,
                emitted_at=EMITTED_AT,
            )
        )
    return messages


def sqs_event(messages: Sequence[DeliveryMessage]) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping hands the function for these messages."""
    return {
        "Records": [
            {
                "messageId": f"bench-{m.event_id[:32]}",
                "receiptHandle": f"handle-{m.event_id[:16]}",
                "body": m.to_body(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-2:000000000000:trigger-distiller-bench-delivery",
                "awsRegion": "us-east-2",
            }
            for m in messages
        ]
    }


# --------------------------------------------------------------------------------------------
# The measured paths.
# --------------------------------------------------------------------------------------------


@dataclass
class Pass:
    deliveries: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    delivered: int = 0
    failed: int = 0
    first_error: str = ""
    received: int = 0
    """Requests the receivers answered during the run."""
    connections: int = 0
    """New TCP connections the receivers accepted during the run."""
    peak_per_host: int = 0
    """Most requests one receiver had in progress at once."""
    fast_finished_at: float | None = None
    """Slow-partner row: `perf_counter()` when the last POST to a partner that is not slow ended."""
    fast_seconds: float | None = None
    """The same, from the start of the run."""

    @property
    def per_second(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0


@dataclass
class Config:
    label: str
    workers: int = 1
    per_host: int = 0
    batch: int = 0
    """Messages per invocation (0: the whole run in one `dispatch_all` call)."""
    handler: bool = False
    """Fed through `handle_deliveries` as SQS events (else `dispatch_all` directly)."""
    partners: list[Partner] = field(default_factory=list)
    slow_partner: str | None = None
    dispatcher: Dispatcher | None = None
    sender: StampedSender | None = None
    log: IndexedDeliveryLog | None = None
    queues: tuple[MemoryQueue, MemoryQueue] = field(default_factory=lambda: (MemoryQueue(), MemoryQueue()))
    runs: list[Pass] = field(default_factory=list)

    @property
    def best(self) -> Pass:
        return min(self.runs, key=lambda p: p.seconds)

    def build(self, secrets: MemorySecrets, round_trip: float) -> None:
        """One warm dispatcher instance for every run of this configuration."""
        self.sender = StampedSender(WebhookSender(allow_private=True, per_host_connections=self.per_host))
        self.log = IndexedDeliveryLog(round_trip)
        self.dispatcher = Dispatcher(
            partners=lambda: self.partners,
            secrets=secrets,
            sender=self.sender,
            log=self.log,
            retry_queue=self.queues[0],
            dead_letter_queue=self.queues[1],
            max_workers=self.workers,
            per_partner=self.per_host,
        )

    def close(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.close()
        if self.sender is not None:
            self.sender.inner.close()


def sequential_pass(messages: Sequence[DeliveryMessage], urls: dict[str, str], secrets: MemorySecrets) -> Pass:
    """The issue's baseline: one plain `requests.post` after another, same body and headers."""
    result = Pass()
    for message in messages:
        body = message.raw_body()
        headers = webhook_headers(message, secrets.webhook_secret(message.partner_id), body)
        try:
            response = requests.post(
                urls[message.partner_id], data=body, headers=headers, timeout=10, allow_redirects=False, proxies=DIRECT
            )
        except requests.RequestException as exc:
            result.failed += 1
            result.first_error = result.first_error or str(exc)
            continue
        if 200 <= response.status_code < 300:
            result.delivered += 1
        else:
            result.failed += 1
            result.first_error = result.first_error or f"HTTP {response.status_code}"
    return result


def dispatch_pass(config: Config, messages: Sequence[DeliveryMessage], start: Callable[[], None]) -> Pass:
    """The configuration's warm dispatcher over `messages`; `start` marks the end of the set-up."""
    assert config.dispatcher is not None and config.log is not None and config.sender is not None
    batch = config.batch or len(messages)
    batches = [messages[offset : offset + batch] for offset in range(0, len(messages), batch)]
    events = [sqs_event(b) for b in batches] if config.handler else []
    runtime = DispatcherRuntime(config.dispatcher, config.queues[1])  # type: ignore[arg-type]  # .park only
    logged_before, sent_before = config.log.delivered, sum(len(q.sent) for q in config.queues)
    unfinished: list[object] = []
    config.sender.finished.clear()
    start()
    for number, chunk in enumerate(batches):
        if config.handler:  # EMF metrics go to stdout (at 100 values, and @metrics.log_metrics' flush): not here
            with contextlib.redirect_stdout(io.StringIO()):
                answer = handle_deliveries(events[number], FakeContext(), runtime)  # type: ignore[arg-type]
                metrics.flush_metrics()
            unfinished.extend(answer["batchItemFailures"])
        else:
            unfinished.extend(o for o in config.dispatcher.dispatch_all(chunk) if o != "delivered")
    result = Pass(deliveries=len(messages))
    result.delivered = config.log.delivered - logged_before
    result.failed = len(messages) - result.delivered
    if config.slow_partner is not None:
        result.fast_finished_at = max(t for p, t in config.sender.finished.items() if p != config.slow_partner)
    queued = sum(len(q.sent) for q in config.queues) - sent_before
    if result.failed or unfinished or queued:
        result.first_error = f"{len(unfinished)} unfinished (first {unfinished[:1]!r}); {queued} queued or parked"
    return result


def timed(receivers: Receivers, run: Callable[[Callable[[], None]], Pass]) -> Pass:
    """Run once; the clocks start when `run` calls its argument, receiver counters are per run."""
    gc.collect()
    before = receivers.stats()
    started = cpu_started = 0.0

    def start() -> None:
        nonlocal started, cpu_started
        receivers.reset_peaks()
        cpu_started = time.process_time()
        started = time.perf_counter()

    result = run(start)
    ended, cpu_ended = time.perf_counter(), time.process_time()
    result.seconds, result.cpu_seconds = ended - started, cpu_ended - cpu_started
    if result.fast_finished_at is not None:
        result.fast_seconds = result.fast_finished_at - started
    after = receivers.stats()
    result.received = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    result.connections = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    result.peak_per_host = max(a[2] for a in after)
    return result


# --------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------


def ceiling(config: Config, hosts: int, latency: float) -> float | None:
    """Deliveries/s if every request took exactly `latency` and the concurrency bounds were always full."""
    if latency <= 0 or config.slow_partner is not None:
        return None  # no latency to hide, or not one latency: no simple bound
    if not config.per_host:
        return 1 / latency
    return min(config.workers, config.batch or config.workers, hosts * config.per_host) / latency


@dataclass
class Figures:
    """What the report prints and `--json` writes."""

    rows: list[dict[str, Any]]
    lines: list[str]
    ok: bool


def report(
    configs: list[Config], receivers: int, latency: float, slow: float, repeat: int, round_trip: float
) -> Figures:
    sequential, main, one_call, *_, slow_row = configs
    base_rate = sequential.best.per_second
    lines = [
        f"trigger-distiller dispatch bench: {main.best.deliveries:,} deliveries per dispatcher run "
        f"({sequential.best.deliveries:,} sequential), round-robin over {receivers} partner endpoints, "
        f"best of {repeat} after a warm-up",
        f"  receivers:  {receivers} ThreadingHTTPServers on 127.0.0.1 in a child process, each response after "
        f"{latency * 1000:g} ms (the slow row: one at {slow * 1000:g} ms), HTTP/1.1 keep-alive, "
        f"{len(RESPONSE_BODY)}-byte body",
        "  sequential: plain requests.post per delivery (a new connection each), same signed headers; "
        "no delivery log, no queues",
        "  dispatcher: one warm Dispatcher per row + WebhookSender(allow_private=True); delivery log indexed in "
        f"memory (BSON-encoded entries, {round_trip * 1000:g} ms per call), in-memory queues and secrets; "
        f"'handler' rows go through handle_deliveries with SQS events and powertools JSON logs; "
        f"ceiling = min(workers, batch, {receivers} hosts x per-host) / latency",
        "",
    ]
    width = max(len(c.label) for c in configs)
    lines.append(
        f"  {'':<{width}} {'deliv.':>6} {'time (s)':>9} {'deliv./s':>9} {'ratio':>7} {'ceiling/s':>9} "
        f"{'of ceil.':>8} {'cpu us/d':>8} {'peak/host':>9} {'conns':>5}   [runs]"
    )
    ok = True
    rows = []
    for config in configs:
        best = config.best
        ratio = best.per_second / base_rate if base_rate else 0.0
        top = ceiling(config, receivers, latency)
        bound = f"{top:>9.0f} {best.per_second / top:>8.0%}" if top else f"{'-':>9} {'-':>8}"
        cpu = sum(p.cpu_seconds for p in config.runs) / sum(p.deliveries for p in config.runs) * 1e6
        spread = " ".join(f"{p.seconds:.3f}" for p in config.runs)
        lines.append(
            f"  {config.label:<{width}} {best.delivered:>6} {best.seconds:>9.3f} {best.per_second:>9.1f} "
            f"{ratio:>6.1f}x {bound} {cpu:>8.0f} {best.peak_per_host:>9} {best.connections:>5}   [{spread}]"
        )
        rows.append(
            {
                "label": config.label,
                "deliveries": best.deliveries,
                "seconds": round(best.seconds, 4),
                "per_second": round(best.per_second, 1),
                "ratio": round(ratio, 2),
                "workers": config.workers if config.per_host else None,
                "per_host": config.per_host or None,
                "batch": config.batch or None,
                "cpu_us_per_delivery": round(cpu, 1),
            }
        )
        for run in config.runs:
            if run.failed or run.delivered != run.deliveries or run.received != run.deliveries or run.first_error:
                ok = False
                print(
                    f"  !! {config.label}: {run.delivered} delivered, {run.failed} failed, "
                    f"{run.received} received: {run.first_error}",
                    file=sys.stderr,
                )
    lines.append("")
    fast_partners = receivers - 1
    fast = slow_row.best
    fast_count = fast.deliveries * fast_partners // receivers
    fast_rate = fast_count / fast.fast_seconds if fast.fast_seconds else 0.0
    unslowed = one_call.best.per_second * fast_partners / receivers
    rows[-1]["fast_partners_per_second"] = round(fast_rate, 1)
    rows[-1]["fast_partners_unslowed_per_second"] = round(unslowed, 1)
    lines.append(
        f"slow partner: with one of {receivers} partners at {slow * 1000:g} ms, the other {fast_partners} got their "
        f"{fast_count} deliveries in {fast.fast_seconds or 0:.3f} s = {fast_rate:.0f}/s; with no slow partner "
        f"they get {unslowed:.0f}/s ({fast_partners}/{receivers} of the one-call row): "
        f"{fast_rate / unslowed if unslowed else 0:.0%}"
    )
    rate, ratio = main.best.per_second, main.best.per_second / base_rate
    met = rate >= TARGET_PER_SECOND and ratio >= TARGET_RATIO
    lines.append(
        f"verdict: {'meets both targets' if met else 'below target'} (the deployed defaults, "
        f"{main.workers} workers, {main.per_host}/host, batches of {main.batch}: {rate:.0f} deliveries/s, target "
        f">= {TARGET_PER_SECOND:g}/s; {ratio:.1f}x the sequential loop, target >= {TARGET_RATIO:g}x)"
    )
    return Figures(rows, lines, ok)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.dispatch_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=DEFAULT_DELIVERIES, help="per dispatcher run (1000)")
    parser.add_argument("--sequential", type=int, default=DEFAULT_SEQUENTIAL, help="sequential deliveries (200)")
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS, help="receiver latency in ms (50)")
    parser.add_argument("--slow-ms", type=float, default=DEFAULT_SLOW_MS, help="the slow partner's latency (500)")
    parser.add_argument("--log-rtt-ms", type=float, default=DEFAULT_LOG_RTT_MS, help="per delivery-log call (1)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per configuration; the best counts (2)")
    parser.add_argument("--receivers", type=int, default=DEFAULT_RECEIVERS, help="partner endpoints / ports (5)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file as one JSON object")
    args = parser.parse_args(argv)
    # As deployed (template.yaml's Globals): the handler's metrics, per-partner ones included, are
    # serialised in every timed batch (and discarded), so their cost is in the figures.
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "TriggerDistillerBench")
    metrics.namespace = metrics.provider.namespace = os.environ["POWERTOOLS_METRICS_NAMESPACE"]
    if min(args.deliveries, args.sequential, args.repeat) < 1 or args.receivers < 2:
        parser.error("--deliveries, --sequential and --repeat must be positive, --receivers at least 2")
    if min(args.latency_ms, args.slow_ms, args.log_rtt_ms) < 0:
        parser.error("latencies cannot be negative")

    started = time.perf_counter()
    latency, slow, round_trip = args.latency_ms / 1000, args.slow_ms / 1000, args.log_rtt_ms / 1000
    # Each attempt's log line formatted as in Lambda (configure_logging there), written nowhere.
    sink = open(os.devnull, "w")  # noqa: SIM115  # closed below
    configure_logging(Logger(service="trigger-distiller-bench", logger_handler=logging.StreamHandler(sink)))
    service_logger.logger_handler.setStream(sink)  # type: ignore[attr-defined]  # the handler's batch line
    metrics.namespace = "TriggerDistillerBench"
    stack = deployed()
    receivers = Receivers([latency] * args.receivers + [slow])
    configs: list[Config] = []
    try:
        partner_ids = [f"bench-partner-{k + 1}" for k in range(args.receivers)]
        slow_id = "bench-partner-slow"
        urls = {p: receivers.url(k, f"/hooks/{p}") for k, p in enumerate([*partner_ids, slow_id])}
        partners = [Partner(partner_id=p, webhook_url=urls[p]) for p in partner_ids]
        with_slow = [*partners[:-1], Partner(partner_id=slow_id, webhook_url=urls[slow_id])]
        secrets = MemorySecrets([*partner_ids, slow_id])
        w, h, b = stack.workers, stack.per_host, stack.batch_size
        configs = [
            Config("sequential requests.post"),
            Config(f"deployed defaults: handler, batches of {b}, {w} workers, {h}/host", w, h, b, True, partners),
            Config(f"dispatch_all {w} workers, {h}/host, one call", w, h, partners=partners),
            Config(
                "previous defaults: handler, batches of {2}, {0} workers, {1}/host".format(*PREVIOUS),
                *PREVIOUS,
                handler=True,
                partners=partners,
            ),
            Config(
                f"dispatch_all {w} workers, {h}/host, one call, 1 partner at {args.slow_ms:g} ms",
                w,
                h,
                partners=with_slow,
                slow_partner=slow_id,
            ),
        ]
        for config in configs[1:]:
            config.build(secrets, round_trip)
        slow_deliveries = max(args.receivers, args.deliveries // 2)

        def run_sequential(start: Callable[[], None]) -> Pass:
            messages = make_messages(args.sequential, partner_ids)
            start()
            result = sequential_pass(messages, urls, secrets)
            result.deliveries = len(messages)
            return result

        def run_dispatch(config: Config, count: int) -> Callable[[Callable[[], None]], Pass]:
            ids = [p.partner_id for p in config.partners]
            return lambda start: dispatch_pass(config, make_messages(count, ids), start)

        # Warm-up: a few sequential posts; every dispatcher opens its pools and starts its threads.
        sequential_pass(make_messages(10, partner_ids), urls, secrets)
        for config in configs[1:]:
            run_dispatch(config, 2 * len(config.partners) * config.per_host)(lambda: None)

        for _ in range(args.repeat):
            configs[0].runs.append(timed(receivers, run_sequential))
            for config in configs[1:]:
                count = slow_deliveries if config.slow_partner else args.deliveries
                config.runs.append(timed(receivers, run_dispatch(config, count)))

        figures = report(configs, args.receivers, latency, slow, args.repeat, round_trip)
    finally:
        for config in configs:
            config.close()
        receivers.stop()
        sink.close()
    print("\n".join(figures.lines))
    if args.json is not None:
        main_row = configs[1]
        cpu = sum(p.cpu_seconds for p in main_row.runs) / sum(p.deliveries for p in main_row.runs)
        figures_json = {
            "bench": "dispatch",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "latency_ms": args.latency_ms,
            "slow_ms": args.slow_ms,
            "log_rtt_ms": args.log_rtt_ms,
            "receivers": args.receivers,
            "repeat": args.repeat,
            "sequential_per_second": round(configs[0].best.per_second, 2),
            "default_per_second": round(main_row.best.per_second, 1),
            "default_ratio": round(main_row.best.per_second / configs[0].best.per_second, 2),
            "default_workers": stack.workers,
            "default_per_host": stack.per_host,
            "batch_size": stack.batch_size,
            "cpu_seconds_per_delivery": round(cpu, 6),
            "target_per_second": TARGET_PER_SECOND,
            "target_ratio": TARGET_RATIO,
            "rows": figures.rows,
            "ok": figures.ok,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures_json, indent=2) + "\n")
    print(f"(total {time.perf_counter() - started:.1f}s)", file=sys.stderr)
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())
