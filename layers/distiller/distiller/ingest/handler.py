"""The Distiller function's flow: a batch of change events (any ingest shape) in, delivery messages queued.

Split the event into records, call `ingest`, shape the response. SQS batches answer with
partial batch failures; DocumentDB and EventBridge, which have none, park bad records on the
ingest dead-letter queue and fail the invocation only for what may pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from distiller.adapters.sqs_batch import RetryLater, partial_batch_response
from distiller.core.pipeline import collector_paused
from distiller.ingest.batch import ingest
from distiller.ingest.sources import lambda_records
from distiller.observability import metrics

if TYPE_CHECKING:
    from distiller.runtime import DistillerRuntime


def handle_ingest(event: dict[str, Any], context: LambdaContext, runtime: DistillerRuntime) -> dict[str, Any]:
    with collector_paused():  # parsing and distilling one batch: see `collector_paused`
        records = lambda_records(event)
        result = ingest(
            records,
            runtime.lookups,
            runtime.delivery_queue,
            runtime.ingest_dead_letters,
            file_links=runtime.file_links,
            payloads=runtime.payloads,
            policy=runtime.retry_policy,
        )

    metrics.add_metric(name="ChangeEvents", unit=MetricUnit.Count, value=result.change_events)
    metrics.add_metric(name="Deliveries", unit=MetricUnit.Count, value=result.deliveries)
    metrics.add_metric(name="ParkedRecords", unit=MetricUnit.Count, value=len(result.parked))
    metrics.add_metric(name="RetriedRecords", unit=MetricUnit.Count, value=len(result.retry))

    if isinstance(event.get("Records"), list):
        return partial_batch_response(event, {str(records[i].message_id) for i in result.retry}, context)
    if result.retry:
        raise RetryLater(f"{len(result.retry)} record(s) could not be queued; the batch will be retried")
    return {
        "records": result.records,
        "changeEvents": result.change_events,
        "deliveries": result.deliveries,
        "parked": [{"origin": origin, "reason": reason} for origin, reason in result.parked],
    }
