"""A delivery-level replay: change events distilled here, and only the deliveries a filter picks re-sent.

`distiller replay` without filters re-emits *change events* to the ingest queue, and the
Distiller then delivers them to every subscribed partner. Picking a partner or an event needs
the deliveries themselves, so `DeliveryReplay` is the replay's sink instead: each batch of
changes goes through the same `distill` the Distiller runs (partners and linked entities from
the same database), and the deliveries that match go to the delivery queue (or stdout as JSON
Lines) with their original eventIds, in a new round of attempts (as the partner API's replay:
the replay's time in epoch seconds), so they are POSTed even if they were delivered before.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import IO

from distiller.adapters.file_links import FileLinks
from distiller.adapters.queues import MessageQueue, OutgoingMessage
from distiller.core.clock import iso_utc
from distiller.core.lookups import Lookups
from distiller.core.model import RecordError
from distiller.core.pipeline import ChangeOutcome, distill
from distiller.deliver.claim_check import PayloadStore, PayloadTooLarge, PayloadUnavailable
from distiller.deliver.message import DeliveryMessage
from distiller.ingest.sources import change_events_in_text
from distiller_tools.ops.dlq_filter import DeliveryFilter

MAX_PROBLEMS = 50


@dataclass(slots=True)
class DeliveryReplay:
    """A `MessageQueue` for `relay.replay.replay`: takes serialised changes, sends the matching deliveries.

    `out` None with `dry_run` False: the deliveries are written to `lines` as JSON Lines. A
    delivery the queue refuses fails its change (the replay then stops and says where to resume).
    """

    lookups: Lookups
    only: DeliveryFilter
    now: dt.datetime
    out: MessageQueue | None = None
    lines: IO[str] | None = None
    dry_run: bool = False
    payloads: PayloadStore | None = None
    file_links: FileLinks | None = None
    """Signs document links as the Distiller does; without it a delivery carrying documents is not sent."""
    changes: int = 0
    sent: int = 0
    not_matching: int = 0
    groups: Counter[tuple[str | None, str | None]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def send(self, messages: Sequence[OutgoingMessage]) -> list[int]:
        items, owners = [], []
        for index, message in enumerate(messages):
            for item in change_events_in_text(message.body, f"change[{self.changes + index}]"):
                items.append(item)
                owners.append(index)
        self.changes += len(messages)
        outgoing: list[tuple[int, DeliveryMessage]] = []
        for owner, outcome in zip(owners, distill(items, self.lookups, file_links=self.file_links), strict=True):
            if isinstance(outcome, RecordError):
                self._problem(str(outcome))
                continue
            assert isinstance(outcome, ChangeOutcome)
            for delivery in outcome.deliveries:
                if not self.only.matches_delivery(delivery.partner_id, delivery.event):
                    self.not_matching += 1
                    continue
                if self.file_links is None and not self.dry_run and delivery.payload.get("documents"):
                    # unsigned links (null signedUrl) would reach the partner under the original eventId
                    self._problem(
                        f"{delivery.event} for {delivery.partner_id} ({delivery.event_id}) carries documents: "
                        "not sent without --documents-bucket"
                    )
                    continue
                self.groups[(delivery.partner_id, delivery.event)] += 1
                message = DeliveryMessage.from_delivery(delivery, iso_utc(self.now))
                outgoing.append((owner, _new_round(message, self.now)))
        if self.dry_run or not outgoing:
            return []
        if self.out is None:
            assert self.lines is not None
            self.lines.write("".join(m.to_body() + "\n" for _, m in outgoing))
            self.lines.flush()
            self.sent += len(outgoing)
            return []
        return self._queue(outgoing)

    def _queue(self, outgoing: list[tuple[int, DeliveryMessage]]) -> list[int]:
        assert self.out is not None
        bodies, owners, failed_changes = [], [], set()
        for owner, message in outgoing:
            try:
                bodies.append(OutgoingMessage(message.claim_checked(self.payloads).to_body()))
                owners.append(owner)
            except (PayloadTooLarge, PayloadUnavailable) as exc:
                self._problem(f"{message.event} {message.event_id} for {message.partner_id}: {exc}")
                failed_changes.add(owner)
        failed = self.out.send(bodies)
        self.sent += len(bodies) - len(failed)
        failed_changes.update(owners[i] for i in failed)
        return sorted(failed_changes)

    def _problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


def _new_round(message: DeliveryMessage, now: dt.datetime) -> DeliveryMessage:
    return replace(message, redrive=int(now.timestamp()))


__all__ = ["DeliveryReplay"]
