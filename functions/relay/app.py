"""Relay function: every minute, forward the source collections' change stream to the ingest queue.

Thin by design: the `Relay` reads for at most RELAY_MAX_SECONDS (and never past the invocation's
own time), sends changes in order, checkpoints what SQS accepted and returns the counts. A change
too big for SQS is parked on the ingest dead-letter queue (INGEST_DLQ_URL) and counted as
`RelayParkedChanges`. A lost or invalidated stream position, a missing checkpoint without
RELAY_START_AT, or an oversize change that could not be parked fails the invocation loudly: it
never restarts from "now" on its own.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from distiller.observability import logger, metrics, tracer
from distiller.relay.loop import RelayError, RelayResult, RelayRuntime

#: Seconds kept back from the invocation's remaining time for the final send and checkpoint.
SAFETY_MARGIN_SECONDS = 8.0

_runtime: RelayRuntime | None = None


def get_runtime() -> RelayRuntime:
    """Built on first use, so a cold start pays once and tests can hand in their own."""
    global _runtime
    if _runtime is None:
        _runtime = RelayRuntime.from_env()
    return _runtime


def _record(result: RelayResult | None) -> None:
    if result is None:
        return
    metrics.add_metric(name="RelayedChanges", unit=MetricUnit.Count, value=result.sent)
    metrics.add_metric(name="RelayParkedChanges", unit=MetricUnit.Count, value=result.parked)
    metrics.add_metric(
        name="RelayUnsentChanges", unit=MetricUnit.Count, value=result.read - result.sent - result.parked
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    runtime = get_runtime()
    remaining = context.get_remaining_time_in_millis() / 1000 - SAFETY_MARGIN_SECONDS
    max_seconds = max(min(runtime.max_seconds, remaining), 0.0)
    try:
        result = runtime.relay.run(max_seconds=max_seconds)
    except RelayError as exc:
        _record(exc.result)
        metrics.add_metric(name="RelayErrors", unit=MetricUnit.Count, value=1)
        logger.exception("relay stopped", extra={"token": exc.token, "relay": runtime.relay.name})
        raise
    _record(result)
    logger.info("relay run", extra=result.to_json())
    return result.to_json()
