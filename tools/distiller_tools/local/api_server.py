"""`distiller api`: the /data routes on 127.0.0.1, through the same Lambda handler, for demos and tests.

Each HTTP request becomes an API Gateway (REST, proxy) event for `functions/api/app.py`; the
database is in-memory (PARTNERS.json, WORLD.json and a `distiller run --log` file of deliveries);
partners authenticate with the `sharedSecret` of their record. Replays are printed to stderr as
the delivery messages that would be queued.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from bson import ObjectId
from pymongo.database import Database

from distiller.api.routes import ApiLimits
from distiller.core.clock import parse_instant
from distiller.deliver.log import DELIVERIES_COLLECTION
from distiller_tools.local.pipeline import LocalContext, load_handler_module
from distiller_tools.local.receiver import HOST, INVALID_CONTENT_LENGTH, content_length

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


def build_runtime(
    database: Database, partners: list[dict[str, Any]], replay_out: IO[str], limits: ApiLimits | None = None
) -> Any:
    import boto3
    from botocore.config import Config

    from distiller.adapters.file_links import FileLinks
    from distiller.adapters.lookups import MongoLookups
    from distiller.api.auth import AuthSettings, StaticSharedSecrets
    from distiller.api.data import PartnerData
    from distiller.api.rate_limit import InMemoryRateLimiter
    from distiller.api.routes import ApiRuntime

    s3 = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local").client(  # noqa: S106
        "s3", region_name="us-east-2", config=Config(signature_version="s3v4")
    )
    file_links = FileLinks(s3, DOCUMENTS_BUCKET)
    shared = {p["partnerId"]: p["sharedSecret"] for p in partners if isinstance(p.get("sharedSecret"), str)}
    return ApiRuntime(
        data=PartnerData(database, file_links),
        partners=MongoLookups(database).partners,
        secrets=StaticSharedSecrets(shared),
        auth=AuthSettings(),
        replay_queue=PrintedQueue(replay_out),
        file_links=file_links,
        limiter=InMemoryRateLimiter(),
        limits=limits or ApiLimits(),
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


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, handler_module: Any) -> None:
        self.handler_module = handler_module
        super().__init__((HOST, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


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
            result = self.server.handler_module.handler(event, LocalContext("trigger-distiller-api"))
        except Exception as exc:  # the handler must never get here; answer like API Gateway would
            result = {"statusCode": 502, "body": json.dumps({"error": f"handler failed: {type(exc).__name__}"})}
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
) -> ApiServer:
    """The API server, listening on HOST:`port`; `OSError` when that port cannot be had.
    Partners are rate-limited as deployed (`limits`, default `ApiLimits()`), in memory."""
    module = load_handler_module("api")
    module._runtime = build_runtime(database, partners, replay_out, limits)
    return ApiServer(port, module)
