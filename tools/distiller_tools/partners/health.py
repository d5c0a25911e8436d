"""Endpoint health as an operator sees it: a partner's pause, its held deliveries, a drain now.

The Dispatcher pauses a partner (record `state: "paused"` plus a `health` sub-document) and holds
its deliveries in `held_deliveries`; the health sweep probes, resumes and drains every minute
(`distiller.deliver.sweep`). `partners enable` resumes at once; `--drain-now` drains through the
sweep's own `drain`, so the order (oldest first), the resume round (a fresh retry schedule, the
original eventId) and the skipping of deliveries the log shows delivered are the sweep's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from distiller.core.clock import iso_utc
from distiller.deliver.health import HELD_COLLECTION, PAUSED_STATE
from distiller.deliver.log import as_utc
from distiller.deliver.sweep import Drained, drain_held

if TYPE_CHECKING:
    from distiller.adapters.queues import MessageQueue

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


def drain_now(database: Any, partner_id: str, delivery_queue: MessageQueue, at: dt.datetime) -> tuple[Drained, int]:
    """The sweep's drain of one partner (`deliver.sweep.drain_held`), now; and how many are still
    held after it (being probed, or held meanwhile by a Dispatcher whose cached record was stale)."""
    # At call time: only this command needs the Mongo adapters.
    from distiller.adapters.endpoint_health import MongoHeldDeliveries, MongoPartnerHealth

    held = MongoHeldDeliveries(database[HELD_COLLECTION])
    health = MongoPartnerHealth(database)
    drained = drain_held(partner_id, held=held, health=health, delivery_queue=delivery_queue, now=at, limit=10**9)
    return drained, held.count(partner_id)


def drain_lines(partner_id: str, drained: Drained, still_held: int) -> list[str]:
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
    if still_held:
        lines.append(f"partners: {still_held} still held for {partner_id!r}: {SWEEP_NOTE}")
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
