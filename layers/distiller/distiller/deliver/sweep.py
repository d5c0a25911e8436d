"""The health sweep (scheduled every minute): probe paused partners, resume them, drain what was held.

For each paused partner whose last probe (or pause) is `probe_seconds` old, the oldest held
delivery is POSTed once, signed as the Dispatcher signs (a round of its own, logged as an
attempt). A delivered probe resumes the partner and removes that delivery from the hold. Then,
for every partner with deliveries held and not paused (just resumed, resumed by `distiller
partners enable`, or held by an instance whose cached record was a minute old), the held
deliveries go back on the delivery queue oldest first, each in a resume round of its own with
its original eventId and a fresh retry schedule; one the delivery log shows delivered in its
round or later (a probe, an earlier drain interrupted before its removal) is removed unsent.
Deliveries held past the retention are dead-lettered with the reason and a log entry. Inactive
partners keep their held deliveries until enabled (or the retention ends).

Queue sends come before removals, so a crash repeats a drain (the same resume round, which the
Dispatcher's per-round log check absorbs) rather than losing a delivery.
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
from distiller.deliver.attempts import Secrets, Sender, post_signed
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
"""Time kept back after the last probe for its log write and the drains."""
PAGE = 100
"""Held deliveries read, checked against the log and queued at a time."""


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
    """Paused partner → deliveries held after the sweep (the HeldDeliveries gauge)."""


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

    def run(self, remaining_seconds: float | None = None) -> SweepReport:
        """One sweep. `remaining_seconds` is the invocation's time left: no probe starts unless a
        whole attempt budget (and a margin) still fits; the partners not probed are due next time."""
        report = SweepReport()
        now = self._clock()
        start_by = None
        if remaining_seconds is not None:
            start_by = time.monotonic() + remaining_seconds - self.attempt_budget_seconds - FINISH_MARGIN_SECONDS
        self._expire(now, report)
        partners = {p.partner_id: p for p in self._partners()}
        for state in self._health.paused():
            partner = partners.get(state.partner_id)
            if partner is not None and partner.active and self._probe_due(state, now):
                self._probe(partner, now, report, start_by)
        paused = {state.partner_id for state in self._health.paused()}
        for partner_id in self._held.partners():
            partner = partners.get(partner_id)
            if partner_id in paused:
                report.still_held[partner_id] = self._held.count(partner_id)
            elif partner is not None and partner.active:
                self.drain(partner_id, now, report)
        return report

    def drain(self, partner_id: str, now: dt.datetime, report: SweepReport) -> None:
        """Put the partner's held deliveries back on the delivery queue, oldest first."""
        drained = 0
        while drained < self.drain_limit:
            batch = self._held.oldest(partner_id, min(PAGE, self.drain_limit - drained))
            if not batch:
                break
            delivered, send = self._split_delivered(partner_id, batch)
            report.already_delivered += len(delivered)
            failed = set(self._delivery_queue.send([OutgoingMessage(h.resumed(now).to_body()) for h in send]))
            self._held.remove(delivered + [h for i, h in enumerate(send) if i not in failed])
            drained += len(send) - len(failed)
            if failed:
                logger.error("drain of %s stopped: the delivery queue refused %d", partner_id, len(failed))
                break
        if drained:
            report.drained[partner_id] = report.drained.get(partner_id, 0) + drained
            logger.info("drained held deliveries", extra={"partnerId": partner_id, "drained": drained})

    def _probe_due(self, state: PauseState, now: dt.datetime) -> bool:
        last = state.last_probe_at or state.paused_at
        return last is None or (now - last).total_seconds() >= self.policy.probe_seconds

    def _probe(self, partner: Partner, now: dt.datetime, report: SweepReport, start_by: float | None) -> None:
        if start_by is not None and time.monotonic() > start_by:
            return  # no time left for a whole attempt in this invocation: the partner stays due
        delivered, candidates = self._split_delivered(partner.partner_id, self._held.oldest(partner.partner_id, 10))
        self._held.remove(delivered)
        report.already_delivered += len(delivered)
        if not candidates:  # nothing to probe with: resume, and the next dead letters judge afresh
            self._resume(partner.partner_id, now, "nothing held to probe with", report)
            return
        held = candidates[0]
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
            result, latency_ms = post_signed(
                self._sender, self._secrets, partner.webhook_url, message, start_by=start_by
            )
        if result.deferred:  # no time left in this invocation: the partner stays due
            return
        self._log.record(
            DeliveryAttempt(
                partner_id=partner.partner_id,
                event=message.event,
                event_id=message.event_id,
                attempt=1,
                status="delivered" if result.delivered else "failed",
                url=partner.webhook_url,
                attempted_at=now,
                payload=message.payload,
                status_code=result.status_code,
                response_body_excerpt=result.body_excerpt,
                error=None if result.delivered else f"probe: {result.error}",
                redrive=message.redrive,
                latency_ms=latency_ms,
            )
        )
        report.probes[partner.partner_id] = result.delivered
        if result.delivered:
            self._held.remove([held])
            self._resume(partner.partner_id, now, f"probe delivered {held.event_id}", report)
        else:
            self._health.probed(partner.partner_id, now, result.error)
            logger.info(
                "probe failed; partner stays paused",
                extra={"partnerId": partner.partner_id, "eventId": held.event_id, "error": result.error},
            )

    def _resume(self, partner_id: str, now: dt.datetime, how: str, report: SweepReport) -> None:
        if self._health.resume(partner_id, now, how):
            report.resumed.append(partner_id)
            logger.warning("partner %s resumed: %s", partner_id, how, extra={"partnerId": partner_id, "how": how})

    def _split_delivered(
        self, partner_id: str, batch: Sequence[HeldDelivery]
    ) -> tuple[list[HeldDelivery], list[HeldDelivery]]:
        rounds = self._health.delivered_rounds(partner_id, sorted({h.event_id for h in batch}))
        delivered = [h for h in batch if already_delivered(h, rounds)]
        return delivered, [h for h in batch if not already_delivered(h, rounds)]

    def _expire(self, now: dt.datetime, report: SweepReport) -> None:
        cutoff = now - dt.timedelta(days=self.policy.retention_days)
        while batch := self._held.held_before(cutoff, PAGE):
            reason = f"held since before {iso_utc(cutoff)}: past the hold's {self.policy.retention_days}-day retention"
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


__all__ = ["HealthSweep", "SweepReport"]
