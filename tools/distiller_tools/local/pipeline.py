"""`distiller run`: the whole pipeline on this machine, against an embedded AWS endpoint.

A moto server on 127.0.0.1 (a real HTTP endpoint, not in-process patching) holds the queues
the stack defines and the partners' webhook secrets. Input lines go on the ingest queue as
the relay would put them; the Distiller and Dispatcher handlers are invoked with SQS batches
as Lambda would invoke them; webhooks go over real HTTP to the partners' URLs; retries wait
for their SQS delay. The run ends when every queue is empty: every delivery delivered or
dead-lettered. Progress goes to stderr: a line per wave, or one line redrawn on a terminal.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import shutil
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from pymongo.database import Database

from distiller.adapters.secrets import PartnerSecrets
from distiller.deliver.log import DELIVERIES_COLLECTION, log_line

REGION = "us-east-2"
VISIBILITY_TIMEOUT = 2
"""Seconds before a message a handler failed on is received again (short, for a local run)."""
MAX_RECEIVE_COUNT = 5
DOCUMENTS_BUCKET = "trigger-distiller-documents"

#: The stack's queues (template.yaml): name → dead-letter queue it redrives to.
QUEUES: dict[str, str | None] = {
    "ingest-dlq": None,
    "delivery-dlq": None,
    "ingest": "ingest-dlq",
    "delivery": "delivery-dlq",
    "retry": "delivery-dlq",
}
WORK_QUEUES = ("ingest", "delivery", "retry")


@dataclass
class LocalContext:
    """What the handlers read of a Lambda context."""

    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class RunReport:
    attempts: list[dict[str, Any]] = field(default_factory=list)
    parked: list[dict[str, Any]] = field(default_factory=list)
    input_lines: int = 0

    def table(self) -> str:
        rows: dict[tuple[str, str], Counter[str]] = {}
        for a in self.attempts:
            counts = rows.setdefault((a["partnerId"], a["event"]), Counter())
            if a["status"] == "delivered":
                counts["delivered"] += 1
            elif a["status"] == "skipped":
                counts["skipped"] += 1
            elif a.get("deadLettered"):
                counts["dead-lettered"] += 1
            else:
                counts["retried"] += 1
        header = ("partner", "event", "delivered", "retried", "dead-lettered", "skipped")
        lines = [header] + [(p, e, *(str(c[k]) for k in header[2:])) for (p, e), c in sorted(rows.items())]
        totals = Counter()
        for c in rows.values():
            totals.update(c)
        lines.append(("total", "", *(str(totals[k]) for k in header[2:])))
        widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in lines)

    @property
    def dead_lettered(self) -> int:
        return sum(1 for a in self.attempts if a.get("deadLettered"))


def failure_lines(parked: Iterable[dict[str, Any]], dead_letters: Iterable[dict[str, Any]]) -> list[str]:
    """One line per parked record and per dead letter of a run, as `distiller run` and `distiller api
    --deliver` report them: what, where, and why, each on one line."""

    def one_line(value: Any) -> str:
        return " ".join(str(value).split())

    lines = [f"parked: {p.get('origin')}: {one_line(p.get('reason'))}" for p in parked]
    lines += [
        f"dead-lettered: {d.get('partnerId')} {d.get('event')} {d.get('eventId')} "
        f"after {d.get('attempt')} attempt(s): {one_line(d.get('lastError'))}"
        for d in dead_letters
    ]
    return lines


@dataclass(frozen=True)
class WaveStatus:
    """Where a run stands after a wave (a drain round of the queues)."""

    delivered: int
    waiting: int
    next_due: float | None
    """When the earliest waiting retry is due (seconds since the epoch)."""
    dead_lettered: int
    parked: int = 0

    def describe(self, now: float, *, terse: bool = False) -> str:
        """`delivered D, waiting for retry W (next due HH:MM:SS UTC, in Ss), dead-lettered X[, parked P]`;
        `terse` (a terminal line) says `waiting W (next HH:MM:SS UTC, in Ss)`."""
        waiting = f"waiting {self.waiting}" if terse else f"waiting for retry {self.waiting}"
        if self.waiting and self.next_due is not None:
            due = dt.datetime.fromtimestamp(self.next_due, dt.UTC).strftime("%H:%M:%S")
            next_due = "next" if terse else "next due"
            waiting += f" ({next_due} {due} UTC, in {max(0, math.ceil(self.next_due - now))}s)"
        parked = f", parked {self.parked}" if self.parked else ""
        return f"delivered {self.delivered}, {waiting}, dead-lettered {self.dead_lettered}{parked}"


class Progress:
    """`distiller run` progress: a line per wave, or, on a terminal, one line redrawn in place (\\r)
    with a bar of settled (delivered or dead-lettered) deliveries and a countdown to the next retry,
    cut to the terminal's width (a wrapped line could not be redrawn)."""

    BAR_WIDTH = 10

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.tty = stream is not None and stream.isatty()
        self.width = _terminal_width(stream) if self.tty else 0
        self.waves = 0
        self._status: WaveStatus | None = None
        self._shown = ""
        self._drawn_second = -1

    def wave(self, status: WaveStatus) -> None:
        """A wave ended: say where the run stands."""
        if self.stream is None:
            return
        self.waves += 1
        self._status = status
        if self.tty:
            self._draw(time.time())
        else:
            self.stream.write(f"distiller run: wave {self.waves}: {status.describe(time.time())}\n")
            self.stream.flush()

    def tick(self) -> None:
        """While waiting for retries: a terminal's countdown moves once a second."""
        now = time.time()
        if self.tty and self._status is not None and int(now) != self._drawn_second:
            self._draw(now)

    def clear(self) -> None:
        """A wave starts: take the terminal line away, so what the handlers log starts on a line of its own."""
        if self.tty and self._shown:
            self._write("\r" + " " * len(self._shown) + "\r")
            self._shown = ""

    def finish(self) -> None:
        """The run is over: leave the terminal line in place, ended."""
        if self.tty and self._status is not None:
            self._draw(time.time())
            self._write("\n")
            self._shown = ""

    def _draw(self, now: float) -> None:
        assert self._status is not None
        status = self._status
        settled = status.delivered + status.dead_lettered
        known = settled + status.waiting
        filled = round(self.BAR_WIDTH * settled / known) if known else self.BAR_WIDTH
        line = f"[{'#' * filled}{'.' * (self.BAR_WIDTH - filled)}] {status.describe(now, terse=True)}"
        line = line[: self.width - 1]
        self._write("\r" + line.ljust(len(self._shown)))
        self._shown = line
        self._drawn_second = int(now)

    def _write(self, text: str) -> None:
        assert self.stream is not None
        self.stream.write(text)
        self.stream.flush()


def _terminal_width(stream: IO[str] | None) -> int:
    """Columns of the terminal `stream` writes to (`$COLUMNS`, else 80, when it cannot say)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream is not None else 80
    except (OSError, ValueError):  # not a file descriptor (io.UnsupportedOperation is both)
        return shutil.get_terminal_size((80, 24)).columns


class ScheduledRetries:
    """Retries put on the retry queue and not received yet, with when each is due.

    SQS does not tell when a delayed message becomes visible; the send does (`DelaySeconds`), so a
    botocore hook on the session the handlers' clients come from notes each send to the retry queue.
    """

    EVENTS = ("provide-client-params.sqs.SendMessageBatch", "provide-client-params.sqs.SendMessage")

    def __init__(self, queue_url: str) -> None:
        self.queue_url = queue_url
        self._due: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def sent(self, params: dict[str, Any], **_: Any) -> None:
        """botocore `provide-client-params` handler: note the retries a send puts on the queue."""
        if params.get("QueueUrl") != self.queue_url:
            return
        now = time.time()
        with self._lock:
            for entry in params.get("Entries") or [params]:
                self._due.setdefault(entry["MessageBody"], []).append(now + int(entry.get("DelaySeconds") or 0))

    def received(self, bodies: Iterable[str]) -> None:
        """These messages came off the retry queue: no longer waiting."""
        with self._lock:
            for body in bodies:
                times = self._due.get(body)
                if times:
                    times.remove(min(times))
                    if not times:
                        del self._due[body]

    def waiting(self) -> tuple[int, float | None]:
        """How many retries are waiting, and when the earliest is due."""
        with self._lock:
            times = [t for due in self._due.values() for t in due]
        return len(times), min(times, default=None)


FUNCTIONS_DIR_ENV = "DISTILLER_FUNCTIONS_DIR"


def functions_dir() -> Path:
    """The stack's `functions/` (the handlers Lambda runs): `$DISTILLER_FUNCTIONS_DIR`, else the
    nearest directory above this package that holds `template.yaml` and `functions/`."""
    configured = os.environ.get(FUNCTIONS_DIR_ENV, "").strip()
    if configured:
        candidate = Path(configured).resolve()
        if not (candidate / "distiller" / "app.py").is_file():
            raise RuntimeError(f"{FUNCTIONS_DIR_ENV}={configured}: no distiller/app.py there")
        return candidate
    for directory in Path(__file__).resolve().parents:
        if (directory / "template.yaml").is_file() and (directory / "functions" / "distiller" / "app.py").is_file():
            return directory / "functions"
    raise RuntimeError(
        f"functions/ not found above {Path(__file__).parent}; run from a source checkout or set {FUNCTIONS_DIR_ENV}"
    )


def load_handler_module(name: str, prefix: str = "local_function_") -> ModuleType:
    """Import functions/<name>/app.py (the very handler Lambda runs) as module `{prefix}{name}`.

    Every function's file is app.py, so each gets its own module name; a different prefix gives
    an independent copy (tests keep theirs apart from a local pipeline's).
    """
    module_name = f"{prefix}{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = spec_from_file_location(module_name, functions_dir() / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def prepare_environment(endpoint: str) -> dict[str, str | None]:
    """Point every boto3 client at the local endpoint and keep the handlers' telemetry off stdout.

    Returns the previous values, for `restore_environment`.
    """
    settings = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": REGION,
        "POWERTOOLS_SERVICE_NAME": "trigger-distiller-local",
        "POWERTOOLS_METRICS_NAMESPACE": "TriggerDistillerLocal",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_PROFILE": None,
    }
    previous = {name: os.environ.get(name) for name in settings}
    restore_environment(settings)
    _forget_aws_clients()
    return previous


def restore_environment(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _forget_aws_clients() -> None:
    """powertools Parameters keeps its boto3 client; drop it so the next one sees the current endpoint."""
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters import base

    base.DEFAULT_PROVIDERS.clear()
    parameters.clear_caches()


class LocalPipeline:
    def __init__(
        self,
        database: Database,
        partners: list[dict[str, Any]],
        *,
        retry_delays: str = "60,300,900",
        allow_private_endpoints: bool = False,
        log_stream: IO[str] = sys.stderr,
        progress: IO[str] | None = None,
    ) -> None:
        """`progress`: where to show progress per wave (`Progress`); None: nowhere."""
        from moto.server import ThreadedMotoServer

        self.database = database
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # moto keeps its state per process: start from empty queues and secrets.
        reset = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")  # noqa: S310 - loopback
        urllib.request.urlopen(reset, timeout=10).close()  # noqa: S310 - our own loopback endpoint
        self._previous_environment = prepare_environment(self.endpoint)

        import boto3

        from distiller.observability import logger
        from distiller.runtime import DispatcherRuntime, DistillerRuntime
        from distiller.settings import DispatcherSettings, DistillerSettings

        logger.logger_handler.setStream(log_stream)  # type: ignore[attr-defined]
        logger.setLevel(logging.WARNING)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the embedded endpoint's access log
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.urls = self._create_queues()
        self._store_secrets(partners)

        self.progress = Progress(progress)
        self.retries = ScheduledRetries(self.urls["retry"])
        session = boto3.DEFAULT_SESSION  # made by `boto3.client` above; the handlers' clients come from it below
        assert session is not None
        self._session_events = session.events
        for name in ScheduledRetries.EVENTS:
            self._session_events.register(name, self.retries.sent, unique_id=f"{name}:{id(self)}")

        self.distiller = load_handler_module("distiller")
        self.dispatcher = load_handler_module("dispatcher")
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=DOCUMENTS_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        self.distiller._runtime = DistillerRuntime.build(
            database,
            DistillerSettings(
                delivery_queue_url=self.urls["delivery"],
                ingest_dead_letter_queue_url=self.urls["ingest-dlq"],
                documents_bucket=DOCUMENTS_BUCKET,
            ),
        )
        self.dispatcher._runtime = DispatcherRuntime.build(
            database,
            DispatcherSettings(
                retry_queue_url=self.urls["retry"],
                dead_letter_queue_url=self.urls["delivery-dlq"],
                retry_delays=retry_delays,
                allow_private_endpoints=allow_private_endpoints,
                secret_cache_seconds=0,
            ),
        )
        self.max_delay = max((int(d) for d in retry_delays.split(",") if d.strip()), default=0)

    def _create_queues(self) -> dict[str, str]:
        urls: dict[str, str] = {}
        for name, dead_letter in QUEUES.items():
            attributes = {"VisibilityTimeout": str(VISIBILITY_TIMEOUT), "MessageRetentionPeriod": "1209600"}
            if dead_letter is not None:
                arn = self.sqs.get_queue_attributes(QueueUrl=urls[dead_letter], AttributeNames=["QueueArn"])
                attributes["RedrivePolicy"] = json.dumps(
                    {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": MAX_RECEIVE_COUNT}
                )
            urls[name] = self.sqs.create_queue(QueueName=f"trigger-distiller-{name}", Attributes=attributes)["QueueUrl"]
        return urls

    def _store_secrets(self, partners: list[dict[str, Any]]) -> None:
        import boto3

        secrets = boto3.client("secretsmanager", region_name=REGION)
        names = PartnerSecrets()
        for record in partners:
            secret = (record.get("webhook") or {}).get("secret")
            if secret:
                secrets.create_secret(Name=names.name_for(record["partnerId"]), SecretString=secret)

    def close(self) -> None:
        for name in ScheduledRetries.EVENTS:
            self._session_events.unregister(name, unique_id=f"{name}:{id(self)}")
        self.server.stop()
        restore_environment(self._previous_environment)
        _forget_aws_clients()

    def run(self, lines: Iterable[str], *, idle_limit: float | None = None) -> RunReport:
        from distiller.adapters.queues import OutgoingMessage, SqsQueue

        report = RunReport()
        ingest = SqsQueue(self.sqs, self.urls["ingest"])
        bodies = [OutgoingMessage(line.rstrip("\n")) for line in lines if line.strip()]
        report.input_lines = len(bodies)
        if ingest.send(bodies):
            raise RuntimeError("could not put the input on the local ingest queue")

        idle_limit = idle_limit if idle_limit is not None else self.max_delay + 4 * VISIBILITY_TIMEOUT + 30
        last_progress = time.monotonic()
        in_wave = False
        try:
            while True:
                progressed = self._step("ingest", self.distiller, "distiller")
                for queue in ("delivery", "retry"):
                    progressed = self._step(queue, self.dispatcher, "dispatcher") or progressed
                if progressed:
                    if not in_wave:
                        self.progress.clear()
                    in_wave = True
                    last_progress = time.monotonic()
                    continue
                if in_wave:  # nothing left to receive now: the wave is over
                    in_wave = False
                    self.progress.wave(self.status())
                if self._pending() == 0:
                    break
                if time.monotonic() - last_progress > idle_limit:
                    raise RuntimeError(f"no progress for {idle_limit:.0f}s with messages still queued")
                self.progress.tick()
                time.sleep(0.1)
        finally:
            self.progress.finish()

        report.attempts = [
            log_line(doc)
            for doc in self.database[DELIVERIES_COLLECTION].find({}, sort=[("attemptedAt", 1), ("_id", 1)])
        ]
        report.parked = [json.loads(body) for body in self._drain("ingest-dlq")]
        return report

    def _step(self, queue: str, module: ModuleType, function: str) -> bool:
        received = self.sqs.receive_message(
            QueueUrl=self.urls[queue], MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=0
        ).get("Messages", [])
        if not received:
            return False
        if queue == "retry":
            self.retries.received(m["Body"] for m in received)
        arn = f"arn:aws:sqs:{REGION}:000000000000:trigger-distiller-{queue}"
        event = {"Records": [_lambda_record(m, arn) for m in received]}
        try:
            response = module.handler(event, LocalContext(f"trigger-distiller-{function}"))
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception as exc:  # Lambda would retry the whole batch after the visibility timeout
            print(f"distiller run: {function} failed a batch, it will be retried: {exc}", file=sys.stderr)
            return True
        for message in received:
            if message["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.urls[queue], ReceiptHandle=message["ReceiptHandle"])
        return True

    def status(self) -> WaveStatus:
        """Delivered so far (delivery log), retries waiting (and when the next is due), dead letters and
        parked records (their queues) so far."""
        waiting, next_due = self.retries.waiting()
        return WaveStatus(
            delivered=self.database[DELIVERIES_COLLECTION].count_documents({"status": "delivered"}),
            waiting=waiting,
            next_due=next_due,
            dead_lettered=self._queued("delivery-dlq"),
            parked=self._queued("ingest-dlq"),
        )

    def _queued(self, queue: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.urls[queue],
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())

    def _pending(self) -> int:
        return sum(self._queued(queue) for queue in WORK_QUEUES)

    def _drain(self, queue: str) -> list[str]:
        bodies: list[str] = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.urls[queue], MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return bodies
            for message in got:
                bodies.append(message["Body"])
                self.sqs.delete_message(QueueUrl=self.urls[queue], ReceiptHandle=message["ReceiptHandle"])

    def dead_letters(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self._drain("delivery-dlq")]


def _lambda_record(message: dict[str, Any], arn: str) -> dict[str, Any]:
    """An SQS message as Lambda's event source mapping presents it."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": REGION,
    }
