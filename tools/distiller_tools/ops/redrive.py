"""Redrive a dead-letter queue: put its messages back to work.

- **StartMessageMoveTask** (SQS's own redrive) is used when the bodies can go back unchanged
  (`kind="raw"`, no `max_messages`): SQS moves them asynchronously and we report its task
  handle. Without a destination, SQS returns each message to the queue it came from.
- **Receive → send → delete**, batch by batch, everywhere else: when a body must be rewritten
  on the way back (below; the move task can only move bodies as they are), when a count is
  asked for (the move task takes a rate, not a count), when the endpoint has no move task
  (moto, local emulators: detected from the error, see `_move_task_unsupported`) or when
  asked (`use_move_task=False`). A message is deleted from the dead-letter queue only after
  its send succeeded, so a crash in between duplicates a message rather than losing it;
  duplicates are absorbed downstream (the Dispatcher's log check and the partners' eventId
  dedupe; the Distiller's eventIds are deterministic).

What goes back, per kind:

- `delivery` (the delivery dead-letter queue): `DeliveryMessage` bodies. `attempt` is reset
  to 0 and `lastError` cleared, so a redriven delivery gets the full retry schedule again
  instead of being dead-lettered after one more failure (the Dispatcher dead-letters once
  `attempt` exhausts the schedule). `eventId`, `eventKey`, `payload`, `emittedAt` and
  `firstAttemptAt` are kept: the eventId is the partners' idempotency key, so one that was in
  fact received before is recognised as a duplicate; the emission time is what every attempt
  signs as `X-PA-Timestamp`; `firstAttemptAt` records when the delivery was first tried. The
  message's `redrive` field names its *round* of attempts and goes up by one, so the
  Dispatcher's duplicate check and attempt claims (keyed on round and attempt) tell the new
  round from the dead-lettered one. It is a round, not a count of redrives: an API replay
  sets it to the request time in epoch seconds, which is likewise past every earlier round.
- `ingest` (the ingest dead-letter queue): parked records `{"reason", "origin", "record"}`.
  `record` goes back to the ingest queue as JSON; it is itself an accepted input shape.
- `raw`: bodies unchanged.

A body that does not fit its kind stays in the dead-letter queue and is counted, with why.

**Filtered and dry runs** (`DeliveryFilter`: partner, event pattern, since/until) always
receive/send/delete, since the move task cannot filter. The time is the dead letter's SQS
`SentTimestamp`: when the Dispatcher or the Distiller parked it (they park it themselves on the
last receive, so it is the dead-lettering time). A message that does not match, and every
message of a dry run, is never deleted: it stays hidden while the pass reads on (so the pass
sees each message once and reaches the end of the queue), then is made visible again at once
with ChangeMessageVisibility 0.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from distiller.adapters.queues import region_of
from distiller.deliver.message import DeliveryMessage, DeliveryMessageError
from distiller_tools.ops.dlq_filter import DeliveryFilter, group_rows, sqs_sent_at
from distiller_tools.ops.sqs_calls import error_text as _error_text
from distiller_tools.ops.sqs_calls import make_visible as _make_visible
from distiller_tools.ops.sqs_calls import move_task_unsupported as _move_task_unsupported
from distiller_tools.ops.sqs_calls import send as _send

logger = logging.getLogger(__name__)

RedriveKind = Literal["delivery", "ingest", "raw"]
REDRIVE_KINDS: tuple[str, ...] = ("delivery", "ingest", "raw")

RECEIVE_VISIBILITY_SECONDS = 60
"""How long a received dead letter stays hidden while it is sent on and deleted."""
HOLD_SECONDS = 3600
"""How long a message the pass leaves behind stays hidden, so a long pass never receives it again
(all are made visible when the pass ends; a crashed pass's come back after this)."""
RECEIVE_WAIT_SECONDS = 1
"""Long-poll wait per receive; an empty receive ends the move."""
MAX_PROBLEMS = 50
"""Per-message problems kept in a result (the counts are always complete)."""


class RedriveError(RuntimeError):
    """The redrive could not start (queue not found, destination unknown, AWS refused)."""


@dataclass(slots=True)
class RedriveResult:
    """What one redrive did, as `distiller dlq redrive` prints it (`to_json`)."""

    method: Literal["move-task", "receive-send-delete"]
    kind: str
    source_url: str
    destination_url: str | None
    """None: each message goes back to its original source queue (move task only)."""
    task_handle: str | None = None
    approximate_messages: int | None = None
    """Messages in the dead-letter queue when the move task started (the task is asynchronous)."""
    fallback_reason: str | None = None
    """Why StartMessageMoveTask was not used (method `receive-send-delete`)."""
    moved: int = 0
    left: int = 0
    """Bodies that do not fit the kind: left in the dead-letter queue."""
    send_failed: int = 0
    """Not sent: left in the dead-letter queue, nothing lost."""
    delete_failed: int = 0
    """Sent, but still in the dead-letter queue: a later redrive sends them again."""
    stopped: str | None = None
    """Why the move stopped before the queue was empty."""
    problems: list[str] = field(default_factory=list)
    dry_run: bool = False
    filter: DeliveryFilter | None = None
    matched: int = 0
    """Messages that match the filter and fit the kind: moved, or in a dry run what would move."""
    not_matching: int = 0
    """Left where they were: they do not match the filter."""
    groups: Counter[tuple[str | None, str | None]] = field(default_factory=Counter)
    """(partner, event) -> matched messages; (None, None) for kinds without a partner."""

    @property
    def complete(self) -> bool:
        return not (self.left or self.send_failed or self.delete_failed or self.stopped)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "kind": self.kind,
            "sourceUrl": self.source_url,
            "destinationUrl": self.destination_url,
            "taskHandle": self.task_handle,
            "approximateMessages": self.approximate_messages,
            "fallbackReason": self.fallback_reason,
            "moved": self.moved,
            "left": self.left,
            "sendFailed": self.send_failed,
            "deleteFailed": self.delete_failed,
            "stopped": self.stopped,
            "problems": self.problems,
            "dryRun": self.dry_run,
            "filter": self.filter.describe() if self.filter is not None else None,
            "matched": self.matched,
            "notMatching": self.not_matching,
            "byPartnerEvent": group_rows(self.groups),
        }

    def _problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


class NotRedrivable(ValueError):
    """A dead-letter body that does not fit the redrive kind; it stays where it is."""


def redrive_body(body: str, kind: RedriveKind) -> str:
    """The body to send back for one dead letter, or `NotRedrivable` saying why not."""
    return _prepared(body, kind)[1]


def _prepared(body: str, kind: RedriveKind) -> tuple[tuple[str | None, str | None], str]:
    """((partner, event), the body to send back); partner and event are None except for deliveries."""
    if kind == "raw":
        return (None, None), body
    if kind == "delivery":
        try:
            message = DeliveryMessage.from_body(body)
        except DeliveryMessageError as exc:
            raise NotRedrivable(f"not a delivery message: {exc}") from exc
        # the next round of attempts, with the whole retry schedule ahead of it
        again = message.next_round(message.redrive + 1)
        return (message.partner_id, message.event), again.to_body()
    if kind == "ingest":
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise NotRedrivable(f"not a parked record: not JSON: {exc}") from exc
        if not isinstance(data, dict) or not {"reason", "origin", "record"} <= data.keys():
            raise NotRedrivable('not a parked record: expected {"reason", "origin", "record"}')
        if data["record"] is None:
            raise NotRedrivable("not a parked record: record is null")
        if isinstance(data["record"], dict) and "trimmed" in data["record"]:
            # the relay's oversize change: its documents were dropped, so it cannot be distilled
            raise NotRedrivable("a trimmed oversize change holds no document: replay its time range instead")
        return (None, None), json.dumps(data["record"], separators=(",", ":"), ensure_ascii=False)
    raise ValueError(f"unknown redrive kind {kind!r}; expected one of {', '.join(REDRIVE_KINDS)}")


def redrive(
    sqs_client: Any,
    source_dlq_url: str,
    destination_url: str | None = None,
    *,
    kind: RedriveKind = "raw",
    max_messages: int | None = None,
    use_move_task: bool = True,
    wait_seconds: int | None = None,
    only: DeliveryFilter | None = None,
    dry_run: bool = False,
) -> RedriveResult:
    """Move the messages of a dead-letter queue back to work (see the module docstring).

    `destination_url` None: the queue the dead-letter queue serves (its redrive source; the
    one named like it without `-dlq` when there are several). `wait_seconds`: long-poll wait
    per receive (default `RECEIVE_WAIT_SECONDS`). Raises `RedriveError` when the move cannot
    start; per-message problems are counted in the result instead. `only`: move just the messages
    it matches, leave the others; `dry_run`: count what would move, move nothing.
    """
    if kind not in REDRIVE_KINDS:
        raise ValueError(f"unknown redrive kind {kind!r}; expected one of {', '.join(REDRIVE_KINDS)}")
    only = only if only is not None and only.active else None
    if only is not None and only.by_delivery and kind != "delivery":
        raise ValueError(
            "--partner/--event: parked ingest records have no partner or event; only --since/--until "
            "apply to an ingest dead-letter queue"
            if kind == "ingest"
            else "--partner/--event need --kind delivery"
        )
    if max_messages is not None and max_messages < 1:
        raise ValueError("max_messages must be at least 1")
    if destination_url is not None and destination_url == source_dlq_url:
        raise RedriveError("the destination is the dead-letter queue itself")

    reason = _why_not_move_task(kind, max_messages, use_move_task, only, dry_run)
    if reason is None:
        try:
            return _start_move_task(sqs_client, source_dlq_url, destination_url, kind)
        except _MoveTaskUnsupported as exc:
            reason = f"StartMessageMoveTask is not supported by this endpoint ({exc})"
            logger.info("falling back to receive/send/delete: %s", reason)

    _queue_attributes(sqs_client, source_dlq_url, ["QueueArn"])  # both exist before anything moves
    destination = destination_url or _source_queue_of(sqs_client, source_dlq_url)
    if destination == source_dlq_url:
        raise RedriveError("the destination is the dead-letter queue itself")
    _queue_attributes(sqs_client, destination, ["QueueArn"])
    result = RedriveResult(
        method="receive-send-delete",
        kind=kind,
        source_url=source_dlq_url,
        destination_url=destination,
        fallback_reason=reason,
        dry_run=dry_run,
        filter=only,
    )
    _move(sqs_client, result, kind, max_messages, RECEIVE_WAIT_SECONDS if wait_seconds is None else wait_seconds)
    return result


def _why_not_move_task(
    kind: str, max_messages: int | None, use_move_task: bool, only: DeliveryFilter | None, dry_run: bool
) -> str | None:
    if dry_run:
        return "a dry run reads and counts, it moves nothing"
    if only is not None:
        return "StartMessageMoveTask cannot filter; a filtered redrive reads each message"
    if not use_move_task:
        return "not asked for (use_move_task=False)"
    if kind != "raw":
        rewrite = "attempt reset" if kind == "delivery" else "the parked record unwrapped"
        return f"StartMessageMoveTask moves bodies unchanged; {kind} messages go back with {rewrite}"
    if max_messages is not None:
        return "StartMessageMoveTask cannot stop after a number of messages"
    return None


class _MoveTaskUnsupported(Exception):
    pass


def _start_move_task(client: Any, source_url: str, destination_url: str | None, kind: str) -> RedriveResult:
    try:
        method = client.start_message_move_task
    except AttributeError as exc:
        raise _MoveTaskUnsupported("this botocore has no start_message_move_task") from exc
    source = _queue_attributes(client, source_url, ["QueueArn", "ApproximateNumberOfMessages"])
    request = {"SourceArn": source["QueueArn"]}
    if destination_url is not None:
        request["DestinationArn"] = _queue_attributes(client, destination_url, ["QueueArn"])["QueueArn"]
    try:
        response = method(**request)
    except (NotImplementedError, ClientError) as exc:
        if _move_task_unsupported(exc):
            raise _MoveTaskUnsupported(_error_text(exc)) from exc
        raise RedriveError(f"StartMessageMoveTask refused: {_error_text(exc)}") from exc
    except BotoCoreError as exc:
        raise RedriveError(f"StartMessageMoveTask failed: {exc}") from exc
    approximate = source.get("ApproximateNumberOfMessages")
    return RedriveResult(
        method="move-task",
        kind=kind,
        source_url=source_url,
        destination_url=destination_url,
        task_handle=response.get("TaskHandle"),
        approximate_messages=int(approximate) if approximate is not None else None,
    )


def _queue_attributes(client: Any, url: str, names: list[str]) -> dict[str, str]:
    try:
        return client.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    except (ClientError, BotoCoreError) as exc:
        raise RedriveError(f"{url}: {_error_text(exc)}") from exc


def _source_queue_of(client: Any, dlq_url: str) -> str:
    """The queue whose redrive policy targets this dead-letter queue."""
    try:
        sources = list(client.list_dead_letter_source_queues(QueueUrl=dlq_url).get("queueUrls", []))
    except (ClientError, BotoCoreError) as exc:
        reason = _error_text(exc)
        raise RedriveError(f"{dlq_url}: cannot list its source queues ({reason}); name the destination") from exc
    if dlq_url.endswith("-dlq") and dlq_url[: -len("-dlq")] in sources:
        return dlq_url[: -len("-dlq")]
    if len(sources) == 1:
        return sources[0]
    if not sources:
        raise RedriveError(f"{dlq_url}: no queue uses it as its dead-letter queue; name the destination")
    raise RedriveError(f"{dlq_url}: several queues use it ({', '.join(sorted(sources))}); name the destination")


def _move(client: Any, result: RedriveResult, kind: RedriveKind, max_messages: int | None, wait: int) -> None:
    left: dict[str, str] = {}
    """messageId -> receipt handle of messages left in the dead-letter queue (made visible at the end)."""
    taken = 0
    try:
        while max_messages is None or taken < max_messages:
            wanted = 10 if max_messages is None else min(10, max_messages - taken)
            try:
                received = client.receive_message(
                    QueueUrl=result.source_url,
                    MaxNumberOfMessages=wanted,
                    VisibilityTimeout=RECEIVE_VISIBILITY_SECONDS,
                    WaitTimeSeconds=wait,
                    AttributeNames=["SentTimestamp"],
                ).get("Messages", [])
            except (ClientError, BotoCoreError) as exc:
                if taken == 0 and not left:
                    raise RedriveError(f"{result.source_url}: {_error_text(exc)}") from exc
                result.stopped = f"receive failed: {_error_text(exc)}"
                return
            if not received:
                return  # an empty receive: the queue holds nothing more to read
            fresh = [m for m in received if m["MessageId"] not in left]
            for message in received:
                if message["MessageId"] in left:
                    left[message["MessageId"]] = message["ReceiptHandle"]
            if not fresh:  # only messages left behind came back: the pass outlasted their hold
                result.stopped = "messages left behind came back before the pass ended: run it again for the rest"
                return
            already_left = set(left)

            batch: list[dict[str, Any]] = []
            bodies: list[str] = []
            for message in fresh:
                only = result.filter
                if only is not None and not only.matches_time(sqs_sent_at(message)):
                    left[message["MessageId"]] = message["ReceiptHandle"]
                    result.not_matching += 1
                    continue
                try:
                    group, body = _prepared(message["Body"], kind)
                except NotRedrivable as exc:
                    left[message["MessageId"]] = message["ReceiptHandle"]
                    result.left += 1
                    result._problem(f"{message['MessageId']}: left in the dead-letter queue: {exc}")
                    continue
                if only is not None and only.by_delivery and not only.matches_delivery(group[0] or "", group[1] or ""):
                    left[message["MessageId"]] = message["ReceiptHandle"]
                    result.not_matching += 1
                    continue
                if max_messages is not None and taken + len(batch) >= max_messages:
                    left[message["MessageId"]] = message["ReceiptHandle"]  # over --max: untouched
                    continue
                result.matched += 1
                result.groups[group] += 1
                if result.dry_run:
                    left[message["MessageId"]] = message["ReceiptHandle"]
                    taken += 1
                    continue
                bodies.append(body)
                batch.append(message)
            newly_left = [handle for message_id, handle in left.items() if message_id not in already_left]
            _make_visible(client, result.source_url, newly_left, after_seconds=HOLD_SECONDS)
            if not batch:
                continue
            taken += len(batch)

            failed = _send(client, result.destination_url or "", bodies)
            sent = [m for i, m in enumerate(batch) if i not in failed]
            for index, error in failed.items():
                message = batch[index]
                left[message["MessageId"]] = message["ReceiptHandle"]
                result.send_failed += 1
                result._problem(f"{message['MessageId']}: not sent, left in the dead-letter queue: {error}")
            result.moved += len(sent)
            _delete(client, result, sent)
            if not sent:
                result.stopped = "no message of the last batch could be sent to the destination"
                return
    finally:
        _make_visible(client, result.source_url, list(left.values()))


def _delete(client: Any, result: RedriveResult, sent: list[dict[str, Any]]) -> None:
    if not sent:
        return
    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(sent)]
    try:
        response = client.delete_message_batch(QueueUrl=result.source_url, Entries=entries)
        failures = [(int(f["Id"]), f"{f.get('Code')}: {f.get('Message')}") for f in response.get("Failed", [])]
    except (ClientError, BotoCoreError) as exc:
        failures = [(i, _error_text(exc)) for i in range(len(sent))]
    for index, error in failures:
        result.delete_failed += 1
        result._problem(f"{sent[index]['MessageId']}: sent, but still in the dead-letter queue: {error}")


def infer_kind(queue_url: str) -> RedriveKind | None:
    """The kind of a dead-letter queue named as template.yaml names them."""
    name = queue_url.rstrip("/").rsplit("/", 1)[-1]
    if name.endswith("-delivery-dlq"):
        return "delivery"
    if name.endswith("-ingest-dlq"):
        return "ingest"
    return None


def sqs_client(queue_url: str, endpoint_url: str | None) -> Any:
    """An SQS client in the queue's own region (read from its URL), at `endpoint_url` if given."""
    import boto3

    return boto3.client("sqs", region_name=region_of(queue_url), endpoint_url=endpoint_url)


__all__ = [
    "REDRIVE_KINDS",
    "NotRedrivable",
    "RedriveError",
    "RedriveKind",
    "RedriveResult",
    "infer_kind",
    "redrive",
    "redrive_body",
    "sqs_client",
]
