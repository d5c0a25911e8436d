"""The health sweep function's flow (a schedule event, every minute): run the sweep, report it.

Metrics: PartnerResumed (service and stage: one count per partner resumed). The log line lists
the deliveries still held per paused partner.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from distiller.deliver.health import RESUMED_METRIC
from distiller.deliver.partner_metrics import emit_stage_metric
from distiller.deliver.sweep import SweepFailed
from distiller.observability import SERVICE_NAME, logger

if TYPE_CHECKING:
    from distiller.runtime import HealthRuntime


def handle_health_sweep(event: dict[str, Any], context: LambdaContext, runtime: HealthRuntime) -> dict[str, Any]:
    report = runtime.sweep.run(remaining_seconds=context.get_remaining_time_in_millis() / 1000)
    emit_stage_metric(RESUMED_METRIC, len(report.resumed), SERVICE_NAME, os.environ.get("STAGE"))
    summary = {
        "probes": report.probes,
        "resumed": report.resumed,
        "drained": report.drained,
        "alreadyDelivered": report.already_delivered,
        "expired": report.expired,
        "stillHeld": report.still_held,
        "errors": report.errors,
    }
    logger.info("health sweep", extra=summary)
    if report.errors:  # the others were swept; the invocation fails so the errors alarm says so
        raise SweepFailed("; ".join(f"{who}: {why}" for who, why in sorted(report.errors.items())))
    return summary


__all__ = ["handle_health_sweep"]
