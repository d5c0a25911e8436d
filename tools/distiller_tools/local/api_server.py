"""`distiller api`: the partner API on 127.0.0.1, through the same Lambda handler, for demos and tests.

Each HTTP request becomes an API Gateway (REST, proxy) event for `functions/api/app.py`; the
database is in-memory (PARTNERS.json, WORLD.json and a `distiller run --log` file of deliveries);
partners authenticate with the `sharedSecret` of their record. Replays are printed to stderr as
the delivery messages that would be queued. With a change feed, the API's writes become change
events (`--changes`), and with delivery they go through the same local pipeline as `distiller
run` to the partners' webhook URLs (`--deliver`), as a change stream would carry them deployed.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from bson import ObjectId
from pymongo.database import Database

from distiller.api.routes import ApiLimits
from distiller.core.clock import parse_instant
from distiller.deliver.log import DELIVERIES_COLLECTION
from distiller.relay.stream import serialise
from distiller_tools.local.change_feed import ChangeFeed
from distiller_tools.local.pipeline import LocalContext, RunReport, failure_lines, load_handler_module
from distiller_tools.local.receiver import HOST, INVALID_CONTENT_LENGTH, content_length

if TYPE_CHECKING:
    from distiller_tools.local.pipeline import LocalPipeline

DOCUMENTS_BUCKET = "trigger-distiller-documents"


class PrintedQueue:
    """The replay queue of a local API: each message is written as one JSON line."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def send(self, messages: Any) -> list[int]:
        with self._lock:
            for message in messages:
                self.sent.append(message.body)
                self.out.write(f"replay queued: {message.body}\n")
                self.out.flush()
        return []


def load_deliveries(database: Database, path: Path) -> int:
    """Load `distiller run --log` lines into the delivery log collection."""
    documents = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            entry["_id"] = ObjectId(entry.pop("id")) if ObjectId.is_valid(entry.get("id", "")) else ObjectId()
            entry["attemptedAt"] = parse_instant(str(entry["attemptedAt"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a delivery-log line: {exc}") from exc
        documents.append(entry)
    if documents:
        database[DELIVERIES_COLLECTION].insert_many(documents)
    return len(documents)


class PrintedMailer:
    """The DealNow link emails of a local API: each is written out instead of sent through SES."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.sent: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def send(self, to: str, subject: str, text: str) -> None:
        with self._lock:
            self.sent.append((to, subject, text))
            self.out.write(f"email to {to}: {subject}\n{text}\n")
            self.out.flush()


def build_runtime(
    database: Database,
    partners: list[dict[str, Any]],
    replay_out: IO[str],
    limits: ApiLimits | None = None,
    *,
    allow_private_endpoints: bool = False,
) -> Any:
    """The API's runtime over the in-memory `database`, composed as deployed (`distiller.runtime`):
    the same write services and indexes, the lead allowance counted in the database; replays and
    link emails are printed to `replay_out`. `$DEALNOW_DOMAIN`, `$APP_DOMAIN` and `$LEADS_RATE_LIMIT`
    apply as they do deployed."""
    import os

    import boto3
    from botocore.config import Config

    from distiller.adapters.file_links import FileLinks
    from distiller.adapters.lookups import MongoLookups
    from distiller.adapters.rate_limits import MongoRateLimiter
    from distiller.api.auth import AuthSettings, StaticSharedSecrets
    from distiller.api.data import PartnerData
    from distiller.api.rate_limit import RATE_LIMITS_COLLECTION, InMemoryRateLimiter
    from distiller.api.routes import ApiRuntime
    from distiller.runtime import lead_services, sell_services
    from distiller.settings import ApiSettings

    s3 = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local").client(  # noqa: S106
        "s3", region_name="us-east-2", config=Config(signature_version="s3v4")
    )
    file_links = FileLinks(s3, DOCUMENTS_BUCKET)
    shared = {p["partnerId"]: p["sharedSecret"] for p in partners if isinstance(p.get("sharedSecret"), str)}
    overrides = ("DEALNOW_DOMAIN", "APP_DOMAIN", "LEADS_RATE_LIMIT")
    settings = ApiSettings.from_env(
        {
            **{name: os.environ[name] for name in overrides if os.environ.get(name)},
            "DELIVERY_QUEUE_URL": "printed",
            "DOCUMENTS_BUCKET": DOCUMENTS_BUCKET,
            "ALLOW_PRIVATE_ENDPOINTS": "true" if allow_private_endpoints else "false",
        }
    )
    # Leads are counted in the database, as deployed: the allowance is the database's, not a process's.
    lead_limiter = MongoRateLimiter(database[RATE_LIMITS_COLLECTION])
    lead_limiter.ensure_indexes()
    return ApiRuntime(
        data=PartnerData(database, file_links),
        partners=MongoLookups(database).partners,
        secrets=StaticSharedSecrets(shared),
        auth=AuthSettings(),
        replay_queue=PrintedQueue(replay_out),
        file_links=file_links,
        limiter=InMemoryRateLimiter(),
        limits=limits or ApiLimits(),
        sell=sell_services(database, settings, PrintedMailer(replay_out)),
        leads=lead_services(database, settings, lead_limiter),
    )


def api_gateway_event(method: str, raw_path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """An API Gateway REST proxy event, as the Lambda integration delivers it."""
    parts = urlsplit(raw_path)
    query = parse_qs(parts.query, keep_blank_values=True)
    return {
        "resource": "/{proxy+}",
        "path": parts.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": parts.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": parts.path,
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body.decode("utf-8", errors="replace") if body else None,
        "isBase64Encoded": False,
    }


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """`distiller api --deliver`: what the local pipeline the API's writes go through is run with."""

    retry_delays: str = "60,300,900"
    allow_private_endpoints: bool = False
    log: Path | None = None
    """Append one JSON line per delivery attempt here, as `distiller run --log` writes them."""


class DeliveryWorker:
    """Puts the API's change events through a `LocalPipeline` on a thread of its own.

    `LocalPipeline.run` drains its queues before it returns, so the changes that arrive meanwhile
    wait and go together into the next run: in the order they were written, each once.
    """

    def __init__(
        self, pipeline: LocalPipeline, database: Database, settings: DeliverySettings, report: IO[str]
    ) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.report = report
        self._lines: list[str] = []
        self._pending = 0
        self._closing = False
        self._condition = threading.Condition()
        # Attempts already in the log (`--deliveries`, earlier runs) are not this run's to report.
        self._reported = {str(d["_id"]) for d in database[DELIVERIES_COLLECTION].find({}, {"_id": 1})}
        self._thread = threading.Thread(target=self._work, name="distiller-api-deliver", daemon=True)
        self._thread.start()

    def put(self, change: Mapping[str, Any]) -> None:
        """`ChangeFeed` listener: queue the change as the relay would send it to the ingest queue."""
        line = serialise(change)
        with self._condition:
            self._lines.append(line)
            self._pending += 1
            self._condition.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every change queued so far has been through the pipeline; False on timeout."""
        with self._condition:
            return self._condition.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 5.0) -> int:
        """Stop the worker and the pipeline (its endpoint, its environment); how many changes were not
        put through. A run waiting for a retry is not waited for beyond `timeout`."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join(timeout)
        self.pipeline.close()
        with self._condition:
            return self._pending

    def _work(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: bool(self._lines) or self._closing)
                if self._closing:
                    return
                batch, self._lines = self._lines, []
            try:
                self._deliver(batch)
            except Exception as exc:  # the pipeline's own failure (or its endpoint stopped under it)
                if not self._closing:
                    print(f"distiller api: delivering {len(batch)} change(s) failed: {exc}", file=self.report)
            finally:
                with self._condition:
                    self._pending -= len(batch)
                    self._condition.notify_all()

    def _deliver(self, lines: list[str]) -> None:
        report = self.pipeline.run(lines)
        dead_letters = self.pipeline.dead_letters()
        attempts = [a for a in report.attempts if a["id"] not in self._reported]
        self._reported.update(a["id"] for a in attempts)
        if self.settings.log is not None:
            with open(self.settings.log, "a", encoding="utf-8") as handle:
                for attempt in attempts:
                    handle.write(json.dumps(attempt, default=str) + "\n")
        out = self.report
        print(f"distiller api: {len(lines)} change(s) through the local pipeline", file=out)
        print(RunReport(attempts=attempts).table(), file=out)
        for line in failure_lines(report.parked, dead_letters):
            print(line, file=out)
        out.flush()


class ChangeLines:
    """`ChangeFeed` listener for `--changes`: one relay-shaped JSON line per change, flushed at once."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, change: Mapping[str, Any]) -> None:
        self.out.write(serialise(change) + "\n")
        self.out.flush()


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, handler_module: Any) -> None:
        self.handler_module = handler_module
        self.handler_lock = threading.Lock()
        self.feed: ChangeFeed | None = None
        """The database's change feed: set when the API's writes are turned into change events."""
        self.delivery: DeliveryWorker | None = None
        """Where those events go through the local pipeline: set with `--deliver`."""
        super().__init__((HOST, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def server_close(self) -> None:
        """Close the socket, then the feed and the delivery pipeline (once, whoever calls)."""
        super().server_close()
        feed, self.feed = self.feed, None
        if feed is not None:
            feed.close()
        delivery, self.delivery = self.delivery, None
        if delivery is not None:
            undelivered = delivery.close()
            if undelivered:
                print(f"distiller api: stopped with {undelivered} change(s) not delivered", file=delivery.report)


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"

    def _invoke(self) -> None:
        length = content_length(self.headers)
        if length is None:  # where the body ends is unknown: answer, and close the connection
            data = json.dumps({"error": INVALID_CONTENT_LENGTH}).encode("utf-8")
            self.close_connection = True
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        body = self.rfile.read(length) if length else b""
        event = api_gateway_event(self.command, self.path, dict(self.headers.items()), body)
        try:
            # powertools' resolver keeps the current request in shared state: Lambda runs one request
            # per container at a time, and so does this server.
            with self.server.handler_lock:
                result = self.server.handler_module.handler(event, LocalContext("trigger-distiller-api"))
        except Exception as exc:  # the handler must never get here; answer like API Gateway would
            result = {"statusCode": 502, "body": json.dumps({"error": f"handler failed: {type(exc).__name__}"})}
        finally:
            feed = self.server.feed
            if feed is not None:  # writes are published as they happen; this catches any that bypassed the hooks
                feed.capture()
        data = (result.get("body") or "").encode("utf-8")
        self.send_response(int(result.get("statusCode", 502)))
        headers = {k: v[-1] for k, v in (result.get("multiValueHeaders") or {}).items() if v}
        headers.update(result.get("headers") or {})
        for name, value in headers.items():
            if name.lower() not in ("content-length", "connection"):
                self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def __getattr__(self, name: str) -> Any:
        # Every method goes to the handler, as API Gateway's ANY route does; it answers what it
        # does not serve (http.server would answer 501 for a method it has no do_ for).
        if name.startswith("do_"):
            return self._invoke
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:
        pass


def start(
    port: int,
    database: Database,
    partners: list[dict[str, Any]],
    replay_out: IO[str] = sys.stderr,
    limits: ApiLimits | None = None,
    *,
    changes_out: IO[str] | None = None,
    delivery: DeliverySettings | None = None,
    report_out: IO[str] = sys.stderr,
    allow_private_endpoints: bool = False,
) -> ApiServer:
    """The API server, listening on HOST:`port`; `OSError` when that port cannot be had.
    Partners are rate-limited as deployed (`limits`, default `ApiLimits()`), in memory.
    `allow_private_endpoints`: GET /sell may redirect to http:// (a local page).

    `changes_out`: every change the API's writes make goes there as one relay-shaped line.
    `delivery`: those changes go through a `LocalPipeline` over `database` to the partners' webhook
    URLs; its report (and the handlers' logs) go to `report_out`. `server_close()` stops both.
    """
    module = load_handler_module("api")
    # Built before a delivery pipeline points boto3 at its embedded endpoint: the API's S3 client
    # signs links for AWS, as deployed, whether or not the writes are delivered.
    module._runtime = build_runtime(
        database, partners, replay_out, limits, allow_private_endpoints=allow_private_endpoints
    )
    server = ApiServer(port, module)
    if changes_out is None and delivery is None:
        return server
    try:
        server.feed = ChangeFeed(database)
        if changes_out is not None:
            server.feed.subscribe(ChangeLines(changes_out))
        if delivery is not None:
            server.delivery = _delivery_worker(database, partners, delivery, report_out)
            server.feed.subscribe(server.delivery.put)
    except BaseException:
        server.server_close()
        raise
    return server


def _delivery_worker(
    database: Database, partners: list[dict[str, Any]], settings: DeliverySettings, report: IO[str]
) -> DeliveryWorker:
    from distiller_tools.local.pipeline import LocalPipeline

    # The embedded endpoint's access log would interleave with the API's output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    pipeline = LocalPipeline(
        database,
        partners,
        retry_delays=settings.retry_delays,
        allow_private_endpoints=settings.allow_private_endpoints,
        log_stream=report,
        progress=None,
    )
    try:
        return DeliveryWorker(pipeline, database, settings, report)
    except BaseException:
        pipeline.close()
        raise
