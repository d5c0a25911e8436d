"""The Dispatcher function's logic: deliver one queued webhook, then retry, dead-letter or finish.

For each delivery message:
1. skip it if the partner is inactive, if this eventId was already delivered to the partner,
   or if this very attempt was already processed (a redelivered SQS message);
2. claim the attempt (a unique, leased entry in the delivery log): a copy of the message that
   another invocation is already sending is put back until that lease ends, never POSTed twice;
3. read the partner's endpoint and secret now (a rotation applies to retries), sign, POST;
   an attempt that could not start in time (slots busy, invocation ending) goes back unchanged;
4. on failure, requeue with the next delay of the schedule, or dead-letter after the last one;
   a refused endpoint (SSRF, scheme, unusable partner record) is dead-lettered at once; a last
   failure that pauses the partner (`deliver/health.py`) is held instead, as is every delivery
   of a paused partner (kept for the health sweep's drain, logged `held`, nothing POSTed);
5. log the attempt. Queue actions come before the log entry, so a crash in between repeats
   the attempt rather than losing it; the log check in step 1 absorbs the repeat.

Every dead letter carries its reason and has a log entry: on a message's last SQS receive
(`final_receive`), an infrastructure failure parks it explicitly instead of letting SQS move
it without either.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from distiller.adapters.queues import MAX_DELAY_SECONDS, MessageQueue, OutgoingMessage
from distiller.core.clock import iso_utc, utc_now
from distiller.core.partners import Partner
from distiller.deliver.attempts import SIGNATURE_REFUSED, RetrySchedule, Secrets, Sender, post_signed, webhook_headers
from distiller.deliver.attempts import log_ids as _ids
from distiller.deliver.attempts import loggable as _loggable
from distiller.deliver.claim_check import PayloadStore, PayloadTooLarge, PayloadUnavailable
from distiller.deliver.health import HELD_REASON, HeldDeliveries, HeldDelivery, PartnerHealth, PausePolicy, pause_reason
from distiller.deliver.log import AttemptKey, ClaimHeld, DeliveryAttempt, DeliveryLog, DeliveryStatus
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.partner_metrics import PartnerTally
from distiller.deliver.sender import SendResult, header_problem
from distiller.deliver.workers import DispatchWorkers

logger = logging.getLogger(__name__)
T = TypeVar("T")

Outcome = Literal["delivered", "skipped", "retry-scheduled", "dead-lettered", "deferred", "held"]
"""`deferred`: no attempt was made (no time left, or another invocation holds it); the message
went back on the retry queue unchanged. `held`: the partner is paused (`deliver/health.py`)."""

FINISH_MARGIN_SECONDS = 5.0
"""Time kept back after the last possible attempt for its queue send and log write."""


DEFAULT_SCHEDULE = RetrySchedule()
DEFAULT_PAUSE_POLICY = PausePolicy()


class DispatchFailure(RuntimeError):
    """Infrastructure failed (queue, log): the SQS message must be retried, not acknowledged."""


class Dispatcher:
    def __init__(
        self,
        *,
        partners: Callable[[], list[Partner]],
        secrets: Secrets,
        sender: Sender,
        log: DeliveryLog,
        retry_queue: MessageQueue,
        dead_letter_queue: MessageQueue,
        schedule: RetrySchedule = DEFAULT_SCHEDULE,
        clock: Callable[[], dt.datetime] = utc_now,
        max_workers: int = 50,
        per_partner: int | None = None,
        attempt_budget_seconds: float = 10.0,
        lease_seconds: float = 120.0,
        partner_errors: Callable[[], Sequence[str]] = tuple,
        payloads: PayloadStore | None = None,
        held: HeldDeliveries | None = None,
        health: PartnerHealth | None = None,
        pause_policy: PausePolicy = DEFAULT_PAUSE_POLICY,
        on_pause: Callable[[str], None] | None = None,
    ) -> None:
        self._partners = partners
        self._secrets = secrets
        self._sender = sender
        self._log = log
        self._retry_queue = retry_queue
        self._dead_letters = dead_letter_queue
        self.schedule = schedule
        self._clock = clock
        self._workers = DispatchWorkers(max_workers)
        self.per_partner = per_partner or getattr(sender, "per_host_connections", None) or max_workers
        """Deliveries of one partner in flight at once: the sender's connections per host, so a
        partner's surplus waits in its queue instead of holding workers that others could use."""
        self.attempt_budget_seconds = attempt_budget_seconds
        self.lease_seconds = lease_seconds
        """How long a claimed attempt is reserved: longer than an invocation can run."""
        self._partner_errors = partner_errors
        self._payloads = payloads
        self._held = held
        self._health = health
        """Without both, nothing is paused or held (the behaviour before endpoint health)."""
        self.pause_policy = pause_policy
        self._on_pause = on_pause
        """Called with the partner's id by the one invocation that paused it (the PartnerPaused metric)."""
        self._tally = threading.local()  # the PartnerTally of the batch each thread is working on

    @property
    def max_workers(self) -> int:
        """Deliveries in flight at once, across every batch this dispatcher runs."""
        return self._workers.max_workers

    def close(self) -> None:
        """Stop the worker threads (they are kept across batches, as across warm invocations)."""
        self._workers.close()

    def dispatch_all(
        self,
        messages: Sequence[DeliveryMessage],
        *,
        remaining_seconds: float | None = None,
        final_receive: Sequence[bool] | None = None,
        tally: PartnerTally | None = None,
    ) -> list[Outcome | Exception]:
        """Dispatch concurrently; one slow or failing delivery does not hold up the others.

        `remaining_seconds` is the invocation's time left: no attempt starts unless a whole
        attempt budget (and the finish margin) still fits, so queued work never outlives the
        function. `final_receive[i]` says message i will not come back from SQS if it fails
        now: it is parked with its reason instead of being returned for a retry. Every attempt
        logged for the batch is also added to `tally` (per-partner metrics).
        """
        if not messages:
            return []
        self._tally.current = tally

        def unfinished(index: int, failure: Exception) -> Outcome | Exception:
            if final_receive is not None and final_receive[index]:
                return self.give_up(messages[index], f"last receive: {failure}") or failure
            return failure

        try:
            partners = {p.partner_id: p for p in self._partners()}
        except Exception as exc:  # the database is down: every message comes back, or is parked
            failure = DispatchFailure(f"partner records unavailable: {exc}")
            return [unfinished(index, failure) for index in range(len(messages))]
        start_by = None
        if remaining_seconds is not None:
            start_by = time.monotonic() + remaining_seconds - self.attempt_budget_seconds - FINISH_MARGIN_SECONDS
        # The same message twice in one batch (an SQS duplicate) would race past the log check.
        first: dict[tuple[str, str, int, int], int] = {}
        for index, message in enumerate(messages):
            first.setdefault((message.partner_id, message.event_id, message.attempt, message.redrive), index)

        def one(index: int) -> Outcome | Exception:
            self._tally.current = tally  # a worker thread serves one batch at a time
            message = messages[index]
            try:
                if first[(message.partner_id, message.event_id, message.attempt, message.redrive)] != index:
                    partner = partners.get(message.partner_id)
                    url = partner.webhook_url if partner else None
                    return self._skip(message, message.attempt + 1, url, "duplicate message in the same batch")
                return self.dispatch(message, partners, start_by=start_by)
            except DispatchFailure as exc:
                failure: Exception = exc
            except Exception as exc:  # a bug or a record nothing anticipated: this delivery only
                logger.exception(
                    "delivery %s for %s failed unexpectedly",
                    message.event_id,
                    message.partner_id,
                    extra=_ids(message, message.attempt + 1),
                )
                failure = DispatchFailure(f"unexpected {type(exc).__name__}: {exc}")
            return unfinished(index, failure)

        return self._workers.run(one, [m.partner_id for m in messages], self.per_partner)

    def dispatch(
        self, message: DeliveryMessage, partners: dict[str, Partner], *, start_by: float | None = None
    ) -> Outcome:
        attempt = message.attempt + 1
        partner = partners.get(message.partner_id)
        if partner is None:
            result = SendResult(False, error=self._missing_partner_reason(message.partner_id))
            return self._finish_failed(message, attempt, None, result, final=True)
        if not partner.active:
            return self._skip(message, attempt, partner.webhook_url, "partner is inactive")
        already = self._already_processed(message, attempt)
        if already:
            return self._skip(message, attempt, partner.webhook_url, already)
        if partner.paused and self._held is not None and self._still_paused(partner.partner_id):
            return self._hold(message, attempt, partner.webhook_url)
        if not partner.webhook_url:
            result = SendResult(False, error="partner has no webhook URL", refused=True)
            return self._finish_failed(message, attempt, None, result, final=True)
        problem = header_problem({"X-PA-Partner": message.partner_id, "X-PA-Event": message.event})
        if problem is not None:  # e.g. a partnerId with a line break: no attempt can ever send it
            result = SendResult(False, error=f"request refused: {problem}", refused=True)
            return self._finish_failed(message, attempt, partner.webhook_url, result, final=True)
        if start_by is not None and time.monotonic() > start_by:
            return self._defer(message, 0, "not started: the invocation has no time left for a whole attempt")

        key = AttemptKey(message.partner_id, message.event_id, attempt, message.redrive)
        claim = self._logged(lambda: self._log.claim(key, self.lease_seconds))
        if isinstance(claim, ClaimHeld):
            return self._defer(message, claim.retry_in_seconds, claim.reason)

        try:
            message = message.with_payload(self._payloads)
        except (PayloadTooLarge, PayloadUnavailable) as exc:
            if isinstance(exc, PayloadUnavailable) and not exc.missing:  # the store is down: retry later
                self._logged(lambda: self._log.release(key, claim))
                raise DispatchFailure(str(exc)) from exc
            # no store, or the object expired or was deleted: no later attempt can find it either
            result = SendResult(False, error=str(exc))
            return self._finish_failed(message, attempt, partner.webhook_url, result, final=True)
        result, latency_ms = post_signed(self._sender, self._secrets, partner.webhook_url, message, start_by=start_by)
        if result.deferred:
            self._logged(lambda: self._log.release(key, claim))
            return self._defer(message, 0, result.error or "not started")
        if result.delivered:
            self._record(message, attempt, partner.webhook_url, "delivered", result, latency_ms=latency_ms)
            return "delivered"
        return self._finish_failed(
            message, attempt, partner.webhook_url, result, final=result.refused, latency_ms=latency_ms, endpoint=True
        )

    def give_up(self, message: DeliveryMessage, reason: str) -> Outcome | None:
        """Dead-letter a message that cannot be retried any more, with its reason and, if the
        log can be written, its entry; None when even the dead-letter queue refused it."""
        attempt = message.attempt + 1
        attempted_at = self._clock()
        parked = message.after_attempt(iso_utc(attempted_at), reason)
        if self._dead_letters.send([OutgoingMessage(parked.to_body())]):
            return None
        try:
            self._record(message, attempt, None, "failed", SendResult(False, error=reason), dead_lettered=True)
        except DispatchFailure as exc:  # the reason still travels with the dead letter
            logger.error(
                "dead-lettered %s for %s without a log entry: %s",
                message.event_id,
                message.partner_id,
                _loggable(str(exc)),
                extra={**_ids(message, attempt), "reason": _loggable(str(exc))},
            )
        logger.warning(
            "dead-lettered %s for %s: %s",
            message.event_id,
            message.partner_id,
            _loggable(reason),
            extra={**_ids(message, attempt), "outcome": "dead-lettered", "reason": _loggable(reason)},
        )
        return "dead-lettered"

    def _missing_partner_reason(self, partner_id: str) -> str:
        problems = [e for e in self._partner_errors() if repr(partner_id) in e]
        return f"partner record invalid: {problems[0]}" if problems else "partner not found"

    def _defer(self, message: DeliveryMessage, delay: int, reason: str) -> Outcome:
        """Put the message back unchanged: no attempt was made, so none is counted."""
        self._send(self._retry_queue, OutgoingMessage(message.to_body(), min(delay, MAX_DELAY_SECONDS)), "retry queue")
        logger.info(
            "delivery deferred",
            extra={
                **_ids(message, message.attempt + 1),
                "outcome": "deferred",
                "delay": delay,
                "reason": _loggable(reason),
            },
        )
        return "deferred"

    def _logged(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except Exception as exc:
            raise DispatchFailure(f"delivery log unavailable: {exc}") from exc

    def _already_processed(self, message: DeliveryMessage, attempt: int) -> str | None:
        return self._logged(
            lambda: self._log.already_processed(message.partner_id, message.event_id, attempt, message.redrive)
        )

    def _finish_failed(
        self,
        message: DeliveryMessage,
        attempt: int,
        url: str | None,
        result: SendResult,
        *,
        final: bool,
        latency_ms: int | None = None,
        endpoint: bool = False,
    ) -> Outcome:
        """`endpoint`: the partner's endpoint failed the attempt (not a missing record or payload),
        so a last failure may pause the partner: the delivery is then held, not dead-lettered."""
        attempted_at = self._clock()
        after = message.after_attempt(iso_utc(attempted_at), result.error)
        delay = None if final else self.schedule.delay_after(attempt)
        if delay is None and endpoint and self._pauses(message.partner_id, attempted_at):
            # Held before the failed attempt is logged: a crash in between repeats the attempt.
            failed = (message, attempt, url, "failed", result)
            return self._hold(after, attempt + 1, url, then=lambda: self._record(*failed, at=attempted_at))
        if delay is None:
            self._send(self._dead_letters, OutgoingMessage(after.to_body()), "dead-letter queue")
            self._record(
                message, attempt, url, "failed", result, dead_lettered=True, at=attempted_at, latency_ms=latency_ms
            )
            logger.warning(
                "dead-lettered %s for %s after attempt %d: %s",
                message.event_id,
                message.partner_id,
                attempt,
                _loggable(result.error),
                extra={
                    **_ids(message, attempt),
                    "outcome": "dead-lettered",
                    "statusCode": result.status_code,
                    "reason": _loggable(result.error),
                },
            )
            return "dead-lettered"
        self._send(self._retry_queue, OutgoingMessage(after.to_body(), delay), "retry queue")
        self._record(message, attempt, url, "failed", result, at=attempted_at, latency_ms=latency_ms)
        return "retry-scheduled"

    def _pauses(self, partner_id: str, at: dt.datetime) -> bool:
        """Whether this last failure pauses the partner (`health.pause_reason`), or another
        invocation just did; only the invocation that changed the record logs it and counts it."""
        if self._health is None or self._held is None:
            return False
        try:
            streak = self._health.failure_streak(partner_id, self.pause_policy.dead_letters)
            reason = pause_reason(streak, self.pause_policy, at)
            if reason is None:
                return False
            changed = self._health.pause(partner_id, reason, at)
        except Exception as exc:
            raise DispatchFailure(f"partner health unavailable: {exc}") from exc
        if changed:
            logger.error("partner %s paused: %s", partner_id, reason, extra={"partnerId": partner_id, "reason": reason})
            if self._on_pause is not None:  # at once: an invocation that dies later must not lose the alarm
                self._on_pause(partner_id)
        return True

    def _still_paused(self, partner_id: str) -> bool:
        """The record read afresh: a cached `paused` may be a minute old, and holding a resumed
        partner's deliveries would hold back (and reorder) the very drain that resumed it."""
        if self._health is None:
            return True
        try:
            return self._health.is_paused(partner_id)
        except Exception as exc:
            raise DispatchFailure(f"partner health unavailable: {exc}") from exc

    def _hold(
        self, message: DeliveryMessage, attempt: int, url: str | None, *, then: Callable[[], None] | None = None
    ) -> Outcome:
        """Keep the delivery for the partner's resume (nothing sent, nothing dead-lettered), then log it.

        Once it is kept, the held store is its one copy: a log write failing after that is reported,
        not retried (a retried message would be sent again while its held copy is drained)."""
        held = self._held
        assert held is not None
        at = self._clock()
        try:
            kept = held.hold(HeldDelivery.of(message, at, HELD_REASON))
        except Exception as exc:
            raise DispatchFailure(f"held deliveries unavailable: {exc}") from exc
        try:
            if then is not None:
                then()
            if kept:  # False: a redelivered copy, held and logged already
                self._record(message, attempt, url, "held", SendResult(False, error=HELD_REASON), at=at)
        except DispatchFailure as exc:
            logger.error("held %s for %s without its log entry: %s", message.event_id, message.partner_id, exc)
        return "held"

    def _skip(self, message: DeliveryMessage, attempt: int, url: str | None, reason: str) -> Outcome:
        self._record(message, attempt, url, "skipped", SendResult(False, error=reason))
        return "skipped"

    def _send(self, queue: MessageQueue, outgoing: OutgoingMessage, name: str) -> None:
        if queue.send([outgoing]):
            raise DispatchFailure(f"could not put the delivery on the {name}")

    def _record(
        self,
        message: DeliveryMessage,
        attempt: int,
        url: str | None,
        status: DeliveryStatus,
        result: SendResult,
        *,
        dead_lettered: bool = False,
        at: dt.datetime | None = None,
        latency_ms: int | None = None,
    ) -> None:
        entry = DeliveryAttempt(
            partner_id=message.partner_id,
            event=message.event,
            event_id=message.event_id,
            attempt=attempt,
            status=status,
            url=url,
            attempted_at=at or self._clock(),
            payload=message.payload,
            status_code=result.status_code,
            response_body_excerpt=result.body_excerpt,
            error=result.error,
            dead_lettered=dead_lettered,
            redrive=message.redrive,
            latency_ms=latency_ms,
        )
        try:
            self._log.record(entry)
        except Exception as exc:
            raise DispatchFailure(f"delivery log unavailable: {exc}") from exc
        tally: PartnerTally | None = getattr(self._tally, "current", None)
        if tally is not None:
            tally.add(entry)
        outcome = "dead-lettered" if dead_lettered else "retry-scheduled" if status == "failed" else status
        # One line per attempt, with ids only: never the payload, URL, secret or signature. A
        # delivered attempt is DEBUG (the delivery log and the batch line have it; at INFO these
        # lines were a third of the bill, docs/scaling.md); anything else is INFO.
        logger.log(
            logging.DEBUG if status == "delivered" else logging.INFO,
            "delivery attempt",
            extra={
                **_ids(message, attempt),
                "outcome": outcome,
                "status": status,
                "statusCode": result.status_code,
                "latencyMs": latency_ms,
                "error": _loggable(result.error),
                "deadLettered": dead_lettered,
            },
        )


__all__ = ["FINISH_MARGIN_SECONDS", "SIGNATURE_REFUSED", "Dispatcher", "RetrySchedule", "webhook_headers"]
