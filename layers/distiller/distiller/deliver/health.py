"""Endpoint health: a partner whose endpoint keeps failing is paused and its deliveries are held.

Dead-lettering every delivery of a partner whose endpoint is down for a day (each after ~21
minutes of retries) piles the dead-letter queue up and leaves the partner to ask for a redrive.
Instead, at a delivery's last failed attempt the Dispatcher asks `pause_reason`: since the
partner's last delivered attempt, have `dead_letters` deliveries been dead-lettered (this one
included), or have its attempts failed for `failing_hours`? Then the partner is marked paused
(once: the record's `state` changes from anything else to `paused`, so one invocation wins and
fires the alarm), this delivery and every later one is held (kept in the held store, logged with
status `held`, neither sent nor dead-lettered), and the health sweep (`deliver/sweep.py`) probes
the endpoint with the oldest held delivery until it answers, then resumes the partner and drains
what was held, oldest first, with the original eventIds.

The history is read from the delivery log (one entry per attempt), so every Dispatcher instance
judges from the same facts and nothing is counted in memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from distiller.core.clock import iso_utc, parse_instant
from distiller.core.partners import PAUSED_STATE
from distiller.deliver.message import DeliveryMessage

HELD_COLLECTION = "held_deliveries"
PAUSED_METRIC = "PartnerPaused"
"""1 per partner paused (dimensions service and stage): the one the PartnerPaused alarm watches."""
RESUMED_METRIC = "PartnerResumed"
HELD_REASON = "partner paused: its endpoint kept failing; held until a probe succeeds or `distiller partners enable`"


@dataclass(frozen=True, slots=True)
class PausePolicy:
    """When to pause, how often to probe, how long to hold (settings PAUSE_AFTER_*, HEALTH_*).

    Retention counts from the delivery's emission, not from when it was (last) held: a payload
    too large for a message lives in the claim-check bucket for 30 days from then."""

    dead_letters: int = 5
    """Consecutive dead letters (no delivered attempt between them) that pause; 0: never on count."""
    failing_hours: float = 24.0
    """Hours of nothing but failed attempts that pause; 0: never on time."""
    probe_seconds: int = 300
    """Least time between two probes of one paused partner."""
    retention_days: int = 14
    """Days after its emission that a delivery may stay held; then it is dead-lettered with the
    reason (the DLQ keeps it 14 more days, within the claim-check bucket's 30-day expiry)."""


@dataclass(frozen=True, slots=True)
class FailureStreak:
    """A partner's attempts since its last delivered one, as the delivery log holds them."""

    dead_letters: int
    """Deliveries dead-lettered since then (counted up to what the policy needs)."""
    failing_since: dt.datetime | None
    """The first failed attempt since then; None when there is none."""


def pause_reason(streak: FailureStreak, policy: PausePolicy, now: dt.datetime) -> str | None:
    """Why a partner must be paused now that one more delivery would be dead-lettered, or None."""
    count = streak.dead_letters + 1
    if policy.dead_letters and count >= policy.dead_letters:
        return f"{count} consecutive deliveries dead-lettered without one delivered"
    window = dt.timedelta(hours=policy.failing_hours)
    if policy.failing_hours and streak.failing_since is not None and now - streak.failing_since >= window:
        return f"every attempt failed since {iso_utc(streak.failing_since)} ({policy.failing_hours:g} h or more)"
    return None


@dataclass(frozen=True, slots=True)
class HeldDelivery:
    """One delivery kept for a paused partner: the queue message exactly as it would have travelled."""

    partner_id: str
    event_id: str
    round: int
    body: str
    """`DeliveryMessage.to_body()`: payload (or its claim-check reference), eventId, emittedAt, attempts."""
    emitted_at: str
    held_at: dt.datetime
    reason: str
    id: Any = None
    """The store's key (Mongo `_id`); None until stored."""
    probes: int = 0
    """Failed probes made with it: each probe takes the least-probed delivery, so one delivery the
    endpoint rejects for itself (a 422) cannot keep a partner paused that takes the others."""

    @property
    def emitted(self) -> dt.datetime:
        """`emittedAt` as an instant: the order of the drain and the start of the retention (the
        claim-check object of a large payload is as old as the emission, whatever was held since)."""
        return parse_instant(self.emitted_at)

    @classmethod
    def of(cls, message: DeliveryMessage, held_at: dt.datetime, reason: str) -> HeldDelivery:
        return cls(
            partner_id=message.partner_id,
            event_id=message.event_id,
            round=message.redrive,
            body=message.to_body(),
            emitted_at=message.emitted_at,
            held_at=held_at,
            reason=reason,
        )

    def message(self) -> DeliveryMessage:
        return DeliveryMessage.from_body(self.body)

    def resumed(self) -> DeliveryMessage:
        """The message to send when the partner resumes: a round of its own, so it gets the whole
        retry schedule again, and the same one each time this held entry is drained (a drain
        repeated after a crash is one round, which the delivery log deduplicates)."""
        held = self.message()
        return held.next_round(max(health_round(self.held_at), held.redrive + 1))

    def probe(self, at: dt.datetime) -> DeliveryMessage:
        """The message a probe sends: a round of its own per probe (a failed probe is not an
        attempt of the drained round)."""
        held = self.message()
        return held.next_round(max(health_round(at), health_round(self.held_at) + 1, held.redrive + 2))


HEALTH_ROUNDS_FROM = 10**12
"""Resume and probe rounds are epoch milliseconds: apart from the partner API's replay rounds (epoch
seconds, below this until the year 33658) and an operator's redrive (+1), so neither can take a
round a replay or a redrive is in."""


def health_round(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


class HeldDeliveries(Protocol):
    """Where held deliveries wait (Mongo `held_deliveries`; nothing expires on its own)."""

    def hold(self, held: HeldDelivery) -> bool:
        """Keep it; False when this delivery (partner, eventId, round) is held already."""
        ...

    def oldest(self, partner_id: str, limit: int, now: dt.datetime) -> list[HeldDelivery]:
        """The partner's held deliveries not being probed at `now`, oldest emitted first (then held first)."""
        ...

    def least_probed(self, partner_id: str, limit: int) -> list[HeldDelivery]:
        """The partner's held deliveries, least probed first, then oldest emitted."""
        ...

    def lease(self, held: HeldDelivery, now: dt.datetime, until: dt.datetime) -> bool:
        """Reserve it for a probe until `until` (a drain meanwhile leaves it); False if leased already."""
        ...

    def probe_failed(self, held: HeldDelivery) -> None:
        """Count the failed probe and end the lease."""
        ...

    def remove(self, held: Sequence[HeldDelivery]) -> None: ...

    def partners(self) -> list[str]:
        """Partners with anything held."""
        ...

    def count(self, partner_id: str) -> int: ...

    def emitted_before(self, at: dt.datetime, limit: int) -> list[HeldDelivery]:
        """Held deliveries emitted before `at` (past their retention), oldest first."""
        ...


@dataclass(frozen=True, slots=True)
class PauseState:
    partner_id: str
    paused_at: dt.datetime | None
    reason: str | None
    last_probe_at: dt.datetime | None


class PartnerHealth(Protocol):
    """Pause state (the partner record) and the history that decides it (the delivery log)."""

    def failure_streak(self, partner_id: str, dead_letters_needed: int) -> FailureStreak:
        """The attempts since the later of the last delivered one and the last resume (an operator's
        `enable` starts a fresh count); only dead letters of attempts at the endpoint count."""
        ...

    def is_paused(self, partner_id: str) -> bool:
        """The record's state now, not through a cache (a Dispatcher's copy may be a minute old)."""
        ...

    def pause(self, partner_id: str, reason: str, at: dt.datetime) -> bool:
        """Mark the partner paused; True only for the call that changed it (the alarm fires once)."""
        ...

    def resume(self, partner_id: str, at: dt.datetime, how: str) -> bool:
        """Clear the pause; True only for the call that changed it."""
        ...

    def probed(self, partner_id: str, at: dt.datetime, error: str | None) -> None: ...

    def paused(self) -> list[PauseState]:
        """Every paused partner, read afresh (not through a cache)."""
        ...

    def delivered_rounds(self, partner_id: str, event_ids: Sequence[str]) -> dict[str, set[int]]:
        """For each of `event_ids` delivered to the partner, the rounds it was delivered in."""
        ...


def already_delivered(held: HeldDelivery, rounds: dict[str, set[int]]) -> bool:
    """Delivered in its own round or a later one (a probe, an earlier drain, a replay): sending it
    again would be a duplicate. Rounds before its own do not count: a replay asks for a new copy."""
    return any(r >= held.round for r in rounds.get(held.event_id, ()))


__all__ = [
    "HELD_COLLECTION",
    "HELD_REASON",
    "PAUSED_METRIC",
    "PAUSED_STATE",
    "RESUMED_METRIC",
    "FailureStreak",
    "HeldDeliveries",
    "HeldDelivery",
    "PartnerHealth",
    "PausePolicy",
    "PauseState",
    "already_delivered",
    "pause_reason",
]
