"""`make bench`: dispatch throughput against local partner receivers that answer after a fixed latency.

The receivers are `--receivers` ThreadingHTTPServers on 127.0.0.1 (one port per partner
endpoint, HTTP/1.1 keep-alive, Content-Length set, Nagle off) that read the request, sleep
`--latency-ms`, then answer 200 with a small JSON body. Nothing leaves 127.0.0.1.

Measured on the same deliveries, in the same process, against the same receivers:

* sequential: the baseline the issue names, a plain `requests.post` per delivery (no Session,
  so a new connection each time), signed with the dispatcher's own headers; no log, no queues;
* dispatch_all: the real `Dispatcher` with `WebhookSender(allow_private=True)`, a
  `MongoDeliveryLog` over mongomock (a fresh collection per run, with the production indexes),
  in-memory retry/dead-letter queues and in-memory secrets; once with the defaults (16 workers,
  4 connections per host), once with 32 workers / 8 per host, and once with the defaults fed
  in SQS batches of 20 (the template's BatchSize: one warm Lambda instance, batch after batch).

Each configuration is warmed up first (the dispatcher's connection pools stay open across
runs, as they do across warm invocations), then the runs alternate, best of `--repeat`.
Printed, never asserted: timings vary between machines and with whatever else is running.
A run whose deliveries did not all arrive is reported and makes the exit status 1.

    .venv/bin/python -m bench.dispatch_bench [--deliveries N] [--latency-ms MS] [--repeat R] [--receivers K]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mongomock
import requests

from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.adapters.queues import OutgoingMessage
from distiller.core.partners import Partner
from distiller.deliver.dispatch import Dispatcher, webhook_headers
from distiller.deliver.log import DELIVERIES_COLLECTION
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.sender import WebhookSender

TARGET_RATIO = 10.0
DEFAULT_DELIVERIES = 200
DEFAULT_LATENCY_MS = 50.0
DEFAULT_RECEIVERS = 5
SQS_BATCH_SIZE = 20  # template.yaml: the Dispatcher's BatchSize
"""The Dispatcher function's SQS event-source BatchSize in template.yaml."""
EMITTED_AT = "2026-04-21T13:00:00.000Z"
RESPONSE_BODY = b'{"received":true}'
DIRECT: dict[str, str | None] = {"http": None, "https": None}
"""requests' proxies: never an HTTP(S)_PROXY from the environment, the receivers are on 127.0.0.1."""

# mongomock's own use of datetime.utcnow; the same filter as pyproject's pytest settings.
warnings.filterwarnings("ignore", "datetime.datetime.utcnow", DeprecationWarning)


# --------------------------------------------------------------------------------------------
# The receivers: one port per partner endpoint.
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # a burst of new connections must not wait on the listen backlog

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up (connection closed at the end of a run) is not a server fault


class Receiver:
    """A partner endpoint on 127.0.0.1 that answers every request after `latency` seconds."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self._lock = threading.Lock()
        self.requests = 0
        self.connections = 0
        self.in_flight = 0
        self.peak = 0
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"receiver-{self.port}", daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.in_flight

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _connected(self) -> None:
        with self._lock:
            self.connections += 1

    def _begin(self) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def _end(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real partner server
        disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stalls

        def setup(self) -> None:
            super().setup()
            receiver._connected()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            receiver._begin()
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
                receiver._end()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


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


def make_messages(count: int, partner_ids: Sequence[str]) -> list[DeliveryMessage]:
    """Deliveries as the distiller queues them, round-robin over the partners, all eventIds distinct."""
    messages = []
    for n in range(count):
        partner_id = partner_ids[n % len(partner_ids)]
        event = ("deal.completed", "offer.created", "listing.sold")[n % 3]
        key = f"8269E7A1{n:08X}|{partner_id}|{event}|0"
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


# --------------------------------------------------------------------------------------------
# The measured paths.
# --------------------------------------------------------------------------------------------


@dataclass
class Pass:
    seconds: float = 0.0
    delivered: int = 0
    failed: int = 0
    first_error: str = ""
    received: int = 0
    """Requests the receivers answered during the run."""
    connections: int = 0
    """New TCP connections the receivers accepted during the run."""
    peak_per_host: int = 0
    """Most requests one receiver had in progress at once."""


@dataclass
class Config:
    label: str
    workers: int = 1
    per_host: int = 0
    batch: int = 0
    """Messages per `dispatch_all` call (0: the whole run in one call)."""
    sender: WebhookSender | None = None
    runs: list[Pass] = field(default_factory=list)

    @property
    def best(self) -> Pass:
        return min(self.runs, key=lambda p: p.seconds)


def sequential_pass(messages: Sequence[DeliveryMessage], urls: dict[str, str], secrets: MemorySecrets) -> Pass:
    """The issue's baseline: one plain `requests.post` after another, same body and headers."""
    result = Pass()
    for message in messages:
        body = message.raw_body()
        headers = webhook_headers(message, secrets.webhook_secret(message.partner_id), body)
        try:
            response = requests.post(
                urls[message.partner_id],
                data=body,
                headers=headers,
                timeout=10,
                allow_redirects=False,
                proxies=DIRECT,
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


def dispatch_pass(
    messages: Sequence[DeliveryMessage],
    partners: list[Partner],
    secrets: MemorySecrets,
    config: Config,
    start: Callable[[], None],
) -> Pass:
    """The real Dispatcher over a fresh mongomock delivery log; `start` marks the end of the set-up."""
    collection = mongomock.MongoClient(tz_aware=True)["privateauto"][DELIVERIES_COLLECTION]
    log = MongoDeliveryLog(collection)
    log.ensure_indexes(retention_days=30)
    retries, dead_letters = MemoryQueue(), MemoryQueue()
    assert config.sender is not None
    dispatcher = Dispatcher(
        partners=lambda: partners,
        secrets=secrets,
        sender=config.sender,
        log=log,
        retry_queue=retries,
        dead_letter_queue=dead_letters,
        max_workers=config.workers,
    )
    batch = config.batch or len(messages)
    outcomes: list[object] = []
    start()
    for offset in range(0, len(messages), batch):
        outcomes.extend(dispatcher.dispatch_all(messages[offset : offset + batch]))
    result = Pass()
    result.delivered = sum(1 for o in outcomes if o == "delivered")
    result.failed = len(outcomes) - result.delivered
    logged = collection.count_documents({"status": "delivered"})
    if result.failed or logged != result.delivered or retries.sent or dead_letters.sent:
        other = next((o for o in outcomes if o != "delivered"), None)
        result.first_error = (
            f"outcome {other!r}; {logged} delivered in the log; "
            f"{len(retries.sent)} retries, {len(dead_letters.sent)} dead letters"
        )
    return result


def timed(receivers: Sequence[Receiver], run: Callable[[Callable[[], None]], Pass]) -> Pass:
    """Run once; the clock starts when `run` calls its argument, receiver counters are per run."""
    gc.collect()
    before_requests = sum(r.requests for r in receivers)
    before_connections = sum(r.connections for r in receivers)
    started = 0.0

    def start() -> None:
        nonlocal started
        for r in receivers:
            r.reset_peak()
        started = time.perf_counter()

    result = run(start)
    result.seconds = time.perf_counter() - started
    result.received = sum(r.requests for r in receivers) - before_requests
    result.connections = sum(r.connections for r in receivers) - before_connections
    result.peak_per_host = max(r.peak for r in receivers)
    return result


# --------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------


def ceiling(config: Config, deliveries: int, hosts: int, latency: float) -> float | None:
    """Deliveries/s if every request took exactly `latency` and the concurrency bounds were always full."""
    if latency <= 0:
        return None  # no latency to hide: the run measures the dispatcher's own cost
    if not config.per_host:
        return 1 / latency
    batch = min(config.batch or deliveries, deliveries)
    concurrent = min(config.workers, batch, hosts * config.per_host)
    return concurrent / latency


def report(configs: list[Config], deliveries: int, receivers: Sequence[Receiver], latency: float, repeat: int) -> bool:
    sequential, dispatchers = configs[0], configs[1:]
    base = sequential.best
    hosts = len(receivers)
    print(
        f"trigger-distiller dispatch bench: {deliveries:,} deliveries, round-robin over {hosts} partner endpoints, "
        f"best of {repeat} after a warm-up"
    )
    print(
        f"  receivers:  {hosts} ThreadingHTTPServers on 127.0.0.1 (ports "
        f"{', '.join(str(r.port) for r in receivers)}), each response after {latency * 1000:g} ms, "
        f"HTTP/1.1 keep-alive, {len(RESPONSE_BODY)}-byte body"
    )
    print(
        "  sequential: plain requests.post per delivery (a new connection each), same signed headers; "
        "no delivery log, no queues"
    )
    print(
        "  dispatcher: Dispatcher.dispatch_all + WebhookSender(allow_private=True), MongoDeliveryLog over "
        "mongomock (fresh per run), in-memory queues and secrets; ceiling = min(workers, batch, "
        f"{hosts} hosts x per-host) / latency"
    )
    print()
    width = max(len(c.label) for c in configs)
    header = (
        f"  {'':<{width}} {'deliv.':>6} {'time (s)':>9} {'deliv./s':>9} {'ratio':>7} {'ceiling/s':>9} "
        f"{'of ceil.':>8} {'peak/host':>9} {'conns':>5}   [runs]"
    )
    print(header)
    ok = True
    for config in configs:
        best = config.best
        rate = best.delivered / best.seconds if best.seconds else 0.0
        ratio = base.seconds / best.seconds if best.seconds else 0.0
        top = ceiling(config, deliveries, hosts, latency)
        bound = f"{top:>9.0f} {rate / top:>8.0%}" if top else f"{'-':>9} {'-':>8}"
        spread = " ".join(f"{p.seconds:.3f}" for p in config.runs)
        print(
            f"  {config.label:<{width}} {best.delivered:>6} {best.seconds:>9.3f} {rate:>9.1f} {ratio:>6.1f}x "
            f"{bound} {best.peak_per_host:>9} {best.connections:>5}   [{spread}]"
        )
        for run in config.runs:
            if run.failed or run.delivered != deliveries or run.received != deliveries:
                ok = False
                print(
                    f"  !! {config.label}: {run.delivered} delivered, {run.failed} failed, "
                    f"{run.received} received: {run.first_error}",
                    file=sys.stderr,
                )
    print()
    main = dispatchers[0]
    ratio = base.seconds / main.best.seconds
    verdict = "meets the 10x target" if ratio >= TARGET_RATIO else "below the 10x target"
    others = "; ".join(
        f"{c.label.removeprefix('dispatch_all ')}: {base.seconds / c.best.seconds:.1f}x" for c in dispatchers[1:]
    )
    print(
        f"verdict: {verdict} (dispatch_all with the defaults is {ratio:.1f}x the sequential loop, "
        f"target >= {TARGET_RATIO:g}x; {others})"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.dispatch_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=DEFAULT_DELIVERIES, help="deliveries per run (200)")
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS, help="receiver latency in ms (50)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per configuration; the best counts (2)")
    parser.add_argument("--receivers", type=int, default=DEFAULT_RECEIVERS, help="partner endpoints / ports (5)")
    args = parser.parse_args(argv)
    if args.deliveries < 1 or args.repeat < 1 or args.receivers < 1 or args.latency_ms < 0:
        parser.error("--deliveries, --repeat and --receivers must be positive, --latency-ms not negative")

    started = time.perf_counter()
    latency = args.latency_ms / 1000
    receivers: list[Receiver] = []
    configs: list[Config] = []
    try:
        receivers = [Receiver(latency) for _ in range(args.receivers)]
        partner_ids = [f"bench-partner-{k + 1}" for k in range(args.receivers)]
        urls = {p: r.url(f"/hooks/{p}") for p, r in zip(partner_ids, receivers, strict=True)}
        partners = [Partner(partner_id=p, webhook_url=urls[p]) for p in partner_ids]
        secrets = MemorySecrets(partner_ids)
        messages = make_messages(args.deliveries, partner_ids)

        configs = [
            Config("sequential requests.post"),
            Config("dispatch_all 16 workers, 4/host", 16, 4),
            Config("dispatch_all 32 workers, 8/host", 32, 8),
            Config(f"dispatch_all 16 workers, 4/host, batches of {SQS_BATCH_SIZE}", 16, 4, SQS_BATCH_SIZE),
        ]
        for config in configs[1:]:
            config.sender = WebhookSender(allow_private=True, per_host_connections=config.per_host)

        def run_sequential(msgs: Sequence[DeliveryMessage]) -> Callable[[Callable[[], None]], Pass]:
            def run(start: Callable[[], None]) -> Pass:
                start()
                return sequential_pass(msgs, urls, secrets)

            return run

        def run_dispatch(config: Config, msgs: Sequence[DeliveryMessage]) -> Callable[[Callable[[], None]], Pass]:
            return lambda start: dispatch_pass(msgs, partners, secrets, config, start)

        # Warm-up: a few sequential posts; every dispatcher opens its pools to every receiver.
        run_sequential(messages[: min(len(messages), 10)])(lambda: None)
        for config in configs[1:]:
            warm = messages[: min(len(messages), 2 * args.receivers * config.per_host)]
            run_dispatch(config, warm)(lambda: None)

        for _ in range(args.repeat):
            configs[0].runs.append(timed(receivers, run_sequential(messages)))
            for config in configs[1:]:
                config.runs.append(timed(receivers, run_dispatch(config, messages)))

        ok = report(configs, args.deliveries, receivers, latency, args.repeat)
    finally:
        for config in configs:
            if config.sender is not None:
                config.sender.close()
        for receiver in receivers:
            receiver.stop()
    print(f"(total {time.perf_counter() - started:.1f}s)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
