"""Distiller function: a batch of change events (any ingest shape) in, delivery messages queued.

Thin by design: the flow is `distiller.ingest.handler`; this builds the runtime once per
container and hands each event to it.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from distiller.runtime import DistillerRuntime, handle_ingest, logger, metrics, tracer

_runtime: DistillerRuntime | None = None


def get_runtime() -> DistillerRuntime:
    """Built on first use, so a cold start pays once and tests can hand in their own."""
    global _runtime
    if _runtime is None:
        _runtime = DistillerRuntime.from_env()
    return _runtime


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_ingest(event, context, get_runtime())
