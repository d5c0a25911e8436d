"""The one Logger, Tracer and Metrics every function imports (service name and namespace from env).

Tracing never captures partner data: handlers use
`@tracer.capture_lambda_handler(capture_response=False, capture_error=False)` (powertools' default
puts the response, e.g. partner DTOs and signed S3 links, and the exception into X-Ray metadata),
and template.yaml sets POWERTOOLS_TRACER_CAPTURE_RESPONSE/ERROR to "false" for anything else.

Logging: the domain modules log through plain `logging.getLogger(__name__)` (`distiller.*`).
In Lambda the runtime puts one text handler on the root logger and leaves the root at WARNING
(unless the function's log level is set in its logging config), so without more those INFO lines
(one per delivery attempt) would be dropped and the rest would be unstructured text.
`configure_logging` makes the `distiller` package logger write through this module's powertools
Logger: its handler, its JSON formatter and its level, with `propagate` off (no second, text copy
through the root handler). Every `distiller.x.y` logger, whenever created, propagates to it, so
each line carries `service`, the Lambda context keys `@logger.inject_lambda_context` appends to
the shared formatter (`function_request_id`, `function_name`, `cold_start`, ...), `xray_trace_id`,
the logger's `name` and the record's own `extra` keys (`partnerId`, `eventId`, ...).

It runs at import only in Lambda (`AWS_LAMBDA_FUNCTION_NAME` is set, as by `sam local` too).
Locally (CLI, tests, the local pipeline) `distiller.*` records keep propagating to the root
logger: plain text wherever the caller configured logging, and visible to pytest's caplog.
"""

from __future__ import annotations

import logging
import os

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME") or "trigger-distiller"
PACKAGE_LOGGER = "distiller"
"""The logger every `distiller.*` module logger propagates to."""

logger = Logger(service=SERVICE_NAME)
"""Level: AWS_LAMBDA_LOG_LEVEL (the function's logging config), else POWERTOOLS_LOG_LEVEL or
LOG_LEVEL, else INFO (powertools' own precedence)."""
tracer = Tracer()
metrics = Metrics()


def in_lambda() -> bool:
    """True inside a Lambda execution environment (or `sam local`), which sets this variable."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def configure_logging(source: Logger = logger) -> logging.Logger:
    """Send every `distiller.*` log record through `source`'s handler (JSON) at its level.

    Idempotent. Returns the package logger. Not
    `aws_lambda_powertools.logging.utils.copy_config_to_registered_loggers`: that only reaches
    top-level loggers already registered when it is called, and none may be yet when this module
    is imported; configuring the package logger itself covers every child, created at any time.
    """
    package = logging.getLogger(PACKAGE_LOGGER)
    package.handlers = list(source.handlers)  # the same handler objects: one stream, one formatter
    package.setLevel(source.log_level)
    package.propagate = False  # the root's text handler would print each line a second time
    source.append_keys(name="%(name)s")  # which module logged (`distiller.deliver.dispatch`)
    return package


if in_lambda():
    configure_logging()
