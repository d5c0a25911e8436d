"""Per-partner delivery metrics: what one batch's attempts add up to for each partner.

The dispatcher hands every logged attempt to a `PartnerTally` (partner, status, latency only:
never the URL, payload or response); the Dispatcher function then prints one EMF blob per partner
with the `partner` dimension, beside the batch's un-dimensioned totals. One blob per partner per
batch, not per attempt: counts are summed and the latencies travel as one list of values (EMF
takes up to 100 values per metric; powertools publishes a full list and starts a new one).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from distiller.deliver.log import DeliveryAttempt

PARTNER_DIMENSION = "partner"
STAGE_DIMENSION = "stage"
"""The stack's Stage (env STAGE): every stage shares the namespace and service name, and one
stage's dashboard must not chart another's partners."""
DELIVERED_METRIC = "Delivered"
"""Attempts the partner's endpoint accepted."""
FAILED_METRIC = "Failed"
"""Attempts made and not delivered (retried or dead-lettered); skipped and deferred ones are not attempts."""
DEAD_LETTERED_METRIC = "DeadLettered"
"""Deliveries that went to the dead-letter queue (each is also a Failed attempt, or a give-up)."""
HELD_METRIC = "Held"
"""Deliveries held for a paused partner (logged with status `held`, not sent)."""
SUCCESS_RATE_METRIC = "DeliverySuccessRate"
"""100 per delivered attempt, 0 per failed one: its Average over a period is the partner's success
rate in percent (CloudWatch cannot divide one SEARCH's series by another's, partner by partner)."""
LATENCY_METRIC = "DeliveryLatency"
"""Milliseconds per POST, one value per attempt that reached the sender."""
PARTNER_METRICS = (
    DELIVERED_METRIC,
    FAILED_METRIC,
    DEAD_LETTERED_METRIC,
    HELD_METRIC,
    SUCCESS_RATE_METRIC,
    LATENCY_METRIC,
)


@dataclass(slots=True)
class PartnerCounts:
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    held: int = 0
    latencies_ms: list[int] = field(default_factory=list)


class PartnerTally:
    """One batch's attempts per partner; `add` is called from the dispatcher's worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partners: dict[str, PartnerCounts] = {}

    def add(self, attempt: DeliveryAttempt) -> None:
        with self._lock:
            counts = self._partners.setdefault(attempt.partner_id, PartnerCounts())
            if attempt.status == "delivered":
                counts.delivered += 1
            elif attempt.status == "failed":
                counts.failed += 1
            elif attempt.status == "held":
                counts.held += 1
            counts.dead_lettered += attempt.dead_lettered
            if attempt.latency_ms is not None:
                counts.latencies_ms.append(attempt.latency_ms)

    def by_partner(self) -> Mapping[str, PartnerCounts]:
        with self._lock:
            return dict(self._partners)


def emit_partner_metrics(tally: PartnerTally, service: str, stage: str | None = None) -> int:
    """Print one EMF blob per partner (namespace from POWERTOOLS_METRICS_NAMESPACE); returns how many.

    Delivered and Failed go out for every partner with an attempt, so a success rate has both
    terms; DeadLettered and Held only when non-zero (a metric per partner costs money per month).
    """
    if is_metrics_disabled():
        return 0
    emitted = 0
    for partner_id, counts in sorted(tally.by_partner().items()):
        attempted = counts.delivered + counts.failed
        if not (attempted or counts.dead_lettered or counts.held):
            continue  # only skips: nothing to chart
        metrics = EphemeralMetrics(service=service)
        metrics.add_dimension(name=PARTNER_DIMENSION, value=partner_id)
        if stage:
            metrics.add_dimension(name=STAGE_DIMENSION, value=stage)
        if attempted:
            metrics.add_metric(name=DELIVERED_METRIC, unit=MetricUnit.Count, value=counts.delivered)
            metrics.add_metric(name=FAILED_METRIC, unit=MetricUnit.Count, value=counts.failed)
        if counts.dead_lettered:
            metrics.add_metric(name=DEAD_LETTERED_METRIC, unit=MetricUnit.Count, value=counts.dead_lettered)
        if counts.held:
            metrics.add_metric(name=HELD_METRIC, unit=MetricUnit.Count, value=counts.held)
        for success in (100,) * counts.delivered + (0,) * counts.failed:
            metrics.add_metric(name=SUCCESS_RATE_METRIC, unit=MetricUnit.Percent, value=success)
        for latency in counts.latencies_ms:
            metrics.add_metric(name=LATENCY_METRIC, unit=MetricUnit.Milliseconds, value=latency)
        if metrics.metric_set:  # empty when powertools just published a full list of 100 latencies
            metrics.flush_metrics()
        emitted += 1
    return emitted


def emit_stage_metric(name: str, value: float, service: str, stage: str | None = None) -> None:
    """One count with the dimensions service and stage only (no partner): what a stage's alarm
    watches, so one alarm covers every partner (the log line names which)."""
    if is_metrics_disabled() or not value:
        return
    metrics = EphemeralMetrics(service=service)
    if stage:
        metrics.add_dimension(name=STAGE_DIMENSION, value=stage)
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.flush_metrics()


__all__ = ["PARTNER_METRICS", "PartnerTally", "emit_partner_metrics", "emit_stage_metric"]
