"""Issue 12: every `distiller.*` log line is structured JSON in Lambda and plain text locally.

The Lambda Python runtime (awslambdaric `bootstrap._setup_logging`) puts one text handler on the
root logger before it imports the handler module, and leaves the root at WARNING unless the
function's logging config sets a level. The Lambda tests reproduce exactly that in a subprocess
(a fresh interpreter: the wiring happens at import, and must not leak into this test session),
import `functions/dispatcher/app.py` with the Lambda environment set, and run its handler
in-process over a real `Dispatcher` with fakes around it (partners, secret, sender, log, queues),
then the ingest batch with a poison record. Everything the process prints is then read back.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from distiller.core.lookups import LookupFailure
from distiller.deliver.message import DeliveryMessage
from distiller.ingest.batch import ingest
from distiller.ingest.sources import lambda_records
from tests.delivery_world import message
from tests.integration.loopback import Reply

ROOT = Path(__file__).resolve().parents[2]
REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
TRACE_ROOT = "1-5759e988-bd862e3fe1be46a994272793"
SECRET = "whsec_issue12_do_not_log"
PAYLOAD_MARKER = "payload-marker-issue12"
URL_KEY = "url-key-issue12"
REDIRECT_TOKEN = "redirect-token-issue12"
BODY_MARKER = "body-marker-issue12"
PACKAGE_LOGGER = "distiller"

# Runs in a fresh interpreter: the runtime's logging first, then the handler module, then work.
LAMBDA_SCENARIO = f"""
import importlib.util, logging, sys
from types import SimpleNamespace

# awslambdaric bootstrap._setup_logging, text format: one handler on the root, whose level stays
# WARNING (only AWS_LAMBDA_LOG_LEVEL would change it), and a filter adding the request id.
class LambdaLoggerFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = {REQUEST_ID!r}
        return True

runtime_handler = logging.StreamHandler(sys.stdout)
runtime_handler.setFormatter(logging.Formatter(
    "[%(levelname)s]\\t%(asctime)s.%(msecs)03dZ\\t%(aws_request_id)s\\t%(message)s\\n", "%Y-%m-%dT%H:%M:%S"
))
runtime_handler.addFilter(LambdaLoggerFilter())
logging.getLogger().addHandler(runtime_handler)

spec = importlib.util.spec_from_file_location("dispatcher_app", "functions/dispatcher/app.py")
app = importlib.util.module_from_spec(spec)
sys.modules["dispatcher_app"] = app
spec.loader.exec_module(app)

import mongomock
from distiller.adapters.delivery_log import MongoDeliveryLog
from distiller.core.partners import partner_from_record
from distiller.deliver.dispatch import Dispatcher, RetrySchedule
from distiller.core.lookups import LookupFailure
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.sender import SendResult
from distiller.ingest.batch import ingest
from distiller.ingest.sources import lambda_records
from distiller.observability import logger

class Queue:
    def send(self, messages):
        return []
    def park(self, record, reason, origin):
        return True

class Secrets:
    def webhook_secret(self, partner_id):
        return {SECRET!r}

class Sender:
    def post(self, url, headers, body, *, start_by=None):
        if "acme" in url:
            return SendResult(True, 200, '{{"received":true}}')
        return SendResult(
            False, 302, None,
            "redirect not followed (HTTP 302 to 'https://hooks.globex.example/next?token={REDIRECT_TOKEN}')",
        )

partners = [
    partner_from_record({{"partnerId": pid, "webhook": {{"url": url, "events": ["*"]}}}})
    for pid, url in [
        ("acme-motors", "https://acme.example/hooks?key={URL_KEY}"),
        ("globex", "https://globex.example/hooks?key={URL_KEY}"),
    ]
]
dispatcher = Dispatcher(
    partners=lambda: partners,
    secrets=Secrets(),
    sender=Sender(),
    log=MongoDeliveryLog(mongomock.MongoClient(tz_aware=True)["privateauto"]["deliveries"]),
    retry_queue=Queue(),
    dead_letter_queue=Queue(),
    schedule=RetrySchedule(()),  # a failed first attempt is dead-lettered at once
)
app.get_runtime = lambda: SimpleNamespace(
    max_receive_count=5, dispatcher=dispatcher, dead_letters=Queue(), partner_metrics=True
)

def delivery(partner_id, n):
    return DeliveryMessage(
        partner_id=partner_id,
        event="deal.completed",
        event_id=f"event-{{partner_id}}-{{n}}",
        event_key=f"key-{{n}}",
        payload={{"event": "deal.completed", "data": {{"note": {PAYLOAD_MARKER!r}}}}},
        emitted_at="2025-03-14T15:09:26.535Z",
    )

class Context:
    function_name = "trigger-distiller-dispatcher"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-2:123456789012:function:trigger-distiller-dispatcher"
    aws_request_id = {REQUEST_ID!r}
    def get_remaining_time_in_millis(self):
        return 60_000

records = [
    {{"messageId": f"m-{{i}}", "receiptHandle": "r", "body": delivery(pid, i).to_body(), "attributes": {{}},
      "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:deliveries"}}
    for i, pid in enumerate(["acme-motors", "globex"])
]
app.handler({{"Records": records}}, Context())

@logger.inject_lambda_context
def distiller_handler(event, context):
    poison = {{"messageId": "poison-1", "body": "not json {BODY_MARKER}",
               "attributes": {{"ApproximateReceiveCount": "1"}}}}
    return ingest(lambda_records({{"Records": [poison]}}), lookups=None, delivery_queue=Queue(), dead_letters=Queue())

result = distiller_handler({{}}, Context())
assert result.parked, result
sys.stdout.flush()
"""


def run_lambda_scenario(**environment: str) -> tuple[list[dict[str, Any]], list[str], str]:
    """(JSON lines, other lines, whole stdout) of the scenario run as the Lambda runtime would."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_LAMBDA_", "POWERTOOLS_", "_X_AMZN_")) and name != "LOG_LEVEL"
    }
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": "trigger-distiller-dispatcher",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_REGION": "us-east-2",
            "AWS_DEFAULT_REGION": "us-east-2",
            "_X_AMZN_TRACE_ID": f"Root={TRACE_ROOT};Parent=53995c3f42cd8ad8;Sampled=1",
            "POWERTOOLS_METRICS_NAMESPACE": "TriggerDistillerTest",
            "POWERTOOLS_TRACE_DISABLED": "true",
            **environment,
        }
    )
    done = subprocess.run(  # our own interpreter and script
        [sys.executable, "-c", LAMBDA_SCENARIO], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    structured: list[dict[str, Any]] = []
    other: list[str] = []
    for line in done.stdout.splitlines():
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            other.append(line)
            continue
        if isinstance(parsed, dict) and "_aws" not in parsed:  # the metrics' EMF blob is not a log line
            structured.append(parsed)
    return structured, other, done.stdout


def from_distiller(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if str(line.get("name", "")).startswith("distiller.")]


LAMBDA_KEYS = {"function_request_id": REQUEST_ID, "function_name": "trigger-distiller-dispatcher", "cold_start": True}


def test_in_lambda_each_delivery_attempt_is_one_json_line_with_its_ids_and_the_invocations():
    # POWERTOOLS_SERVICE_NAME unset: the default name; DEBUG: delivered attempts have their line too.
    lines, other, stdout = run_lambda_scenario(POWERTOOLS_LOG_LEVEL="DEBUG")

    attempts = [line for line in from_distiller(lines) if line["message"] == "delivery attempt"]
    by_partner = {line["partnerId"]: line for line in attempts}
    assert len(attempts) == 2 and set(by_partner) == {"acme-motors", "globex"}, attempts
    for partner_id, outcome, level_ok in [("acme-motors", "delivered", "DEBUG"), ("globex", "dead-lettered", "INFO")]:
        line = by_partner[partner_id]
        assert line["level"] == level_ok
        assert line["service"] == "trigger-distiller"
        assert line["name"] == "distiller.deliver.dispatch"
        assert (line["eventId"], line["event"]) == (
            f"event-{partner_id}-{0 if partner_id == 'acme-motors' else 1}",
            "deal.completed",
        )
        assert (line["attempt"], line["redrive"], line["outcome"]) == (1, 0, outcome)
        assert isinstance(line["latencyMs"], int) and line["latencyMs"] >= 0
        assert {key: line[key] for key in LAMBDA_KEYS} == LAMBDA_KEYS
        assert line["xray_trace_id"] == TRACE_ROOT
    assert by_partner["acme-motors"]["statusCode"] == 200
    assert by_partner["globex"]["statusCode"] == 302

    # The warning is JSON too, with the same keys, and nothing comes out a second time as text.
    [dead] = [line for line in from_distiller(lines) if line["message"].startswith("dead-lettered")]
    assert (dead["level"], dead["partnerId"], dead["eventId"], dead["attempt"]) == (
        "WARNING",
        "globex",
        "event-globex-1",
        1,
    )
    assert dead["function_request_id"] == REQUEST_ID
    assert not [line for line in other if "dead-lettered" in line or "delivery attempt" in line], other

    # Ids only: never the payload, the secret, a signature or a URL's query string.
    for leak in (PAYLOAD_MARKER, SECRET, "sha256=", URL_KEY, REDIRECT_TOKEN):
        assert leak not in stdout, leak


def test_in_lambda_at_info_a_delivered_attempt_is_counted_in_the_batch_line_not_logged_alone():
    """The CloudWatch bill: one line per batch, and a line per attempt only for the ones not delivered."""
    lines, _, _ = run_lambda_scenario()

    attempts = [line for line in from_distiller(lines) if line["message"] == "delivery attempt"]
    assert [(line["partnerId"], line["outcome"], line["level"]) for line in attempts] == [
        ("globex", "dead-lettered", "INFO")
    ]
    [batch] = [line for line in lines if line["message"] == "dispatched batch"]
    assert batch["level"] == "INFO" and batch["function_request_id"] == REQUEST_ID
    assert (batch["messages"], batch["Delivered"], batch["DeadLettered"], batch["batchItemFailures"]) == (2, 1, 1, 0)


def test_in_lambda_a_parked_ingest_record_is_logged_as_json_with_its_ids_not_its_body():
    lines, other, stdout = run_lambda_scenario(POWERTOOLS_SERVICE_NAME="trigger-distiller-ingest")

    [parked] = [line for line in from_distiller(lines) if line["message"].startswith("parking record")]
    assert parked["level"] == "ERROR"
    assert parked["name"] == "distiller.ingest.batch"
    assert parked["service"] == "trigger-distiller-ingest"
    assert (parked["origin"], parked["messageId"], parked["source"], parked["outcome"]) == (
        "Records[0]",
        "poison-1",
        "sqs",
        "parked",
    )
    assert parked["receiveCount"] == 1 and parked["reason"]
    assert parked["function_request_id"] == REQUEST_ID
    assert not [line for line in other if "parking record" in line], other
    assert BODY_MARKER not in stdout


@pytest.mark.parametrize(
    ("variable", "level", "expected"),
    [
        pytest.param("POWERTOOLS_LOG_LEVEL", "WARNING", {"WARNING", "ERROR"}, id="powertools_log_level_warning"),
        pytest.param("LOG_LEVEL", "ERROR", {"ERROR"}, id="legacy_log_level_error"),
        pytest.param(
            "POWERTOOLS_LOG_LEVEL", "DEBUG", {"DEBUG", "INFO", "WARNING", "ERROR"}, id="powertools_log_level_debug"
        ),
    ],
)
def test_in_lambda_the_distiller_lines_follow_the_configured_log_level(variable, level, expected):
    lines, other, _ = run_lambda_scenario(**{variable: level})

    assert {line["level"] for line in from_distiller(lines)} == expected
    assert not [line for line in other if "dead-lettered" in line or "parking record" in line], other


def test_configure_logging_reaches_distiller_loggers_created_after_it(monkeypatch):
    """Unlike powertools' `copy_config_to_registered_loggers`, loggers made later are covered."""
    from distiller.observability import configure_logging

    stream = io.StringIO()
    source = Logger(service="issue12-late-loggers", stream=stream, level="INFO")
    package = logging.getLogger(PACKAGE_LOGGER)
    monkeypatch.setattr(package, "handlers", list(package.handlers))
    monkeypatch.setattr(package, "propagate", package.propagate)
    monkeypatch.setattr(package, "level", package.level)

    assert configure_logging(source) is package
    late = logging.getLogger("distiller.issue12.created_after_configure")
    late.info("late line", extra={"partnerId": "acme-motors", "eventId": "e-1"})
    source.append_keys(function_request_id=REQUEST_ID)  # what inject_lambda_context does per invocation
    late.warning("after the context")

    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["level"], first["message"], first["service"]) == ("INFO", "late line", "issue12-late-loggers")
    assert (first["name"], first["partnerId"], first["eventId"]) == (
        "distiller.issue12.created_after_configure",
        "acme-motors",
        "e-1",
    )
    assert (second["level"], second["function_request_id"]) == ("WARNING", REQUEST_ID)


def test_locally_the_attempt_line_is_plain_text_with_its_keys_and_visible_to_caplog(world, serve, caplog):
    server = serve(Reply(200, b'{"received":true}'))
    secret = world.add_partner("acme-motors", server.url())
    delivery: DeliveryMessage = message("acme-motors")

    with caplog.at_level(logging.DEBUG, logger=PACKAGE_LOGGER):
        assert world.dispatcher().dispatch_all([delivery]) == ["delivered"]

    package = logging.getLogger(PACKAGE_LOGGER)
    assert package.propagate and not package.handlers  # not in Lambda: nothing rewired
    [record] = [r for r in caplog.records if r.getMessage() == "delivery attempt"]
    assert record.levelno == logging.DEBUG and record.name == "distiller.deliver.dispatch"
    keys = ("partnerId", "eventId", "event", "attempt", "redrive", "outcome", "statusCode")
    assert {key: getattr(record, key) for key in keys} == {
        "partnerId": "acme-motors",
        "eventId": delivery.event_id,
        "event": "deal.completed",
        "attempt": 1,
        "redrive": 0,
        "outcome": "delivered",
        "statusCode": 200,
    }
    assert isinstance(record.latencyMs, int)
    text = caplog.text
    assert "delivery attempt" in text
    for line in text.splitlines():
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    for leak in (secret, "sha256=", "Škoda"):
        assert leak not in text and all(leak not in str(value) for value in vars(record).values())


def test_a_parked_record_is_logged_with_its_ids_not_its_body(caplog):
    poison = {
        "messageId": "poison-1",
        "body": f"not json {BODY_MARKER}",
        "attributes": {"ApproximateReceiveCount": "2"},
    }

    class Queue:
        def send(self, messages: Any) -> list[int]:
            return []

        def park(self, record: Any, reason: str, origin: str) -> bool:
            return True

    with caplog.at_level(logging.INFO, logger=PACKAGE_LOGGER):
        result = ingest(
            lambda_records({"Records": [poison]}), lookups=None, delivery_queue=Queue(), dead_letters=Queue()
        )  # type: ignore[arg-type]

    assert [origin for origin, _ in result.parked] == ["Records[0]"]
    [parked] = [r for r in caplog.records if r.getMessage().startswith("parking record")]
    assert (parked.levelno, parked.origin, parked.messageId, parked.source, parked.receiveCount, parked.outcome) == (
        logging.ERROR,
        "Records[0]",
        "poison-1",
        "sqs",
        2,
        "parked",
    )
    assert parked.reason
    assert BODY_MARKER not in caplog.text


def test_a_retried_record_is_a_warning_and_the_one_given_up_an_error_both_with_their_ids(caplog):
    event = json.loads((ROOT / "events" / "sqs_ingest_batch.json").read_text())
    first, last = (record["messageId"] for record in event["Records"])
    event["Records"][-1]["attributes"]["ApproximateReceiveCount"] = "5"  # its last receive

    class Unavailable:
        def __getattr__(self, name: str) -> Any:
            def unavailable(*args: Any, **kwargs: Any) -> Any:
                raise LookupFailure("partners: no servers")

            return unavailable

    class Queue:
        def send(self, messages: Any) -> list[int]:
            return []

        def park(self, record: Any, reason: str, origin: str) -> bool:
            return True

    with caplog.at_level(logging.INFO, logger=PACKAGE_LOGGER):
        result = ingest(lambda_records(event), Unavailable(), delivery_queue=Queue(), dead_letters=Queue())  # type: ignore[arg-type]

    assert result.retry == {0} and [origin for origin, _ in result.parked] == ["Records[1]"]
    lines = [
        (r.levelno, r.messageId, r.receiveCount, r.outcome)
        for r in caplog.records
        if r.name == "distiller.ingest.batch"
    ]
    assert lines == [(logging.WARNING, first, 1, "retry"), (logging.ERROR, last, 5, "parked")]
    bodies = [record["body"] for record in event["Records"]]
    assert all(body not in caplog.text for body in bodies)
