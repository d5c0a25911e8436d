"""Health sweep function (every minute): probe paused partners, resume them, drain held deliveries.

Thin by design: the flow is `distiller.deliver.health_handler`; this builds the runtime once per
container and runs one sweep per schedule event.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from distiller.runtime import HealthRuntime, handle_health_sweep, logger, metrics, tracer

_runtime: HealthRuntime | None = None


def get_runtime() -> HealthRuntime:
    """Built on first use, so a cold start pays once and tests can hand in their own."""
    global _runtime
    if _runtime is None:
        _runtime = HealthRuntime.from_env()
    return _runtime


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_health_sweep(event, context, get_runtime())
