"""The Relay function's flow: forward the source collections' change stream to the ingest queue.

The `Relay` reads for at most RELAY_MAX_SECONDS (and never past the invocation's own time), sends
changes in order, checkpoints what SQS accepted and returns the counts. A change too big for SQS
is parked on the ingest dead-letter queue (INGEST_DLQ_URL) and counted as `RelayParkedChanges`.
A lost or invalidated stream position, a missing checkpoint without RELAY_START_AT, or an
oversize change that could not be parked fails the invocation loudly: it never restarts from
"now" on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from distiller.observability import logger, metrics
from distiller.relay.loop import RelayResult
from distiller.relay.stream import RelayError

if TYPE_CHECKING:
    from distiller.runtime import RelayRuntime

SAFETY_MARGIN_SECONDS = 8.0
"""Seconds kept back from the invocation's remaining time for the final send and checkpoint."""


def _record(result: RelayResult | None) -> None:
    if result is None:
        return
    metrics.add_metric(name="RelayedChanges", unit=MetricUnit.Count, value=result.sent)
    metrics.add_metric(name="RelayParkedChanges", unit=MetricUnit.Count, value=result.parked)
    metrics.add_metric(
        name="RelayUnsentChanges", unit=MetricUnit.Count, value=result.read - result.sent - result.parked
    )


def handle_relay(event: dict[str, Any], context: LambdaContext, runtime: RelayRuntime) -> dict[str, Any]:
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
