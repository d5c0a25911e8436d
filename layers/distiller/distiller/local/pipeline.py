"""`distiller run`: the whole pipeline on this machine, against an embedded AWS endpoint.

A moto server on 127.0.0.1 (a real HTTP endpoint, not in-process patching) holds the queues
the stack defines and the partners' webhook secrets. Input lines go on the ingest queue as
the relay would put them; the Distiller and Dispatcher handlers are invoked with SQS batches
as Lambda would invoke them; webhooks go over real HTTP to the partners' URLs; retries wait
for their SQS delay. The run ends when every queue is empty: every delivery delivered or
dead-lettered.
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

from pymongo.database import Database

from distiller.delivery_log import DELIVERIES_COLLECTION, log_line
from distiller.partner_secrets import PartnerSecrets

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


def functions_dir() -> Path:
    here = Path(__file__).resolve()
    candidate = here.parents[4] / "functions"
    if not (candidate / "distiller" / "app.py").exists():
        raise RuntimeError(f"functions/ not found next to the package ({candidate}); run from a source checkout")
    return candidate


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
    ) -> None:
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

        self.distiller = load_handler_module("distiller")
        self.dispatcher = load_handler_module("dispatcher")
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=DOCUMENTS_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        self.distiller._runtime = DistillerRuntime.build(
            database, DistillerSettings(self.urls["delivery"], self.urls["ingest-dlq"], DOCUMENTS_BUCKET)
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
        self.server.stop()
        restore_environment(self._previous_environment)
        _forget_aws_clients()

    def run(self, lines: Iterable[str], *, idle_limit: float | None = None) -> RunReport:
        from distiller.queues import OutgoingMessage, SqsQueue

        report = RunReport()
        ingest = SqsQueue(self.sqs, self.urls["ingest"])
        bodies = [OutgoingMessage(line.rstrip("\n")) for line in lines if line.strip()]
        report.input_lines = len(bodies)
        if ingest.send(bodies):
            raise RuntimeError("could not put the input on the local ingest queue")

        idle_limit = idle_limit if idle_limit is not None else self.max_delay + 4 * VISIBILITY_TIMEOUT + 30
        last_progress = time.monotonic()
        while True:
            progressed = self._step("ingest", self.distiller, "distiller")
            for queue in ("delivery", "retry"):
                progressed = self._step(queue, self.dispatcher, "dispatcher") or progressed
            if progressed:
                last_progress = time.monotonic()
                continue
            if self._pending() == 0:
                break
            if time.monotonic() - last_progress > idle_limit:
                raise RuntimeError(f"no progress for {idle_limit:.0f}s with messages still queued")
            time.sleep(0.1)

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

    def _pending(self) -> int:
        total = 0
        for queue in WORK_QUEUES:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.urls[queue],
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            total += sum(int(v) for v in attributes.values())
        return total

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
