"""The relay loop: change stream → ingest queue, checkpointing only what SQS accepted (see SOURCES.md §3).

The relay watches the database (`$match` on the source collections), writes every change as
relaxed Extended JSON to the ingest queue, in stream order and batches of at most 10, and
checkpoints the resume token only once the batch holding that change was accepted by SQS.
A crash between the send and the checkpoint therefore replays changes, never skips them; the
replayed copies carry the same resume tokens, hence the same eventIds downstream, where the
duplicates are absorbed.

What the relay will not do is carry on from "now" when its position is gone: an expired or
unknown resume token, or an `invalidate` event, stops it with a `RelayError` that names the
token and the way back (`distiller replay`, or resetting the checkpoint on purpose). Nor does
it guess where to begin: with no checkpoint it refuses unless told a start position
(`--start-at` / RELAY_START_AT: `now`, a cluster time or a resume token); once a checkpoint
exists, the checkpoint always wins.

One change too big for an SQS message does not halt the stream: it is parked at once on the
ingest dead-letter queue as a trimmed record (its identity and size, not its documents) with
the reason, and the relay checkpoints past it. If it cannot be parked, the relay stops before
it, so it is never skipped unrecorded.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import OperationFailure

from distiller.adapters.queues import MAX_BATCH_BYTES, MAX_BATCH_ENTRIES, DeadLetters, MessageQueue, OutgoingMessage
from distiller.relay.stream import (
    CHECKPOINTS_COLLECTION,
    DEFAULT_COLLECTIONS,
    DEFAULT_MAX_AWAIT_MS,
    DEFAULT_RELAY_NAME,
    LOST_POSITION_CODES,
    ChangeStream,
    ChangeStreamSource,
    CheckpointStore,
    RelayError,
    RelaySendError,
    StartAt,
    change_time,
    iso,
    lost_position_message,
    serialise,
    token_data,
    trimmed_record,
    watch_options,
)

logger = logging.getLogger(__name__)

#: A partly filled batch is sent after this long, so a trickle of changes is not held back.
DEFAULT_MAX_BATCH_DELAY = 1.0


def _invalidated(change: Mapping[str, Any], name: str) -> str:
    data = token_data(change.get("_id"))
    return (
        f"{name}: the change stream was invalidated at {iso(change_time(change))} (token {data}; "
        "the database was dropped or renamed). The relay will NOT restart from now on its own. Recover: "
        f"reset the checkpoint (delete {{_id: {name!r}}} from {CHECKPOINTS_COLLECTION} and start again with "
        f"`--start-at now`, or RELAY_START_AT=now on Lambda), then replay the gap with "
        f"`distiller replay --after-token {data} "
        "--queue-url <ingest queue>`."
    )


def _no_checkpoint(name: str) -> str:
    return (
        f"{name}: no checkpoint in {CHECKPOINTS_COLLECTION} (no document {{_id: {name!r}}}) and no start "
        "position given: the relay will NOT guess (starting from now would silently skip whatever was "
        "written since it last ran). Say where to start: `--start-at now` (from the current time), "
        "`--start-at <ISO time>` (from that cluster time; the oplog must still hold it) or "
        "`--start-at <resume token>` (after that token); on Lambda set RELAY_START_AT to the same. "
        "Once a checkpoint exists it always wins over the start position."
    )


@dataclass(slots=True)
class RelayResult:
    read: int = 0
    sent: int = 0
    failed: int = 0
    parked: int = 0
    """Changes too big for SQS, parked on the ingest dead-letter queue and checkpointed past."""
    resumed_from: str | None = None
    checkpoint: str | None = None
    stopped: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "sent": self.sent,
            "failed": self.failed,
            "parked": self.parked,
            "resumedFrom": self.resumed_from,
            "checkpoint": self.checkpoint,
            "stopped": self.stopped,
        }


@dataclass(slots=True)
class _Pending:
    changes: list[Mapping[str, Any]] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)
    since: float = 0.0


class Relay:
    """Change stream → ingest queue, checkpointing only what SQS accepted. One instance per relay name.

    `dead_letters`: where a change too big for SQS is parked (None: the relay stops before it).
    `start_at`: where to start when there is no checkpoint (None: refuse); a checkpoint always wins.
    """

    def __init__(
        self,
        source: ChangeStreamSource,
        queue: MessageQueue,
        checkpoints: CheckpointStore,
        *,
        name: str = DEFAULT_RELAY_NAME,
        collections: Sequence[str] = DEFAULT_COLLECTIONS,
        max_await_time_ms: int = DEFAULT_MAX_AWAIT_MS,
        max_batch_delay: float = DEFAULT_MAX_BATCH_DELAY,
        clock: Callable[[], float] = time.monotonic,
        dead_letters: DeadLetters | None = None,
        start_at: StartAt | None = None,
    ) -> None:
        if not collections:
            raise ValueError("the relay needs at least one collection to watch")
        self.source = source
        self.queue = queue
        self.checkpoints = checkpoints
        self.name = name
        self.collections = tuple(collections)
        self.max_await_time_ms = max_await_time_ms
        self.max_batch_delay = max_batch_delay
        self._clock = clock
        self.dead_letters = dead_letters
        self.start_at = start_at

    def run(
        self, *, max_seconds: float | None = None, max_events: int | None = None, stop_when_idle: bool = False
    ) -> RelayResult:
        """Relay until a bound is reached, then send what was read, checkpoint it, and return.

        `max_seconds`: stop reading after this long (the last getMore may add `max_await_time_ms`).
        `max_events`: stop after reading this many changes. `stop_when_idle`: stop once caught up.
        Raises `RelayError` for a lost position, an invalidated stream, or no checkpoint and no
        `start_at`; `RelaySendError` when the queue refuses a batch or an oversize change cannot be
        parked; the checkpoint then holds the last change SQS accepted (or parked).
        """
        if max_seconds is None and max_events is None and not stop_when_idle:
            raise ValueError("run() needs a bound: max_seconds, max_events or stop_when_idle")
        checkpoint = self.checkpoints.load(self.name)
        result = RelayResult(resumed_from=checkpoint.data if checkpoint else None)
        result.checkpoint = result.resumed_from
        if checkpoint is not None:
            last_change_time = checkpoint.change_time
            position = f"resume token {checkpoint.data}"
            start: dict[str, Any] = {"resume_after": checkpoint.token}
        elif self.start_at is not None:
            last_change_time = self.start_at.time
            position = str(self.start_at)
            start = self.start_at.watch_position()
            logger.warning(
                "relay %s: no checkpoint in %s: starting at %s, as told (first run or a deliberate reset)",
                self.name,
                CHECKPOINTS_COLLECTION,
                position,
            )
        else:
            message = _no_checkpoint(self.name)
            logger.error(message)
            raise RelayError(message, result=result)
        deadline = None if max_seconds is None else self._clock() + max_seconds
        pending = _Pending()
        options = watch_options(self.collections, self.max_await_time_ms, **start)
        try:
            with self.source.watch(**options) as stream:
                while True:
                    if max_events is not None and result.read >= max_events:
                        result.stopped = "max-events"
                        break
                    if deadline is not None and self._clock() >= deadline:
                        result.stopped = "max-seconds"
                        break
                    change = stream.try_next()
                    if change is None:
                        last_change_time = self._flush(pending, result, last_change_time)
                        if stop_when_idle or not stream.alive:
                            result.stopped = "idle" if stream.alive else "closed"
                            break
                        continue
                    if change.get("operationType") == "invalidate":
                        self._flush(pending, result, last_change_time)
                        message = _invalidated(change, self.name)
                        logger.error(message)
                        raise RelayError(message, token=token_data(change.get("_id")), result=result)
                    result.read += 1
                    last_change_time = self._add(pending, change, result, last_change_time)
                    position = f"resume token {token_data(change.get('_id'))}"
                    if (
                        len(pending.changes) >= MAX_BATCH_ENTRIES
                        or self._clock() - pending.since >= self.max_batch_delay
                    ):
                        last_change_time = self._flush(pending, result, last_change_time)
                last_change_time = self._flush(pending, result, last_change_time)
                self._save_stream_position(stream, result, last_change_time)
        except OperationFailure as exc:
            if exc.code not in LOST_POSITION_CODES:
                raise
            # Whatever was read before the failure is sound: send it, then report.
            last_change_time = self._flush(pending, result, last_change_time)
            message = lost_position_message(exc, position, last_change_time, self.name)
            logger.error(message)
            token = result.checkpoint if result.checkpoint else None
            raise RelayError(message, token=token, result=result) from exc
        logger.info(
            "relay %s: read %d, sent %d, parked %d, checkpoint %s, stopped: %s",
            self.name,
            result.read,
            result.sent,
            result.parked,
            result.checkpoint,
            result.stopped,
        )
        return result

    def _add(
        self, pending: _Pending, change: Mapping[str, Any], result: RelayResult, last: dt.datetime | None
    ) -> dt.datetime | None:
        """Queue one change for the next batch, or park it if it is too big; returns the last checkpointed time."""
        body = serialise(change)
        size = len(body.encode("utf-8"))
        if size > MAX_BATCH_BYTES:
            last = self._flush(pending, result, last)  # what came before goes (and is checkpointed) first
            return self._park_oversize(change, size, result, last)
        if not pending.changes:
            pending.since = self._clock()
        pending.changes.append(change)
        pending.bodies.append(body)
        return last

    def _park_oversize(
        self, change: Mapping[str, Any], size: int, result: RelayResult, last: dt.datetime | None
    ) -> dt.datetime | None:
        """Park a change too big for SQS as a trimmed record, then checkpoint past it; stop if that fails."""
        data = token_data(change.get("_id"))
        ns = change.get("ns") if isinstance(change.get("ns"), Mapping) else {}
        key = change.get("documentKey") if isinstance(change.get("documentKey"), Mapping) else {}
        when = change_time(change)
        again = (
            f"distiller replay --since {iso(when)} --until {iso(when)}"
            if when is not None
            else f"distiller replay --after-token {result.checkpoint or '<previous token>'}"
        )
        reason = (
            f"change too large for SQS: {size} bytes > {MAX_BATCH_BYTES}; re-read the document "
            f"({ns.get('coll')} {key.get('_id')}) or replay it (`{again} | distiller distill`)"
        )
        origin = f"relay {self.name} {ns.get('db')}.{ns.get('coll')} token {data}"
        held = f"checkpoint left at {result.checkpoint or '<none>'}: the next run tries again"
        if self.dead_letters is None:
            message = (
                f"{self.name}: change {data} ({change.get('operationType')}): {reason}. There is no dead-letter "
                f"queue to park it on (INGEST_DLQ_URL, or `--dead-letter-queue-url`), so the relay stops before it; "
                + held
            )
            logger.error(message)
            raise RelayError(message, token=data, result=result)
        if not self.dead_letters.park(trimmed_record(change, size), reason, origin):
            message = (
                f"{self.name}: change {data} ({change.get('operationType')}) is too large for SQS ({size} bytes) "
                f"and could not be parked on the ingest dead-letter queue; the relay stops before it, {held}"
            )
            logger.error(message)
            raise RelaySendError(message, token=data, result=result)
        last = when or last
        self.checkpoints.save(self.name, change["_id"], last)
        result.parked += 1
        result.checkpoint = data
        logger.error("%s: parked change %s on the ingest dead-letter queue: %s", self.name, data, reason)
        return last

    def _flush(self, pending: _Pending, result: RelayResult, last: dt.datetime | None) -> dt.datetime | None:
        """Send the pending batch; checkpoint the last change SQS accepted. Returns its change time."""
        if not pending.changes:
            return last
        changes, bodies = pending.changes, pending.bodies
        pending.changes, pending.bodies = [], []
        failed = self.queue.send([OutgoingMessage(body) for body in bodies])
        accepted = min(failed) if failed else len(changes)
        if accepted:
            last = change_time(changes[accepted - 1]) or last
            token = changes[accepted - 1]["_id"]
            self.checkpoints.save(self.name, token, last)
            result.sent += accepted
            result.checkpoint = token_data(token)
        if failed:
            result.failed += len(failed)
            first = token_data(changes[accepted].get("_id"))
            message = (
                f"{self.name}: the ingest queue refused {len(failed)} of {len(changes)} change(s), first {first}; "
                f"checkpoint left at {result.checkpoint or '<none>'}: the next run resends from there"
            )
            logger.error(message)
            raise RelaySendError(message, token=first, result=result)
        return last

    def _save_stream_position(self, stream: ChangeStream, result: RelayResult, last: dt.datetime | None) -> None:
        """After a clean stop with nothing pending, keep the stream's own position.

        On a quiet stream the server still advances the resume token past changes the `$match`
        drops; saving it keeps the checkpoint inside the oplog window through quiet spells.
        """
        token = getattr(stream, "resume_token", None)
        if token and token_data(token) != result.checkpoint:
            self.checkpoints.save(self.name, token, last)
            result.checkpoint = token_data(token)
