"""Relay function: every minute, forward the source collections' change stream to the ingest queue.

Thin by design: the flow is `distiller.relay.handler`; this builds the runtime once per
container and runs the relay for the invocation's time.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from distiller.runtime import RelayRuntime, handle_relay, logger, metrics, tracer

_runtime: RelayRuntime | None = None


def get_runtime() -> RelayRuntime:
    """Built on first use, so a cold start pays once and tests can hand in their own."""
    global _runtime
    if _runtime is None:
        _runtime = RelayRuntime.from_env()
    return _runtime


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_relay(event, context, get_runtime())
