"""The relay's port onto a MongoDB change stream: what the relay and replay need, and nothing that connects.

Protocols for the stream, its source and the checkpoint store, the errors that stop a run, and
the pure helpers both the relay and replay share: resume tokens, serialising a change as the
distiller's sources read it, where a run starts (`StartAt`) and what is parked for a change too
big for SQS. Kept free of clients so the loop can be tested against a scripted stream.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Self

from bson import Timestamp, json_util

from distiller.adapters.queues import MAX_BATCH_BYTES
from distiller.core.clock import parse_instant
from distiller.core.reducers import REDUCERS

if TYPE_CHECKING:
    from pymongo.errors import OperationFailure

    from distiller.relay.loop import RelayResult

#: The collections the distiller has reducers for, under every name the spec gives them (it spells
#: credit reports both `credit_reports` and `creditreports`); RELAY_COLLECTIONS overrides.
DEFAULT_COLLECTIONS: tuple[str, ...] = tuple(REDUCERS)
CHECKPOINTS_COLLECTION = "relay_checkpoints"
DEFAULT_RELAY_NAME = "change-stream-relay"
#: How long one getMore waits on the server for new changes; bounds how far a run overshoots its deadline.
DEFAULT_MAX_AWAIT_MS = 1000

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

_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")


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


def iso(value: dt.datetime | None) -> str:
    """A time as ISO 8601 UTC with a `Z` (as the CLI's flags take it), or `<unknown>`."""
    if value is None:
        return "<unknown>"
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def lost_position_message(exc: OperationFailure, position: str, since_hint: dt.datetime | None, name: str) -> str:
    """Why the stream cannot resume from `position`, and how to recover (never by restarting from now)."""
    code_name = LOST_POSITION_CODES.get(exc.code or 0, f"code {exc.code}")
    since = iso(since_hint) if since_hint else "<the last time you know was relayed>"
    return (
        f"{name}: the change stream cannot resume from {position}: {code_name} ({exc.code}): "
        f"{exc.details.get('errmsg') if exc.details else exc}. Changes after that point may be lost; "
        f"the relay will NOT restart from now on its own. Recover: reset the checkpoint (delete "
        f"{{_id: {name!r}}} from {CHECKPOINTS_COLLECTION} and start again with `--start-at now`, or "
        "RELAY_START_AT=now on Lambda), then "
        f"replay the gap from a time with `distiller replay --since {since} --queue-url <ingest queue>` "
        "(the oplog must still hold that time; duplicates are absorbed downstream by eventId)."
    )


def cluster_timestamp(value: dt.datetime) -> Timestamp:
    """The cluster time of the first change in `value`'s second (no zone means UTC)."""
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
            return {"start_at_operation_time": cluster_timestamp(self.time)}
        if self.token is not None:
            return {"resume_after": dict(self.token)}
        return {}

    def __str__(self) -> str:
        if self.time is not None:
            return f"cluster time {iso(self.time)}"
        if self.token is not None:
            return f"resume token {token_data(self.token)}"
        return "the current time"


def parse_token(text: str) -> dict[str, str]:
    """A resume token from its `_data` hex string; `ValueError` otherwise."""
    data = text.strip()
    if not _HEX.fullmatch(data):
        raise ValueError(f"not a resume token: {text!r} (give the _data hex string, e.g. 8263A1B2C3D4...)")
    return {"_data": data}


def parse_start_at(text: str) -> StartAt:
    """`now`, an ISO 8601 time (no zone means UTC) or a resume token's `_data` hex; `ValueError` otherwise."""
    value = text.strip()
    if value.lower() == "now":
        return StartAt()
    try:
        return StartAt(time=parse_instant(value))
    except ValueError:
        pass
    try:
        return StartAt(token=parse_token(value))
    except ValueError:
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
