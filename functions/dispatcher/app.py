"""Dispatcher function: signed webhook POSTs for a batch from the delivery or retry queue.

Thin by design: the flow is `distiller.deliver.handler`; this builds the runtime once per
container and hands each batch to it.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from distiller.runtime import DispatcherRuntime, handle_deliveries, logger, metrics, tracer

_runtime: DispatcherRuntime | None = None


def get_runtime() -> DispatcherRuntime:
    """Built on first use, so a cold start pays once and tests can hand in their own."""
    global _runtime
    if _runtime is None:
        _runtime = DispatcherRuntime.from_env()
    return _runtime


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_deliveries(event, context, get_runtime())
