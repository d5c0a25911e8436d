"""Ingest path 3: our own change-stream relay over a self-managed replica set (see SOURCES.md §3).

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

`replay` re-emits a range of the stream (from a time, or after a token) to the ingest queue or
to a text stream as JSON Lines, which `distiller distill` reads.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, Self, TextIO

from bson import Timestamp, json_util
from pymongo.errors import OperationFailure, PyMongoError

from distiller.adapters.queues import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    DeadLetters,
    MessageQueue,
    OutgoingMessage,
    region_of,
)
from distiller.core.clock import parse_instant
from distiller.settings import Env, MongoSettings, SettingsError

logger = logging.getLogger(__name__)

#: The collections the distiller has reducers for (RELAY_COLLECTIONS overrides).
DEFAULT_COLLECTIONS: tuple[str, ...] = (
    "deals",
    "offers",
    "seller_listings",
    "users",
    "documents",
    "platoforms_generated_documents",
    "credit_reports",
)
CHECKPOINTS_COLLECTION = "relay_checkpoints"
DEFAULT_RELAY_NAME = "change-stream-relay"
#: How long one getMore waits on the server for new changes; bounds how far a run overshoots its deadline.
DEFAULT_MAX_AWAIT_MS = 1000
#: A partly filled batch is sent after this long, so a trickle of changes is not held back.
DEFAULT_MAX_BATCH_DELAY = 1.0

#: Server error codes meaning "this resume position no longer exists or cannot be used".
LOST_POSITION_CODES: Mapping[int, str] = {
    260: "InvalidResumeToken",
    280: "ChangeStreamFatalError",
    286: "ChangeStreamHistoryLost",
    40585: "resume token not found",
    40615: "resume token UUID not found",
}

SERIALISE_OPTIONS = json_util.RELAXED_JSON_OPTIONS

#: What a parked oversize change keeps: its identity, never its documents.
TRIMMED_KEEPS: tuple[str, ...] = ("_id", "operationType", "ns", "documentKey", "clusterTime", "wallTime")
#: What a parked oversize change drops (the values that made it too big).
TRIMMED_DROPS: tuple[str, ...] = ("fullDocument", "fullDocumentBeforeChange", "updateDescription")
#: Updated/removed field names are kept in a parked record only up to this many bytes of JSON.
MAX_FIELD_NAMES_BYTES = 64 * 1024


class RelayError(RuntimeError):
    """The relay (or a replay) stopped and will not continue on its own; the message says how to recover."""

    def __init__(self, message: str, *, token: str | None = None, result: RelayResult | None = None) -> None:
        super().__init__(message)
        self.token = token
        self.result = result


class RelaySendError(RelayError):
    """The ingest queue (or its dead-letter queue) did not take a change; nothing from it on was checkpointed."""


# --- ports ------------------------------------------------------------------------------------


class ChangeStream(Protocol):
    """What the relay needs of a pymongo `ChangeStream` (a context manager)."""

    @property
    def alive(self) -> bool: ...

    @property
    def resume_token(self) -> Mapping[str, Any] | None: ...

    def try_next(self) -> Mapping[str, Any] | None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> Any: ...


class ChangeStreamSource(Protocol):
    """Something with pymongo's `Database.watch` / `Collection.watch` signature."""

    def watch(self, **kwargs: Any) -> ChangeStream: ...


@dataclass(frozen=True, slots=True)
class Checkpoint:
    token: dict[str, Any]
    """The resume token (`{"_data": hex}`) of the last change safely on the ingest queue."""
    saved_at: dt.datetime | None = None
    change_time: dt.datetime | None = None
    """clusterTime of the last change forwarded: where `distiller replay --since` would pick up."""

    @property
    def data(self) -> str:
        return token_data(self.token)


class CheckpointStore(Protocol):
    def load(self, name: str) -> Checkpoint | None: ...

    def save(self, name: str, token: Mapping[str, Any], change_time: dt.datetime | None = None) -> None: ...


class MongoCheckpointStore:
    """`relay_checkpoints`: one document per relay name, `{_id: name, token, savedAt, changeTime}`.

    It lives in the watched database; the relay's `$match` on the source collections keeps its
    own writes out of the stream.
    """

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def load(self, name: str) -> Checkpoint | None:
        doc = self._collection.find_one({"_id": name})
        if doc is None:
            return None
        token = doc.get("token")
        if not isinstance(token, dict) or not isinstance(token.get("_data"), str) or not token["_data"]:
            raise RelayError(
                f"relay {name}: the checkpoint in {CHECKPOINTS_COLLECTION} holds no usable resume token "
                f"({token!r}); fix it, or delete {{_id: {name!r}}} and start again with `--start-at now` "
                "(RELAY_START_AT=now on Lambda), then replay the gap with `distiller replay --since ...`"
            )
        return Checkpoint(dict(token), doc.get("savedAt"), doc.get("changeTime"))

    def save(self, name: str, token: Mapping[str, Any], change_time: dt.datetime | None = None) -> None:
        update: dict[str, Any] = {"token": dict(token), "savedAt": dt.datetime.now(dt.UTC)}
        if change_time is not None:
            update["changeTime"] = change_time
        self._collection.update_one({"_id": name}, {"$set": update}, upsert=True)


# --- shared helpers ---------------------------------------------------------------------------


def token_data(token: Mapping[str, Any] | None) -> str:
    """The `_data` hex of a resume token (what `--after-token` takes), or a readable fallback."""
    if token is None:
        return "<none>"
    data = token.get("_data")
    return data if isinstance(data, str) else repr(dict(token))


def serialise(change: Mapping[str, Any]) -> str:
    """One change as relaxed Extended JSON on one line (what the distiller's sources parse)."""
    return json_util.dumps(change, json_options=SERIALISE_OPTIONS, separators=(",", ":"))


def change_time(change: Mapping[str, Any]) -> dt.datetime | None:
    cluster_time = change.get("clusterTime")
    if isinstance(cluster_time, Timestamp):
        return cluster_time.as_datetime()
    wall_time = change.get("wallTime")
    if isinstance(wall_time, dt.datetime):
        return wall_time if wall_time.tzinfo else wall_time.replace(tzinfo=dt.UTC)
    return None


def watch_options(collections: Sequence[str], max_await_time_ms: int, **position: Any) -> dict[str, Any]:
    """The `watch()` arguments: the source collections, post-images, pre-images when kept, a position."""
    options: dict[str, Any] = {
        "pipeline": [{"$match": {"ns.coll": {"$in": list(collections)}}}],
        "full_document": "updateLookup",
        "full_document_before_change": "whenAvailable",
        "max_await_time_ms": max_await_time_ms,
    }
    options.update({k: v for k, v in position.items() if v is not None})
    return options


def _iso(value: dt.datetime | None) -> str:
    if value is None:
        return "<unknown>"
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _lost_position(exc: OperationFailure, position: str, since_hint: dt.datetime | None, name: str) -> str:
    code_name = LOST_POSITION_CODES.get(exc.code or 0, f"code {exc.code}")
    since = _iso(since_hint) if since_hint else "<the last time you know was relayed>"
    return (
        f"{name}: the change stream cannot resume from {position}: {code_name} ({exc.code}): "
        f"{exc.details.get('errmsg') if exc.details else exc}. Changes after that point may be lost; "
        f"the relay will NOT restart from now on its own. Recover: reset the checkpoint (delete "
        f"{{_id: {name!r}}} from {CHECKPOINTS_COLLECTION} and start again with `--start-at now`, or "
        "RELAY_START_AT=now on Lambda), then "
        f"replay the gap from a time with `distiller replay --since {since} --queue-url <ingest queue>` "
        "(the oplog must still hold that time; duplicates are absorbed downstream by eventId)."
    )


def _invalidated(change: Mapping[str, Any], name: str) -> str:
    data = token_data(change.get("_id"))
    return (
        f"{name}: the change stream was invalidated at {_iso(change_time(change))} (token {data}; "
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


def _timestamp(value: dt.datetime) -> Timestamp:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return Timestamp(int(value.timestamp()), 0)  # inclusive: the first change of that second on


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where a relay with no checkpoint starts: the current time (neither set), a cluster time, or after a token."""

    time: dt.datetime | None = None
    token: dict[str, str] | None = None

    def watch_position(self) -> dict[str, Any]:
        """The `watch()` position argument: `start_at_operation_time`, `resume_after`, or none (now)."""
        if self.time is not None:
            return {"start_at_operation_time": _timestamp(self.time)}
        if self.token is not None:
            return {"resume_after": dict(self.token)}
        return {}

    def __str__(self) -> str:
        if self.time is not None:
            return f"cluster time {_iso(self.time)}"
        if self.token is not None:
            return f"resume token {token_data(self.token)}"
        return "the current time"


def parse_start_at(text: str) -> StartAt:
    """`now`, an ISO 8601 time (no zone means UTC) or a resume token's `_data` hex; `ValueError` otherwise."""
    value = text.strip()
    if value.lower() == "now":
        return StartAt()
    try:
        return StartAt(time=_iso_argument(value))
    except argparse.ArgumentTypeError:
        pass
    try:
        return StartAt(token=_token_argument(value))
    except argparse.ArgumentTypeError:
        pass
    raise ValueError(
        f"not a start position: {text!r} (give `now`, an ISO 8601 time such as 2026-04-21T14:00:00Z, "
        "or a resume token's _data hex string)"
    )


def trimmed_record(change: Mapping[str, Any], size: int) -> dict[str, Any]:
    """What is parked for a change too big for SQS: its identity and size, as relaxed Extended JSON.

    `trimmed` says what was dropped; the names of updated/removed fields are kept when they are
    small (under `MAX_FIELD_NAMES_BYTES`), their values never.
    """
    record: dict[str, Any] = {key: change[key] for key in TRIMMED_KEEPS if key in change}
    trimmed: dict[str, Any] = {
        "sizeBytes": size,
        "limitBytes": MAX_BATCH_BYTES,
        "omitted": [key for key in TRIMMED_DROPS if key in change],
    }
    description = change.get("updateDescription")
    if isinstance(description, Mapping):
        updated = description.get("updatedFields")
        removed = description.get("removedFields")
        names = {
            "updatedFields": [str(k) for k in updated] if isinstance(updated, Mapping) else [],
            "removedFields": [str(k) for k in removed] if isinstance(removed, list) else [],
        }
        if len(json.dumps(names)) <= MAX_FIELD_NAMES_BYTES:
            trimmed.update(names)
        else:
            trimmed["fieldNamesOmitted"] = len(names["updatedFields"]) + len(names["removedFields"])
    record["trimmed"] = trimmed
    return json.loads(serialise(record))


# --- the relay --------------------------------------------------------------------------------


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
            message = _lost_position(exc, position, last_change_time, self.name)
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
            f"distiller replay --since {_iso(when)} --until {_iso(when)}"
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


# --- replay -----------------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayResult:
    emitted: int = 0
    first_token: str | None = None
    last_token: str | None = None
    stopped: str = ""


def replay(
    source: ChangeStreamSource,
    since: dt.datetime | None,
    after_token: Mapping[str, Any] | None,
    until: dt.datetime | None,
    sink: MessageQueue | IO[str],
    *,
    collections: Sequence[str] = DEFAULT_COLLECTIONS,
    max_await_time_ms: int = DEFAULT_MAX_AWAIT_MS,
) -> ReplayResult:
    """Re-emit the changes from `since` (inclusive) or after `after_token`, up to `until` or until caught up.

    The changes are the stream's own documents, so the same resume tokens and the same eventIds
    as the first time. `sink` is a queue (batches of 10, in order) or a text stream (JSON Lines).
    """
    if (since is None) == (after_token is None):
        raise ValueError("replay needs exactly one of since or after_token")
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=dt.UTC)
    position = (
        {"start_at_operation_time": _timestamp(since)}
        if since is not None
        else {"start_after": dict(after_token or {})}
    )
    where = f"--since {_iso(since)}" if since is not None else f"--after-token {token_data(after_token)}"
    result = ReplayResult()
    batch: list[Mapping[str, Any]] = []

    def emit() -> None:
        if not batch:
            return
        bodies = [serialise(change) for change in batch]
        if hasattr(sink, "send"):
            failed = sink.send([OutgoingMessage(body) for body in bodies])  # type: ignore[union-attr]
            accepted = min(failed) if failed else len(batch)
        else:
            sink.write("".join(body + "\n" for body in bodies))  # type: ignore[union-attr]
            sink.flush()  # type: ignore[union-attr]
            failed, accepted = [], len(batch)
        if accepted:
            result.emitted += accepted
            result.first_token = result.first_token or token_data(batch[0].get("_id"))
            result.last_token = token_data(batch[accepted - 1].get("_id"))
        if failed:
            raise RelaySendError(
                f"replay: the queue refused {len(failed)} change(s), first {token_data(batch[accepted].get('_id'))}; "
                f"continue with `distiller replay --after-token {result.last_token}`"
                if result.last_token
                else f"replay: the queue refused {len(failed)} change(s); nothing was sent: rerun {where}",
                token=result.last_token,
            )
        batch.clear()

    try:
        with source.watch(**watch_options(collections, max_await_time_ms, **position)) as stream:
            while True:
                change = stream.try_next()
                if change is None:
                    result.stopped = "caught-up" if stream.alive else "closed"
                    break
                when = change_time(change)
                if until is not None and when is not None and when > until:
                    result.stopped = "until"
                    break
                if change.get("operationType") == "invalidate":
                    emit()
                    data = token_data(change.get("_id"))
                    raise RelayError(
                        f"replay {where}: the stream was invalidated at {_iso(when)} (token {data}); "
                        f"continue after it with `distiller replay --after-token {data}`",
                        token=data,
                    )
                batch.append(change)
                if len(batch) >= MAX_BATCH_ENTRIES:
                    emit()
            emit()
    except OperationFailure as exc:
        if exc.code not in LOST_POSITION_CODES:
            raise
        emit()
        raise RelayError(_lost_position(exc, where, since, "replay"), token=token_data(after_token)) from exc
    return result


# --- Lambda wiring ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelaySettings:
    ingest_queue_url: str
    ingest_dead_letter_queue_url: str
    """Where a change too big for SQS is parked (INGEST_DLQ_URL, required)."""
    collections: tuple[str, ...] = DEFAULT_COLLECTIONS
    max_seconds: float = 50.0
    name: str = DEFAULT_RELAY_NAME
    start_at: StartAt | None = None
    """RELAY_START_AT: where to start while there is no checkpoint; unset, the relay refuses to guess."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        e = Env(env)
        raw = e.text("RELAY_COLLECTIONS", ",".join(DEFAULT_COLLECTIONS))
        collections = tuple(c.strip() for c in raw.split(",") if c.strip())
        if not collections:
            raise SettingsError("RELAY_COLLECTIONS: needs at least one collection name")
        raw_start = e.text("RELAY_START_AT", "")
        try:
            start_at = parse_start_at(raw_start) if raw_start else None
        except ValueError as exc:
            raise SettingsError(f"RELAY_START_AT: {exc}") from exc
        return cls(
            ingest_queue_url=e.required("INGEST_QUEUE_URL", "URL of the ingest queue"),
            ingest_dead_letter_queue_url=e.required("INGEST_DLQ_URL", "URL of the ingest dead-letter queue"),
            collections=collections,
            max_seconds=e.number("RELAY_MAX_SECONDS", 50.0, minimum=1),
            name=e.text("RELAY_NAME", DEFAULT_RELAY_NAME),
            start_at=start_at,
        )


@dataclass(slots=True)
class RelayRuntime:
    relay: Relay
    max_seconds: float

    @classmethod
    def build(cls, database: Any, settings: RelaySettings, sqs_client: Any = None) -> RelayRuntime:
        from distiller.adapters.queues import SqsQueue

        if sqs_client is None:
            import boto3

            sqs_client = boto3.client("sqs")
        relay = Relay(
            database,
            SqsQueue(sqs_client, settings.ingest_queue_url),
            MongoCheckpointStore(database[CHECKPOINTS_COLLECTION]),
            name=settings.name,
            collections=settings.collections,
            dead_letters=SqsQueue(sqs_client, settings.ingest_dead_letter_queue_url),
            start_at=settings.start_at,
        )
        return cls(relay=relay, max_seconds=settings.max_seconds)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RelayRuntime:
        from distiller.adapters.mongo import connect_database

        settings = RelaySettings.from_env(env)
        return cls.build(connect_database(MongoSettings.from_env(env)), settings)


# --- CLI: distiller replay, distiller relay -----------------------------------------------------

_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")


def _iso_argument(text: str) -> dt.datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; no zone means UTC") from exc


def _token_argument(text: str) -> dict[str, str]:
    data = text.strip()
    if not _HEX.fullmatch(data):
        raise argparse.ArgumentTypeError(
            f"not a resume token: {text!r} (give the _data hex string, e.g. 8263A1B2C3D4...)"
        )
    return {"_data": data}


def _start_at_argument(text: str) -> StartAt:
    try:
        return parse_start_at(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
        return value

    return parse


def _add_database_arguments(cmd: argparse.ArgumentParser, verb: str) -> None:
    cmd.add_argument(
        "--mongo-uri",
        default=os.environ.get("MONGODB_URI"),
        metavar="URI",
        help="MongoDB connection string of the replica set (default: $MONGODB_URI)",
    )
    cmd.add_argument("--database", default="privateauto", help="database to watch (default: privateauto)")
    cmd.add_argument(
        "--collection",
        action="append",
        dest="collections",
        metavar="NAME",
        help=f"a collection to {verb}; repeat for more (default: every collection the distiller reads)",
    )


def register(subparsers: Any) -> None:
    """Add `distiller replay` and `distiller relay` to the CLI's subparsers.

    Their handlers are `args.run(args, stdin, stdout, stderr)`.
    """
    _register_replay(subparsers)
    _register_relay(subparsers)


def _register_replay(subparsers: Any) -> None:
    cmd = subparsers.add_parser(
        "replay",
        help="re-emit a range of the MongoDB change stream to the ingest queue, or as JSON Lines",
        description="Read the change stream of a self-managed replica set from a time (--since) or after a "
        "resume token (--after-token), up to --until (default: now) or until caught up, and send each change "
        "to the ingest queue (--queue-url) or print it as a JSON line (pipe into `distiller distill`). "
        "Replayed changes carry their original resume tokens, so their eventIds are the original ones.",
    )
    start = cmd.add_mutually_exclusive_group(required=True)
    start.add_argument("--since", type=_iso_argument, metavar="ISO", help="first cluster time to replay (inclusive)")
    start.add_argument(
        "--after-token", type=_token_argument, metavar="TOKEN", help="replay after this resume token (_data hex)"
    )
    cmd.add_argument("--until", type=_iso_argument, metavar="ISO", help="last cluster time to replay (default: now)")
    _add_database_arguments(cmd, "replay")
    cmd.add_argument("--queue-url", metavar="URL", help="send to this SQS ingest queue (default: JSON Lines on stdout)")
    cmd.set_defaults(run=run_replay)


#: The checkpoint name of `distiller relay` without --queue-url: printing never moves the Lambda's checkpoint.
STDOUT_RELAY_NAME = f"{DEFAULT_RELAY_NAME}-stdout"


def _register_relay(subparsers: Any) -> None:
    cmd = subparsers.add_parser(
        "relay",
        help="forward the MongoDB change stream from the relay's checkpoint to the ingest queue, or as JSON Lines",
        description="What the Relay function does, from a shell: read the change stream of a self-managed replica "
        "set from the checkpoint of relay --name (collection relay_checkpoints in --database), send each change to "
        "the ingest queue (--queue-url) or print it as a JSON line, and checkpoint what was sent. A change too big "
        "for one SQS message is parked (--dead-letter-queue-url) and the relay moves past it. Stops once caught "
        "up, or after --max-seconds / --max-events. With no checkpoint yet it refuses to start unless --start-at "
        "says where.",
    )
    cmd.add_argument(
        "--start-at",
        type=_start_at_argument,
        metavar="now|ISO|TOKEN",
        help="where to start while relay --name has no checkpoint: `now` (the current time), an ISO 8601 time "
        "(startAtOperationTime; no zone means UTC; the oplog must still hold it) or a resume token (_data hex; "
        "resumeAfter). Ignored once a checkpoint exists: the checkpoint always wins. Without it, a relay with no "
        "checkpoint refuses to start.",
    )
    _add_database_arguments(cmd, "relay")
    cmd.add_argument(
        "--name",
        metavar="NAME",
        help=f"checkpoint name (default: {DEFAULT_RELAY_NAME}, the Lambda's own, with --queue-url; "
        f"{STDOUT_RELAY_NAME} without, so printing never moves the Lambda's checkpoint)",
    )
    cmd.add_argument("--queue-url", metavar="URL", help="send to this SQS ingest queue (default: JSON Lines on stdout)")
    cmd.add_argument(
        "--dead-letter-queue-url",
        metavar="URL",
        help="park changes too big for SQS on this ingest dead-letter queue, then move on. Without it: printed "
        "to stderr (with their reason) when writing to stdout; with --queue-url the relay stops before such a "
        "change instead, its checkpoint left before it",
    )
    cmd.add_argument(
        "--max-seconds",
        type=_positive(float),
        metavar="S",
        help="keep following the stream for this long, even when caught up (default: stop once caught up)",
    )
    cmd.add_argument("--max-events", type=_positive(int), metavar="N", help="stop after reading this many changes")
    cmd.set_defaults(run=run_relay)


def _sqs_queue(queue_url: str) -> Any:
    import boto3

    from distiller.adapters.queues import SqsQueue

    session = boto3.Session()
    client = session.client("sqs", region_name=session.region_name or region_of(queue_url))
    return SqsQueue(client, queue_url)


def _make_sink(queue_url: str | None, stdout: IO[str]) -> MessageQueue | IO[str]:
    if not queue_url:
        return stdout
    return _sqs_queue(queue_url)


class LinesOut:
    """A `MessageQueue` that prints each body as one line (JSON Lines `distiller distill` reads)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def send(self, messages: Sequence[OutgoingMessage]) -> list[int]:
        self._stream.write("".join(m.body + "\n" for m in messages))
        self._stream.flush()
        return []


class PrintedDeadLetters:
    """`DeadLetters` on a text stream (stderr): a line with the reason, then the parked message as JSON."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def park(self, record: Any, reason: str, origin: str) -> bool:
        body = json.dumps({"reason": reason, "origin": origin, "record": record}, default=str)
        self._stream.write(f"distiller: relay: parked {origin}: {reason}\n{body}\n")
        self._stream.flush()
        return True


def _open_database(uri: str, database: str, appname: str = "trigger-distiller-replay") -> Any:
    from pymongo import MongoClient

    options: dict[str, Any] = {"tz_aware": True, "appname": appname}
    if "serverselectiontimeoutms" not in uri.lower():  # the URI's own choice wins
        options["serverSelectionTimeoutMS"] = 10_000
    client: MongoClient = MongoClient(uri, **options)
    return client[database]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_replay(
    args: argparse.Namespace,
    stdin: TextIO,
    stdout: IO[str],
    stderr: IO[str],
    *,
    open_database: Callable[[str, str], Any] | None = None,
    now: Callable[[], dt.datetime] | None = None,
) -> int:
    """`distiller replay`: 0 done, 1 the replay failed (message on stderr), 2 bad arguments."""
    if not args.mongo_uri:
        print("distiller: replay: --mongo-uri is required (or set $MONGODB_URI)", file=stderr)
        return 2
    if not re.match(r"mongodb(\+srv)?://", args.mongo_uri):
        print("distiller: replay: --mongo-uri must start with mongodb:// or mongodb+srv://", file=stderr)
        return 2
    until = args.until or (now or _utcnow)()
    if args.since is not None and until < args.since:
        print(f"distiller: replay: --until {_iso(until)} is before --since {_iso(args.since)}", file=stderr)
        return 2
    collections = [c.strip() for c in (args.collections or DEFAULT_COLLECTIONS) if c.strip()]
    if not collections:
        print("distiller: replay: --collection needs a name", file=stderr)
        return 2
    try:
        result = replay(
            (open_database or _open_database)(args.mongo_uri, args.database),
            args.since,
            args.after_token,
            until,
            _make_sink(args.queue_url, stdout),
            collections=collections,
        )
    except RelayError as exc:
        print(f"distiller: {exc}", file=stderr)
        return 1
    except PyMongoError as exc:
        print(f"distiller: replay: MongoDB: {' '.join(str(exc).split())}", file=stderr)
        return 1
    where = f"to {args.queue_url}" if args.queue_url else "to stdout"
    print(
        f"replayed {result.emitted} change(s) {where}; first {result.first_token or '-'}, "
        f"last {result.last_token or '-'}; stopped: {result.stopped}",
        file=stderr,
    )
    return 0


def run_relay(
    args: argparse.Namespace,
    stdin: TextIO,
    stdout: IO[str],
    stderr: IO[str],
    *,
    open_database: Callable[[str, str], Any] | None = None,
) -> int:
    """`distiller relay`: 0 done, 1 the relay stopped (message on stderr), 2 bad arguments."""
    if not args.mongo_uri:
        print("distiller: relay: --mongo-uri is required (or set $MONGODB_URI)", file=stderr)
        return 2
    if not re.match(r"mongodb(\+srv)?://", args.mongo_uri):
        print("distiller: relay: --mongo-uri must start with mongodb:// or mongodb+srv://", file=stderr)
        return 2
    collections = [c.strip() for c in (args.collections or DEFAULT_COLLECTIONS) if c.strip()]
    if not collections:
        print("distiller: relay: --collection needs a name", file=stderr)
        return 2
    name = args.name or (DEFAULT_RELAY_NAME if args.queue_url else STDOUT_RELAY_NAME)
    queue: MessageQueue = _sqs_queue(args.queue_url) if args.queue_url else LinesOut(stdout)
    dead_letters: DeadLetters | None
    if args.dead_letter_queue_url:
        dead_letters = _sqs_queue(args.dead_letter_queue_url)
    else:
        dead_letters = None if args.queue_url else PrintedDeadLetters(stderr)
    opener = open_database or functools.partial(_open_database, appname="trigger-distiller-relay")
    try:
        database = opener(args.mongo_uri, args.database)
        relay = Relay(
            database,
            queue,
            MongoCheckpointStore(database[CHECKPOINTS_COLLECTION]),
            name=name,
            collections=collections,
            dead_letters=dead_letters,
            start_at=args.start_at,
        )
        result = relay.run(
            max_seconds=args.max_seconds, max_events=args.max_events, stop_when_idle=args.max_seconds is None
        )
    except RelayError as exc:
        print(f"distiller: relay: {exc}", file=stderr)
        return 1
    except PyMongoError as exc:
        print(f"distiller: relay: MongoDB: {' '.join(str(exc).split())}", file=stderr)
        return 1
    where = f"to {args.queue_url}" if args.queue_url else "to stdout"
    print(
        f"relayed {result.sent} change(s) {where}; parked {result.parked}; "
        f"checkpoint {name} at {result.checkpoint or '-'}; stopped: {result.stopped}",
        file=stderr,
    )
    return 0


__all__ = [
    "DEFAULT_COLLECTIONS",
    "ChangeStream",
    "ChangeStreamSource",
    "Checkpoint",
    "CheckpointStore",
    "MongoCheckpointStore",
    "Relay",
    "RelayError",
    "RelayResult",
    "RelayRuntime",
    "RelaySendError",
    "RelaySettings",
    "ReplayResult",
    "StartAt",
    "parse_start_at",
    "register",
    "replay",
    "run_relay",
    "run_replay",
    "trimmed_record",
]
