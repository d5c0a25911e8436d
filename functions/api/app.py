"""Partner API function: API Gateway (REST) in, /data responses out.

Thin by design: the routes live in the layer (`distiller.api.routes`); this builds the runtime
once per container from settings and hands each event to the resolver.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from distiller.runtime import ApiRuntime, api_runtime_from_env, app, logger, tracer, use_runtime

_runtime: ApiRuntime | None = None


def get_runtime() -> ApiRuntime:
    """Built on first use, so a cold start pays once and tests can hand in their own."""
    global _runtime
    if _runtime is None:
        _runtime = api_runtime_from_env()
    return _runtime


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    use_runtime(get_runtime())
    return app.resolve(event, context)
