"""Distiller function: a batch of change events (any ingest shape) in, partner deliveries out.

Thin by design: parse the event, call the pipeline, shape the response. Until the delivery
queue lands (issue 4) the deliveries are returned, which makes `sam local invoke` a dry run.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from distiller.lookups import Lookups
from distiller.model import RecordError
from distiller.mongo import connect_lookups
from distiller.observability import logger, metrics, tracer
from distiller.pipeline import deliveries_of, distill
from distiller.settings import MongoSettings
from distiller.sources import change_events_from

_lookups: Lookups | None = None


def get_lookups() -> Lookups:
    """Built on first use, so a cold start pays once and tests can hand in a fake."""
    global _lookups
    if _lookups is None:
        _lookups = connect_lookups(MongoSettings.from_env())
    return _lookups


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    results = distill(change_events_from(event, origin="event", decoded=False), get_lookups())
    errors = [r for r in results if isinstance(r, RecordError)]
    deliveries = deliveries_of(results)
    for error in errors:
        logger.error("record not distilled", extra={"origin": error.origin, "reason": error.reason})
    metrics.add_metric(name="ChangeEvents", unit=MetricUnit.Count, value=len(results))
    metrics.add_metric(name="Deliveries", unit=MetricUnit.Count, value=len(deliveries))
    metrics.add_metric(name="RecordErrors", unit=MetricUnit.Count, value=len(errors))
    return {
        "deliveries": [d.to_json() for d in deliveries],
        "errors": [{"origin": e.origin, "reason": e.reason} for e in errors],
    }
