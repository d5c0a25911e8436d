"""The Distiller function's logic: a Lambda batch of change events in, delivery messages queued.

One bad record never blocks or loses the others. A record that can never be distilled
(unparseable, not a change event, its document gone) is parked on the ingest dead-letter
queue with its reason. A failure that may pass (the delivery queue refusing a send, the park
itself failing) marks only that record for retry; a database failure (`LookupFailure`) fails
the whole batch, which the source then retries.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from distiller.delivery import DeliveryMessage
from distiller.ejson import iso_utc, utc_now
from distiller.file_links import FileLinks
from distiller.lookups import Lookups
from distiller.model import RecordError
from distiller.pipeline import ChangeOutcome, distill
from distiller.queues import DeadLetters, MessageQueue, OutgoingMessage
from distiller.sources import LambdaRecord

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class IngestResult:
    records: int = 0
    change_events: int = 0
    deliveries: int = 0
    parked: list[tuple[str, str]] = field(default_factory=list)
    """(origin, reason) of every record put on the ingest dead-letter queue."""
    retry: set[int] = field(default_factory=set)
    """Indices of records to retry: their deliveries (or their parking) could not be queued."""


def ingest(
    records: list[LambdaRecord],
    lookups: Lookups,
    delivery_queue: MessageQueue,
    dead_letters: DeadLetters,
    clock: Callable[[], dt.datetime] = utc_now,
    file_links: FileLinks | None = None,
) -> IngestResult:
    result = IngestResult(records=len(records))
    owners: list[int] = []
    items = []
    for index, record in enumerate(records):
        owners.extend([index] * len(record.items))
        items.extend(record.items)
    # LookupFailure propagates: the whole batch is retried
    outcomes = distill(items, lookups, file_links=file_links)

    errors: dict[int, list[RecordError]] = {}
    messages: list[OutgoingMessage] = []
    message_owner: list[int] = []
    emitted_at = iso_utc(clock())
    for owner, outcome in zip(owners, outcomes, strict=True):
        if isinstance(outcome, RecordError):
            errors.setdefault(owner, []).append(outcome)
            continue
        assert isinstance(outcome, ChangeOutcome)
        result.change_events += 1
        for delivery in outcome.deliveries:
            messages.append(OutgoingMessage(DeliveryMessage.from_delivery(delivery, emitted_at).to_body()))
            message_owner.append(owner)

    for owner, record_errors in errors.items():
        origin = records[owner].origin
        if any(e.retryable for e in record_errors):
            # e.g. a document whose deal is not visible yet: retried like a lookup failure
            logger.error("retrying record %s: %s", origin, "; ".join(str(e) for e in record_errors))
            result.retry.add(owner)
            continue
        reason = "; ".join(e.reason if e.origin == origin else str(e) for e in record_errors)
        logger.error("parking record %s: %s", records[owner].origin, reason)
        if dead_letters.park(records[owner].raw, reason, records[owner].origin):
            result.parked.append((records[owner].origin, reason))
        else:
            result.retry.add(owner)

    failed = delivery_queue.send(messages)
    for index in failed:
        result.retry.add(message_owner[index])
    result.deliveries = len(messages) - len(failed)
    return result
