"""SQS partial batch responses for handlers that decide per record before answering.

Both functions do their work for the whole batch first (one lookup per collection, concurrent
POSTs) and then know which messages must come back; powertools' `BatchProcessor` turns that
into the `batchItemFailures` answer (and fails the invocation when every record failed).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext


def receive_count(record: Any) -> int:
    """How many times SQS has handed out this record (`attributes.ApproximateReceiveCount`; 1 if absent)."""
    attributes = record.get("attributes") if isinstance(record, dict) else None
    try:
        return int((attributes or {}).get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        return 1


class RetryLater(RuntimeError):
    """The record's work could not be finished; its source delivers it again."""


def partial_batch_response(event: dict[str, Any], retry: set[str], context: LambdaContext) -> dict[str, Any]:
    """`{"batchItemFailures": [...]}` listing exactly the messages in `retry`."""

    def record_handler(record: SQSRecord) -> None:
        if record.message_id in retry:
            raise RetryLater(f"message {record.message_id} will be retried")

    return process_partial_response(
        event=event, record_handler=record_handler, processor=BatchProcessor(EventType.SQS), context=context
    )
