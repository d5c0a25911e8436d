"""The Distiller function's logic: a Lambda batch of change events in, delivery messages queued.

One bad record never blocks or loses the others, and every record ends in exactly one of:
queued, retried by its source, or parked on the ingest dead-letter queue with its reason.
- A record that can never be distilled (unparseable, not a change event, its document gone,
  a payload too large with no claim-check bucket) is parked at once.
- A failure that may pass (the delivery queue or claim-check store refusing, a linked deal not
  visible yet, the database down) is retried by the source, but not forever: an SQS record is
  parked on its last receive (`maxReceiveCount`), a missing linked deal once it is older than
  `linked_deal_max_age_seconds`, so SQS never moves a record without a reason.
- DocumentDB batches have no per-record retry (a failure re-reads the whole batch, stalling the
  stream), so a record waiting for its linked deal is parked at once there; redriving it later
  sends it through the ingest queue. A database failure still fails the batch: nothing can be
  distilled until it is back.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from distiller.adapters.file_links import FileLinks
from distiller.adapters.queues import DeadLetters, MessageQueue, OutgoingMessage
from distiller.core.clock import iso_utc, utc_now
from distiller.core.lookups import LookupFailure, Lookups
from distiller.core.model import RecordError
from distiller.core.pipeline import ChangeOutcome, distill
from distiller.deliver.claim_check import PayloadStore, PayloadTooLarge, PayloadUnavailable
from distiller.deliver.message import DeliveryMessage
from distiller.ingest.sources import LambdaRecord
from distiller.settings import MAX_RECEIVE_COUNT

logger = logging.getLogger(__name__)


def _ids(record: LambdaRecord, reason: str) -> dict[str, object]:
    """A record's log keys: where it came from and why, never its body."""
    return {
        "origin": record.origin,
        "messageId": record.message_id,
        "source": record.source,
        "receiveCount": record.receive_count,
        "reason": reason,
    }


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a retried record stops being retried and is parked with its reason."""

    max_receive_count: int = MAX_RECEIVE_COUNT
    linked_deal_max_age_seconds: float = 3600.0


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
    payloads: PayloadStore | None = None,
    policy: RetryPolicy = RetryPolicy(),
) -> IngestResult:
    result = IngestResult(records=len(records))
    now = clock()

    def park(owner: int, reason: str) -> None:
        record = records[owner]
        logger.error(
            "parking record %s: %s", record.origin, reason, extra={**_ids(record, reason), "outcome": "parked"}
        )
        if dead_letters.park(record.raw, reason, record.origin):
            result.parked.append((record.origin, reason))
        else:
            result.retry.add(owner)

    def retry_or_park(owner: int, reason: str, *, waiting_for_data: bool = False) -> None:
        record = records[owner]
        if record.source == "docdb" and waiting_for_data:
            park(owner, f"{reason}; parked at once, since a DocumentDB stream cannot retry one record alone")
            return
        if record.source == "sqs":
            age = (now - record.first_sent_at).total_seconds() if record.first_sent_at else None
            last = record.receive_count is not None and record.receive_count >= policy.max_receive_count
            too_old = waiting_for_data and age is not None and age >= policy.linked_deal_max_age_seconds
            if last or too_old:
                waited = f"{age:.0f}s" if age is not None else "an unknown time"
                park(owner, f"{reason} (gave up after {waited} and {record.receive_count} receive(s))")
                return
        logger.warning(  # it comes back; parked (ERROR) once its retries run out
            "retrying record %s: %s", record.origin, reason, extra={**_ids(record, reason), "outcome": "retry"}
        )
        result.retry.add(owner)

    owners: list[int] = []
    items = []
    for index, record in enumerate(records):
        owners.extend([index] * len(record.items))
        items.extend(record.items)
    try:
        outcomes = distill(items, lookups, file_links=file_links)
    except LookupFailure as exc:
        if all(record.source != "sqs" for record in records):
            raise  # the source retries the whole batch; it cannot count or park one record
        for index in range(len(records)):
            retry_or_park(index, f"database unavailable: {exc}")
        return result

    errors: dict[int, list[RecordError]] = {}
    transient: dict[int, str] = {}
    messages: list[OutgoingMessage] = []
    message_owner: list[int] = []
    emitted_at = iso_utc(now)
    for owner, outcome in zip(owners, outcomes, strict=True):
        if isinstance(outcome, RecordError):
            errors.setdefault(owner, []).append(outcome)
            continue
        assert isinstance(outcome, ChangeOutcome)
        result.change_events += 1
        for delivery in outcome.deliveries:
            try:
                message = DeliveryMessage.from_delivery(delivery, emitted_at).claim_checked(payloads)
            except PayloadTooLarge as exc:
                where = f"{delivery.event} for {delivery.partner_id}"
                errors.setdefault(owner, []).append(RecordError(records[owner].origin, f"{where}: {exc}"))
                continue
            except PayloadUnavailable as exc:
                transient[owner] = str(exc)
                continue
            messages.append(OutgoingMessage(message.to_body()))
            message_owner.append(owner)

    failed = delivery_queue.send(messages)
    for index in failed:
        transient.setdefault(message_owner[index], "its deliveries could not be put on the delivery queue")
    result.deliveries = len(messages) - len(failed)

    for owner, record_errors in errors.items():
        origin = records[owner].origin
        reason = "; ".join(e.reason if e.origin == origin else str(e) for e in record_errors)
        if any(e.retryable for e in record_errors):
            # e.g. a document whose deal is not visible yet: retried, within bounds
            retry_or_park(owner, reason, waiting_for_data=True)
        else:
            park(owner, reason)
    for owner, reason in transient.items():
        if owner not in errors:
            retry_or_park(owner, reason)
    return result
