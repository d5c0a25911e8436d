"""The one Logger, Tracer and Metrics every function imports (service name and namespace from env).

Tracing never captures partner data: handlers use
`@tracer.capture_lambda_handler(capture_response=False, capture_error=False)` (powertools' default
puts the response, e.g. partner DTOs and signed S3 links, and the exception into X-Ray metadata),
and template.yaml sets POWERTOOLS_TRACER_CAPTURE_RESPONSE/ERROR to "false" for anything else.
"""

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics()
