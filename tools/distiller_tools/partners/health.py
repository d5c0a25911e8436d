"""Endpoint health as an operator sees it: a partner's pause, its held deliveries, a drain now.

The Dispatcher pauses a partner (record `state: "paused"` plus a `health` sub-document) and holds
its deliveries in `held_deliveries`; the health sweep probes, resumes and drains every minute
(`distiller.deliver.sweep`). `partners enable` resumes at once; `--drain-now` drains through the
sweep's own `drain`, so the order (oldest first), the resume round (a fresh retry schedule, the
original eventId) and the skipping of deliveries the log shows delivered are the sweep's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distiller.core.clock import iso_utc
from distiller.deliver.health import HELD_COLLECTION, PAUSED_STATE, PausePolicy
from distiller.deliver.log import DELIVERIES_COLLECTION, as_utc
from distiller.deliver.message import DeliveryMessage

if TYPE_CHECKING:
    from distiller.adapters.queues import MessageQueue, OutgoingMessage

RESUMED_BY = "partners enable"
"""`health.resumedBy` when an operator resumed the partner (the sweep writes how its probe did)."""
SWEEP_NOTE = "the health sweep (HealthFunction, every minute) drains them within a minute, oldest first"
NO_HELD_STORE = "the partners file keeps no held deliveries (only the deployed stack holds them)"
SHOWN_EVENT_IDS = 20
"""EventIds a drain lists by name; more are counted."""


def is_paused(record: Mapping[str, Any]) -> bool:
    return record.get("state") == PAUSED_STATE


def _health(record: Mapping[str, Any]) -> Mapping[str, Any]:
    health = record.get("health")
    return health if isinstance(health, Mapping) else {}


def instant_text(value: Any) -> str | None:
    """A stored instant as the spec prints them: a Mongo datetime, or the text a file record holds."""
    if isinstance(value, dt.datetime):
        return iso_utc(as_utc(value))
    return value if isinstance(value, str) and value else None


def state_label(record: Mapping[str, Any]) -> str:
    """`paused` (whatever `active` says: enabling resumes it), else `active` or `inactive`."""
    if is_paused(record):
        return PAUSED_STATE
    return "inactive" if record.get("active") is False else "active"


def pause_note(record: Mapping[str, Any]) -> str:
    """One line: since when and why a partner is paused, and its last probe."""
    health = _health(record)
    since = instant_text(health.get("pausedAt")) or "an unknown time"
    probe = instant_text(health.get("lastProbeAt"))
    probed = f"last probe {probe}" if probe else "not probed yet"
    if probe and health.get("probeError"):
        probed += f" ({' '.join(str(health['probeError']).split())})"
    return f"paused since {since}: {health.get('reason') or 'no reason recorded'}; {probed}"


def held_text(held: int | None) -> str:
    return NO_HELD_STORE if held is None else f"{held} deliver{'y' if held == 1 else 'ies'} held"


def status_lines(record: Mapping[str, Any], held: int | None) -> list[str]:
    """What `partners show` adds below the record: the pause state and the held deliveries."""
    partner_id = record.get("partnerId")
    health = _health(record)
    if is_paused(record):
        state = f"state: {pause_note(record)}; deliveries are held, not sent"
        why = f"`distiller partners enable {partner_id}` resumes at once; a delivered probe resumes it on its own"
    else:
        state = f"state: {state_label(record)}"
        resumed = instant_text(health.get("resumedAt"))
        if resumed:
            state += f" (resumed {resumed} by {health.get('resumedBy') or 'an unknown hand'})"
        inactive = record.get("active") is False
        why = f"kept until `distiller partners enable {partner_id}`" if inactive else SWEEP_NOTE
    if held is None:
        return [state, f"held: {NO_HELD_STORE}"]
    return [state, f"held: {held_text(held)}" + (f" ({why})" if held else "")]


def resume_changes(record: Mapping[str, Any], at: dt.datetime) -> dict[str, Any]:
    """The record changes that resume a paused partner now (None removes `state`: absent is active)."""
    if not is_paused(record):
        return {}
    return {"state": None, "health": {**_health(record), "resumedAt": at, "resumedBy": RESUMED_BY}}


@dataclass(slots=True)
class Drained:
    """What `enable --drain-now` put back on the delivery queue, and what is left."""

    event_ids: list[str] = field(default_factory=list)
    already_delivered: int = 0
    still_held: int = 0


class _Recorded:
    """The delivery queue, noting the eventId of each message it accepted (the drain's report counts
    them; the operator is shown which)."""

    def __init__(self, queue: MessageQueue, into: list[str]) -> None:
        self._queue = queue
        self._into = into

    def send(self, messages: Sequence[OutgoingMessage]) -> list[int]:
        failed = self._queue.send(messages)
        refused = set(failed)
        self._into += [DeliveryMessage.from_body(m.body).event_id for i, m in enumerate(messages) if i not in refused]
        return failed


class _NoDeadLetters:
    """A drain dead-letters nothing (only the sweep's retention expiry does)."""

    def send(self, messages: Sequence[OutgoingMessage]) -> list[int]:
        raise RuntimeError("a drain never dead-letters")


def drain_now(
    database: Any, partner_id: str, delivery_queue: MessageQueue, at: dt.datetime, secrets_prefix: str
) -> Drained:
    """The sweep's drain of one partner, now. Sender, secrets and dead letters are the sweep's
    collaborators that a drain does not touch (it POSTs nothing and expires nothing)."""
    # At call time: only this command needs the Mongo adapters and the sweep.
    from distiller.adapters.delivery_log import MongoDeliveryLog
    from distiller.adapters.endpoint_health import MongoHeldDeliveries, MongoPartnerHealth
    from distiller.adapters.secrets import PartnerSecrets
    from distiller.deliver.sender import WebhookSender
    from distiller.deliver.sweep import HealthSweep, SweepReport

    drained = Drained()
    held = MongoHeldDeliveries(database[HELD_COLLECTION])
    sweep = HealthSweep(
        partners=list,
        health=MongoPartnerHealth(database),
        held=held,
        sender=WebhookSender(),
        secrets=PartnerSecrets(secrets_prefix, 0),
        log=MongoDeliveryLog(database[DELIVERIES_COLLECTION]),
        delivery_queue=_Recorded(delivery_queue, drained.event_ids),
        dead_letters=_NoDeadLetters(),
        policy=PausePolicy(),
    )
    report = SweepReport()
    sweep.drain(partner_id, at, report)
    drained.already_delivered = report.already_delivered
    drained.still_held = held.count(partner_id)
    return drained


def drain_lines(partner_id: str, drained: Drained) -> list[str]:
    """The operator's account of a drain: which eventIds went back on the queue, what is left."""
    ids = drained.event_ids
    more = len(ids) - SHOWN_EVENT_IDS
    shown = ", ".join(ids[:SHOWN_EVENT_IDS]) + (f" and {more} more" if more > 0 else "")
    lines = [
        f"partners: drained {len(ids)} held deliver{'y' if len(ids) == 1 else 'ies'} of {partner_id!r} onto the "
        "delivery queue, oldest first, original eventIds, a fresh retry schedule" + (f": {shown}" if ids else "")
    ]
    if drained.already_delivered:
        lines.append(f"partners: {drained.already_delivered} already delivered (by a probe or replay): removed unsent")
    if drained.still_held:
        lines.append(f"partners: {drained.still_held} still held for {partner_id!r}: {SWEEP_NOTE}")
    return lines


__all__ = [
    "NO_HELD_STORE",
    "RESUMED_BY",
    "SWEEP_NOTE",
    "Drained",
    "drain_lines",
    "drain_now",
    "held_text",
    "instant_text",
    "is_paused",
    "pause_note",
    "resume_changes",
    "state_label",
    "status_lines",
]
