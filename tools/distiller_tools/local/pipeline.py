"""`distiller run`: the whole pipeline on this machine, against an embedded AWS endpoint.

A moto server on 127.0.0.1 (a real HTTP endpoint, not in-process patching) holds the queues
the stack defines and the partners' webhook secrets. Input lines go on the ingest queue as
the relay would put them, a chunk at a time as the Distiller takes them; each queue has an
event source mapping polling it on a thread of its own (`event_source`), invoking the Distiller
or the Dispatcher handler with batches of up to the template's BatchSize as Lambda would;
webhooks go over real HTTP to the partners' URLs; retries wait for their SQS delay. The
Dispatcher's delivery log is the in-memory database's collection with its lookups indexed
(`memory_log`). The run ends when every queue is empty: every delivery delivered or
dead-lettered. Progress goes to stderr: a line per wave, or one line redrawn on a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from pymongo.collection import Collection
from pymongo.database import Database

from distiller.adapters.queues import OutgoingMessage
from distiller.adapters.secrets import PartnerSecrets
from distiller.deliver.log import DELIVERIES_COLLECTION, log_line
from distiller_tools.local.event_source import Activity, EventSourceMapping, Handler
from distiller_tools.local.memory_log import IndexedDeliveryLog
from distiller_tools.local.progress import Progress, WaveStatus
from distiller_tools.local.queue_watch import SENDS, InputFeed, QueueBacklog, ScheduledRetries

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
#: Records per invocation, as each function's SQS event source has it (template.yaml `BatchSize`).
BATCH_SIZES = {"ingest": 100, "delivery": 50, "retry": 50}
TTL_INDEX = "ttl_attempted_at"
"""`MongoDeliveryLog.ensure_indexes`' TTL index on the delivery log."""
FEED_CHUNK = 20
"""Input lines put on the ingest queue at a time (the embedded SQS costs O(queue length) per message)."""
DELIVERY_BACKLOG_LIMIT = BATCH_SIZES["delivery"]
"""Delivery messages not received yet above which no more input is fed (the dispatcher catches up first)."""
SETTLE_TICK_SECONDS = 0.05
"""How often a run looks whether its mappings have settled (a wave is over, or the run)."""


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
            elif a["status"] == "held":
                counts["held"] += 1
            elif a.get("deadLettered"):
                counts["dead-lettered"] += 1
            else:
                counts["retried"] += 1
        header: tuple[str, ...] = ("partner", "event", "delivered", "retried", "dead-lettered", "skipped")
        if any(c["held"] for c in rows.values()):  # a partner was paused: its deliveries wait (no sweep locally)
            header += ("held",)
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


def _metrics_cleared(handler: Handler) -> Handler:
    """The handler, its metrics cleared after each invocation as Lambda's flush would clear them.

    Metrics are disabled locally, so powertools never flushes them: it would keep every value and
    print each metric that reaches 100 values on stdout, disabled or not, amid the run's summary.
    """
    from distiller.observability import metrics

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            return handler(event, context)
        finally:
            metrics.clear_metrics()

    return handle


def _indexed_log(collection: Collection) -> IndexedDeliveryLog:
    """The dispatcher's delivery log for a local run, over the collection `DispatcherRuntime.build` indexed.

    The dispatcher asks the log two questions per POST, which mongomock answers by scanning every
    attempt; and mongomock enforces the TTL index by scanning the collection on every write. The
    attempts older than the retention (from a `--deliveries` file) are expired once, here, as the
    first operation after the index was made would; attempts made during a run are never that old.
    """
    collection.count_documents({})  # mongomock expires by the TTL index now
    collection.drop_index(TTL_INDEX)
    return IndexedDeliveryLog(collection)


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
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the embedded endpoint's access log
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
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.urls = self._create_queues()
        self._store_secrets(partners)

        self.progress = Progress(progress)
        self.retries = ScheduledRetries(self.urls["retry"])
        self.backlogs = {queue: QueueBacklog(self.urls[queue]) for queue in ("ingest", "delivery")}
        session = boto3.DEFAULT_SESSION  # made by `boto3.client` above; the handlers' clients come from it below
        assert session is not None
        self._session_events = session.events
        self._hooks = [self.retries.sent, *(backlog.sent for backlog in self.backlogs.values())]
        for name in SENDS:
            for index, hook in enumerate(self._hooks):
                self._session_events.register(name, hook, unique_id=f"{name}:{id(self)}:{index}")

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
            ),
            log_view=_indexed_log,
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
        # The Dispatcher's Secrets Manager client, made now: its first batch's concurrent sends would
        # each make one (powertools creates its provider on first use, unguarded), 0.1-0.5 s apiece.
        from aws_lambda_powertools.utilities import parameters
        from aws_lambda_powertools.utilities.parameters import base

        base.DEFAULT_PROVIDERS.setdefault("secrets", parameters.SecretsProvider())

    def close(self) -> None:
        for name in SENDS:
            for index in range(len(self._hooks)):
                self._session_events.unregister(name, unique_id=f"{name}:{id(self)}:{index}")
        self.server.stop()
        restore_environment(self._previous_environment)
        _forget_aws_clients()

    def run(self, lines: Iterable[str], *, idle_limit: float | None = None) -> RunReport:
        """Put `lines` through the pipeline; return when every queue is empty (or raise when nothing
        moved for `idle_limit` seconds while messages were still queued)."""
        from distiller.adapters.queues import SqsQueue

        report = RunReport()
        bodies = [OutgoingMessage(line.rstrip("\n")) for line in lines if line.strip()]
        report.input_lines = len(bodies)
        activity = Activity()
        feed = InputFeed(
            SqsQueue(self.sqs, self.urls["ingest"]),
            self.backlogs["ingest"],
            bodies,
            FEED_CHUNK,
            room=lambda: self.backlogs["delivery"].waiting <= DELIVERY_BACKLOG_LIMIT,
        )
        feed.top_up()  # the first chunk, here: a queue that refuses the input fails the run at once
        mappings = self._mappings(activity, feed)
        for mapping in mappings:
            mapping.start()
        try:
            self._until_settled(activity, feed, idle_limit)
        finally:
            for mapping in mappings:
                mapping.stop()
            self.progress.finish()

        report.attempts = [
            log_line(doc)
            for doc in self.database[DELIVERIES_COLLECTION].find({}, sort=[("attemptedAt", 1), ("_id", 1)])
        ]
        report.parked = [json.loads(body) for body in self._drain("ingest-dlq")]
        return report

    def _mappings(self, activity: Activity, feed: InputFeed) -> list[EventSourceMapping]:
        """The stack's three event sources: ingest → Distiller, delivery and retry → Dispatcher."""

        def mapping(queue: str, module: ModuleType, function: str, **hooks: Any) -> EventSourceMapping:
            return EventSourceMapping(
                self.sqs,
                self.urls[queue],
                f"arn:aws:sqs:{REGION}:000000000000:trigger-distiller-{queue}",
                _metrics_cleared(module.handler),
                f"trigger-distiller-{function}",
                BATCH_SIZES[queue],
                context_for=LocalContext,
                activity=activity,
                region=REGION,
                **hooks,
            )

        return [
            mapping(
                "ingest", self.distiller, "distiller", before_poll=feed.top_up, received=self.backlogs["ingest"].took
            ),
            mapping("delivery", self.dispatcher, "dispatcher", received=self.backlogs["delivery"].took),
            mapping("retry", self.dispatcher, "dispatcher", received=self._retries_received),
        ]

    def _retries_received(self, messages: list[dict[str, Any]]) -> None:
        self.retries.received(m["Body"] for m in messages)

    def _until_settled(self, activity: Activity, feed: InputFeed, idle_limit: float | None) -> None:
        """Watch the mappings work: a wave ends when nothing was receivable (progress is shown then);
        the run ends when the input is all fed and every work queue is empty."""
        idle_limit = idle_limit if idle_limit is not None else self.max_delay + 4 * VISIBILITY_TIMEOUT + 30
        since = activity.snapshot()
        last_progress = time.monotonic()
        in_wave = False
        while True:
            time.sleep(SETTLE_TICK_SECONDS)
            if feed.error is not None:
                raise RuntimeError(f"could not put the input on the local ingest queue: {feed.error}")
            now = activity.snapshot()
            if now.work != since.work:
                if not in_wave:
                    self.progress.clear()
                in_wave = True
                since, last_progress = now, time.monotonic()
                continue
            if not now.quiet_since(since):
                continue
            if in_wave:  # nothing left to receive now: the wave is over
                in_wave = False
                self.progress.wave(self.status())
            if feed.done and self._pending() == 0:
                # Unless a mapping took the last messages after `now` (it is busy, or its work is counted):
                # then that work is the next wave, and the queues are asked again after it.
                after = activity.snapshot()
                if after.work == now.work and after.busy == 0:
                    return
                continue
            if time.monotonic() - last_progress > idle_limit:
                raise RuntimeError(f"no progress for {idle_limit:.0f}s with messages still queued")
            self.progress.tick()

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
