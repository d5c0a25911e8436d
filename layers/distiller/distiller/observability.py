"""The one Logger, Tracer and Metrics every function imports (service name and namespace from env)."""

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics()
