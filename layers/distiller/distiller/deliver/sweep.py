"""The health sweep (scheduled every minute): probe paused partners, resume them, drain what was held.

For each paused partner whose last probe (or pause) is `probe_seconds` old, one held delivery is
POSTed once, signed as the Dispatcher signs (a round of its own, logged as an attempt): the least
probed, oldest first, so a delivery the endpoint rejects for itself cannot keep a partner paused
that takes the others. It is leased meanwhile, so a drain (`partners enable --drain-now`) leaves
it. A delivered probe resumes the partner and removes that delivery from the hold. Then, for
every partner with deliveries held and not paused (just resumed, resumed by `partners enable`,
or held by an instance whose cached record was stale), the held deliveries go back on the
delivery queue oldest emitted first, each in a resume round of its own with its original eventId
and a fresh retry schedule; one the delivery log shows delivered in its round or later (a probe,
an earlier drain interrupted before its removal) is removed unsent. Deliveries emitted longer ago
than the retention are dead-lettered with the reason and a log entry. Inactive partners keep
their held deliveries until enabled (or the retention ends).

Queue sends come before removals, so a crash repeats a drain (the same resume round, which the
Dispatcher's per-round log check absorbs) rather than losing a delivery. One partner's failure
(its store, its payload) is logged and the others are still swept; the health function then
fails the invocation (`SweepFailed`), so its errors alarm says so. No probe, drain page or expiry
starts without time left.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from distiller.adapters.queues import MessageQueue, OutgoingMessage
from distiller.core.clock import iso_utc, utc_now
from distiller.core.partners import Partner
from distiller.deliver.attempts import Secrets, Sender, loggable, post_signed
from distiller.deliver.claim_check import PayloadStore, PayloadTooLarge, PayloadUnavailable
from distiller.deliver.health import (
    HeldDeliveries,
    HeldDelivery,
    PartnerHealth,
    PausePolicy,
    PauseState,
    already_delivered,
)
from distiller.deliver.log import DeliveryAttempt, DeliveryLog
from distiller.deliver.sender import SendResult

logger = logging.getLogger(__name__)

FINISH_MARGIN_SECONDS = 5.0
"""Time kept back after the last step for its log write."""
PAGE = 100
"""Held deliveries read, checked against the log and queued at a time."""
PROBE_PAGES = 10
"""Pages of held deliveries a probe looks through for one not delivered yet."""


class SweepFailed(RuntimeError):
    """Some partners could not be swept (the others were); the message names them."""


@dataclass(slots=True)
class SweepReport:
    probes: dict[str, bool] = field(default_factory=dict)
    """Partner → whether its probe was delivered."""
    resumed: list[str] = field(default_factory=list)
    drained: dict[str, int] = field(default_factory=dict)
    """Partner → held deliveries put back on the delivery queue."""
    already_delivered: int = 0
    expired: int = 0
    still_held: dict[str, int] = field(default_factory=dict)
    """Paused partner → deliveries held after the sweep."""
    errors: dict[str, str] = field(default_factory=dict)
    """Partner → why it could not be swept this time."""


@dataclass(slots=True)
class Drained:
    """What one drain put back on the delivery queue (eventIds, oldest first) and removed unsent."""

    event_ids: list[str] = field(default_factory=list)
    already_delivered: int = 0


def split_delivered(
    health: PartnerHealth, partner_id: str, batch: Sequence[HeldDelivery]
) -> tuple[list[HeldDelivery], list[HeldDelivery]]:
    """`batch` as (already delivered in its round or a later one, still to send)."""
    rounds = health.delivered_rounds(partner_id, sorted({h.event_id for h in batch}))
    delivered = [h for h in batch if already_delivered(h, rounds)]
    return delivered, [h for h in batch if not already_delivered(h, rounds)]


def drain_held(
    partner_id: str,
    *,
    held: HeldDeliveries,
    health: PartnerHealth,
    delivery_queue: MessageQueue,
    now: dt.datetime,
    limit: int,
    time_left: Callable[[], bool] = lambda: True,
) -> Drained:
    """Put up to `limit` of the partner's held deliveries (not being probed) back on the delivery
    queue, oldest emitted first, each in its resume round; those delivered already are removed
    unsent. Queue sends come before removals. The sweep's drain and `partners enable --drain-now`."""
    drained = Drained()
    while len(drained.event_ids) < limit and time_left():
        batch = held.oldest(partner_id, min(PAGE, limit - len(drained.event_ids)), now)
        if not batch:
            break
        delivered, send = split_delivered(health, partner_id, batch)
        drained.already_delivered += len(delivered)
        failed = set(delivery_queue.send([OutgoingMessage(h.resumed().to_body()) for h in send]))
        sent = [h for i, h in enumerate(send) if i not in failed]
        held.remove(delivered + sent)
        drained.event_ids += [h.event_id for h in sent]
        if failed:
            logger.error("drain of %s stopped: the delivery queue refused %d", partner_id, len(failed))
            break
    if drained.event_ids:
        logger.info("drained held deliveries", extra={"partnerId": partner_id, "drained": len(drained.event_ids)})
    return drained


class HealthSweep:
    def __init__(
        self,
        *,
        partners: Callable[[], list[Partner]],
        health: PartnerHealth,
        held: HeldDeliveries,
        sender: Sender,
        secrets: Secrets,
        log: DeliveryLog,
        delivery_queue: MessageQueue,
        dead_letters: MessageQueue,
        policy: PausePolicy,
        payloads: PayloadStore | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        drain_limit: int = 20_000,
        attempt_budget_seconds: float = 10.0,
    ) -> None:
        self._partners = partners
        self._health = health
        self._held = held
        self._sender = sender
        self._secrets = secrets
        self._log = log
        self._delivery_queue = delivery_queue
        self._dead_letters = dead_letters
        self.policy = policy
        self._payloads = payloads
        self._clock = clock
        self.attempt_budget_seconds = attempt_budget_seconds
        self.drain_limit = drain_limit
        """Deliveries drained per partner per sweep; the rest wait a minute (the invocation must end)."""
        self._deadline: float | None = None

    def run(self, remaining_seconds: float | None = None) -> SweepReport:
        """One sweep. `remaining_seconds` is the invocation's time left: no probe starts unless a
        whole attempt budget (and a margin) still fits, no page unless the margin does; what is
        left is due at the next sweep. A partner that failed is in `errors`; the others were swept."""
        report = SweepReport()
        now = self._clock()
        self._deadline = None if remaining_seconds is None else time.monotonic() + remaining_seconds
        self._guarded("expiry", report, lambda: self._expire(now, report))
        partners = {p.partner_id: p for p in self._partners()}
        for state in self._health.paused():
            partner = partners.get(state.partner_id)
            if partner is not None and partner.active and self._probe_due(state, now):
                self._guarded(state.partner_id, report, lambda p=partner: self._probe(p, now, report))
        paused = {state.partner_id for state in self._health.paused()}  # afresh: `enable` may resume meanwhile
        for partner_id in self._held.partners():
            partner = partners.get(partner_id)
            if partner_id in paused:
                report.still_held[partner_id] = self._held.count(partner_id)
            elif partner is not None and partner.active:
                self._guarded(partner_id, report, lambda p=partner_id: self.drain(p, now, report))
        return report

    def drain(self, partner_id: str, now: dt.datetime, report: SweepReport) -> None:
        """Put the partner's held deliveries back on the delivery queue, oldest first."""
        drained = drain_held(
            partner_id,
            held=self._held,
            health=self._health,
            delivery_queue=self._delivery_queue,
            now=now,
            limit=self.drain_limit,
            time_left=lambda: self._time_for(0),
        )
        report.already_delivered += drained.already_delivered
        if drained.event_ids:
            report.drained[partner_id] = report.drained.get(partner_id, 0) + len(drained.event_ids)

    def _time_for(self, budget: float) -> bool:
        return self._deadline is None or time.monotonic() + budget + FINISH_MARGIN_SECONDS < self._deadline

    def _guarded(self, who: str, report: SweepReport, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as exc:  # this partner (or the expiry) only: the others are still swept
            report.errors[who] = loggable(f"{type(exc).__name__}: {exc}") or type(exc).__name__
            logger.exception("health sweep: %s failed", who, extra={"partnerId": who})

    def _probe_due(self, state: PauseState, now: dt.datetime) -> bool:
        last = state.last_probe_at or state.paused_at
        return last is None or (now - last).total_seconds() >= self.policy.probe_seconds

    def _probe(self, partner: Partner, now: dt.datetime, report: SweepReport) -> None:
        if not self._time_for(self.attempt_budget_seconds):
            return  # no time left for a whole attempt in this invocation: the partner stays due
        held = self._probe_candidate(partner.partner_id, report)
        if held is None:
            if self._held.count(partner.partner_id) == 0:  # nothing held at all: the next dead letters judge
                self._resume(partner.partner_id, now, "nothing held to probe with", report)
            return
        lease = now + dt.timedelta(seconds=self.attempt_budget_seconds + 60)
        if not self._held.lease(held, now, lease):
            return  # a drain or another sweep has it
        message = held.probe(now)
        if not partner.webhook_url:
            result, latency_ms = SendResult(False, error="partner has no webhook URL", refused=True), None
        else:
            try:
                message = message.with_payload(self._payloads)
            except (PayloadTooLarge, PayloadUnavailable) as exc:
                if isinstance(exc, PayloadUnavailable) and not exc.missing:
                    raise
                self._park([held], f"held delivery cannot be sent: {exc}", now)
                report.expired += 1
                return
            result, latency_ms = post_signed(self._sender, self._secrets, partner.webhook_url, message)
        error = None if result.delivered else loggable(f"probe: {result.error}")
        self._log.record(
            DeliveryAttempt(
                partner_id=partner.partner_id,
                event=message.event,
                event_id=message.event_id,
                attempt=1,
                status="delivered" if result.delivered else "failed",
                url=partner.webhook_url,
                attempted_at=self._clock(),
                payload=message.payload,
                status_code=result.status_code,
                response_body_excerpt=result.body_excerpt,
                error=error,
                redrive=message.redrive,
                latency_ms=latency_ms,
            )
        )
        report.probes[partner.partner_id] = result.delivered
        if result.delivered:
            self._held.remove([held])
            self._resume(partner.partner_id, now, f"probe delivered {held.event_id}", report)
        else:
            self._held.probe_failed(held)
            self._health.probed(partner.partner_id, now, error)
            logger.info(
                "probe failed; partner stays paused",
                extra={"partnerId": partner.partner_id, "eventId": held.event_id, "error": error},
            )

    def _probe_candidate(self, partner_id: str, report: SweepReport) -> HeldDelivery | None:
        """The least-probed held delivery not delivered already (those found delivered are removed)."""
        for _ in range(PROBE_PAGES):
            delivered, candidates = split_delivered(self._health, partner_id, self._held.least_probed(partner_id, PAGE))
            self._held.remove(delivered)
            report.already_delivered += len(delivered)
            if candidates or not delivered:
                return candidates[0] if candidates else None
        return None

    def _resume(self, partner_id: str, now: dt.datetime, how: str, report: SweepReport) -> None:
        if self._health.resume(partner_id, now, how):
            report.resumed.append(partner_id)
            logger.warning("partner %s resumed: %s", partner_id, how, extra={"partnerId": partner_id, "how": how})

    def _expire(self, now: dt.datetime, report: SweepReport) -> None:
        cutoff = now - dt.timedelta(days=self.policy.retention_days)
        while self._time_for(0) and (batch := self._held.emitted_before(cutoff, PAGE)):
            reason = f"emitted before {iso_utc(cutoff)}: past the hold's {self.policy.retention_days}-day retention"
            if not self._park(batch, reason, now):
                break
            report.expired += len(batch)

    def _park(self, held: Sequence[HeldDelivery], reason: str, now: dt.datetime) -> bool:
        """Dead-letter held deliveries with `reason` and a log entry each, then drop them from the hold."""
        messages = [h.message().after_attempt(iso_utc(now), reason) for h in held]
        failed = set(self._dead_letters.send([OutgoingMessage(m.to_body()) for m in messages]))
        for index, message in enumerate(messages):
            if index in failed:
                continue
            self._log.record(
                DeliveryAttempt(
                    partner_id=message.partner_id,
                    event=message.event,
                    event_id=message.event_id,
                    attempt=message.attempt,
                    status="failed",
                    url=None,
                    attempted_at=now,
                    payload=message.payload,
                    error=reason,
                    dead_lettered=True,
                    redrive=message.redrive,
                )
            )
            logger.warning("dead-lettered a held delivery: %s", reason, extra={"partnerId": message.partner_id})
        self._held.remove([h for i, h in enumerate(held) if i not in failed])
        return not failed


__all__ = ["Drained", "HealthSweep", "SweepFailed", "SweepReport", "drain_held", "split_delivered"]
