"""The Dispatcher function's flow: signed webhook POSTs for a batch from the delivery or retry queue.

Parse each message, call the dispatcher, report partial batch failures for the messages whose
queue or log step failed (they are retried; POSTed ones are not re-POSTed thanks to the delivery
log). A message that is not a delivery is dead-lettered with its reason; so is one that failed on
its last receive, rather than being moved by SQS without a reason. Metrics: the batch's outcome
totals and one blob per partner (`distiller.deliver.partner_metrics`; off with `PARTNER_METRICS=false`).
PartnerPaused is printed by `report_pause` the moment the Dispatcher pauses a partner.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from distiller.adapters.sqs_batch import partial_batch_response, receive_count
from distiller.deliver.health import PAUSED_METRIC
from distiller.deliver.message import DeliveryMessage, DeliveryMessageError
from distiller.deliver.partner_metrics import (
    DEAD_LETTERED_METRIC,
    DELIVERED_METRIC,
    FAILED_METRIC,
    HELD_METRIC,
    LATENCY_METRIC,
    PARTNER_DIMENSION,
    PARTNER_METRICS,
    STAGE_DIMENSION,
    SUCCESS_RATE_METRIC,
    PartnerTally,
    emit_partner_metrics,
    emit_stage_metric,
)
from distiller.observability import SERVICE_NAME, logger, metrics

if TYPE_CHECKING:
    from distiller.runtime import DispatcherRuntime

OUTCOME_METRICS = {
    "delivered": "Delivered",
    "skipped": "Skipped",
    "retry-scheduled": "RetryScheduled",
    "dead-lettered": "DeadLettered",
    "deferred": "Deferred",
    "held": "Held",
}


def report_pause(partner_id: str) -> None:
    """The Dispatcher's `on_pause`: one PartnerPaused count (service and stage: the alarm's dimensions),
    printed at once, so an invocation that dies after pausing still raises the alarm."""
    emit_stage_metric(PAUSED_METRIC, 1, SERVICE_NAME, os.environ.get("STAGE"))


def handle_deliveries(event: dict[str, Any], context: LambdaContext, runtime: DispatcherRuntime) -> dict[str, Any]:
    records = event.get("Records") or []
    messages: list[DeliveryMessage] = []
    ids: list[str] = []
    final: list[bool] = []
    retry: set[str] = set()
    for record in records:
        try:
            messages.append(DeliveryMessage.from_body(record.get("body")))
            ids.append(record["messageId"])
            final.append(receive_count(record) >= runtime.max_receive_count)
        except DeliveryMessageError as exc:
            logger.error("not a delivery message", extra={"messageId": record.get("messageId"), "reason": str(exc)})
            if not runtime.dead_letters.park(record.get("body"), f"not a delivery message: {exc}", record["messageId"]):
                retry.add(record["messageId"])

    tally = PartnerTally()
    outcomes = runtime.dispatcher.dispatch_all(
        messages, remaining_seconds=context.get_remaining_time_in_millis() / 1000, final_receive=final, tally=tally
    )
    counts: Counter[str] = Counter()
    for message_id, outcome in zip(ids, outcomes, strict=True):
        if isinstance(outcome, Exception):
            logger.error("dispatch will be retried", extra={"messageId": message_id, "reason": str(outcome)})
            retry.add(message_id)
        else:
            counts[OUTCOME_METRICS[outcome]] += 1
    for name, count in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=count)
    if runtime.partner_metrics:
        emit_partner_metrics(tally, SERVICE_NAME, os.environ.get("STAGE"))
    # One line per batch at INFO; the attempts' own lines are DEBUG when delivered.
    logger.info("dispatched batch", extra={"messages": len(records), **counts, "batchItemFailures": len(retry)})
    return partial_batch_response(event, retry, context)


__all__ = [
    "DEAD_LETTERED_METRIC",
    "DELIVERED_METRIC",
    "FAILED_METRIC",
    "HELD_METRIC",
    "LATENCY_METRIC",
    "OUTCOME_METRICS",
    "PARTNER_DIMENSION",
    "PARTNER_METRICS",
    "STAGE_DIMENSION",
    "SUCCESS_RATE_METRIC",
    "handle_deliveries",
    "report_pause",
]
