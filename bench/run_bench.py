"""`make bench`: `distiller run` end to end, against a partner receiver that answers at once.

The input is `bench.distill_bench.Generator`'s production-like change stream (default 2,000
change events, 20 partners); every partner's webhook URL points at one ThreadingHTTPServer on
127.0.0.1 (HTTP/1.1 keep-alive, Nagle off) that reads the request and answers 200. The whole
`LocalPipeline` runs as `distiller run --allow-private-endpoints` runs it: the embedded AWS
endpoint (moto), the ingest, delivery and retry queues, the real handlers, real HTTP. Timed from
putting the input on the ingest queue to every queue empty (the embedded endpoint's start-up is
not counted, as `distiller run`'s summary does not count it).

Printed, never asserted: timings vary between machines and with whatever else is running. A run
whose deliveries did not all reach the receiver is reported and makes the exit status 1.

    .venv/bin/python -m bench.run_bench [--events N] [--seed S] [--json PATH] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.distill_bench import DEFAULT_SEED, Generator
from distiller_tools.local.pipeline import LocalPipeline, RunReport
from distiller_tools.world import in_memory_database

TARGET_PER_SECOND = 100.0
DEFAULT_EVENTS = 2_000
SECRET = "run-bench-secret"  # noqa: S105 - a local receiver's made-up secret
RESPONSE_BODY = b'{"received":true}'

# mongomock's own use of datetime.utcnow; the same filter as pyproject's pytest settings.
warnings.filterwarnings("ignore", "datetime.datetime.utcnow", DeprecationWarning)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # a burst of new connections must not wait on the listen backlog

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up at the end of a run is not a server fault


class FastReceiver:
    """Every partner's endpoint: answers 200 as soon as it has read the request; counts what it got."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.posts = 0
        self.event_ids: set[str] = set()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="run-bench-receiver", daemon=True)
        self._thread.start()

    def got(self, partner_path: str, event_id: str) -> None:
        with self._lock:
            self.posts += 1
            self.event_ids.add(f"{partner_path}:{event_id}")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler_for(receiver: FastReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real partner server
        disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stalls

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            receiver.got(self.path, self.headers.get("X-PA-Event-Id") or "")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(RESPONSE_BODY)))
            self.end_headers()
            self.wfile.write(RESPONSE_BODY)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@dataclass(frozen=True)
class Result:
    events: int
    lines: int
    deliveries: int
    attempts: int
    seconds: float
    received: int
    report: RunReport

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def run_once(events: int, seed: int, profiler: cProfile.Profile | None = None) -> Result:
    """Generate the stream, point its partners at a fast receiver, and time one `LocalPipeline.run`."""
    stream = Generator(seed).stream(events)
    receiver = FastReceiver()
    partners = [
        {**p, "webhook": {**p["webhook"], "url": f"{receiver.url}/{p['partnerId']}", "secret": SECRET}}
        for p in stream.partners
    ]
    handler_log = io.StringIO()
    pipeline = LocalPipeline(
        in_memory_database(partners, stream.world),
        partners,
        retry_delays="1,1,1",
        allow_private_endpoints=True,
        log_stream=handler_log,
        progress=None,
    )
    try:
        if profiler is not None:
            profiler.enable()
        started = time.perf_counter()
        report = pipeline.run(line for _, line in stream.lines)
        seconds = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
    finally:
        pipeline.close()
        receiver.stop()
    logged = handler_log.getvalue().splitlines()
    if logged:  # the generated world lacks some linked documents: the Distiller warns, as it should
        print(f"(the handlers logged {len(logged)} line(s); the first: {logged[0][:200]})", file=sys.stderr)
    return Result(
        events=stream.events,
        lines=report.input_lines,
        deliveries=sum(1 for a in report.attempts if a["status"] == "delivered"),
        attempts=len(report.attempts),
        seconds=seconds,
        received=receiver.posts,
        report=report,
    )


def write_json(path: Path, result: Result) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = {
        "bench": "run",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "events": result.events,
        "lines": result.lines,
        "deliveries": result.deliveries,
        "attempts": result.attempts,
        "seconds": round(result.seconds, 3),
        "per_second": round(result.per_second, 1),
        "events_per_second": round(result.events_per_second, 1),
        "target_per_second": TARGET_PER_SECOND,
    }
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help=f"change events ({DEFAULT_EVENTS})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as one JSON object")
    parser.add_argument("--profile", action="store_true", help="cProfile the run and print the top functions")
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be positive")

    profiler = cProfile.Profile() if args.profile else None
    result = run_once(args.events, args.seed, profiler)
    verdict = "met" if result.per_second >= TARGET_PER_SECOND else "NOT met"
    print(f"distiller run end to end: {result.events} change events ({result.lines} input lines), fast receiver")
    print(f"  deliveries     {result.deliveries} ({result.attempts} attempts logged, {result.received} POSTs received)")
    print(f"  seconds        {result.seconds:.2f}")
    print(f"  deliveries/s   {result.per_second:.1f}  (target >= {TARGET_PER_SECOND:.0f}: {verdict})")
    print(f"  events/s       {result.events_per_second:.1f}")
    if args.json is not None:
        write_json(args.json, result)
    if profiler is not None:
        print("\n=== cProfile of the run (main thread): top 25 by cumulative time ===")
        pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats("cumulative").print_stats(25)
    complete = result.received == result.deliveries == result.attempts
    if not complete:
        print("  INCOMPLETE: not every delivery was delivered exactly once", file=sys.stderr)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
