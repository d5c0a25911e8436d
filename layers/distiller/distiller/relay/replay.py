"""`replay`: re-emit a range of the change stream, from a time or after a token, with the original resume tokens.

It reads the stream the relay reads, but from a position the caller picks and without a
checkpoint, so a gap left by a lost or reset relay position can be sent again: to the ingest
queue, or to a text stream as JSON Lines (which `distiller distill` reads). The replayed changes
keep their eventIds, so what was already delivered is absorbed downstream as a duplicate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from pymongo.errors import OperationFailure

from distiller.adapters.queues import MAX_BATCH_ENTRIES, MessageQueue, OutgoingMessage
from distiller.relay.stream import (
    DEFAULT_COLLECTIONS,
    DEFAULT_MAX_AWAIT_MS,
    LOST_POSITION_CODES,
    ChangeStreamSource,
    RelayError,
    RelaySendError,
    change_time,
    cluster_timestamp,
    iso,
    lost_position_message,
    serialise,
    token_data,
    watch_options,
)


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
        {"start_at_operation_time": cluster_timestamp(since)}
        if since is not None
        else {"start_after": dict(after_token or {})}
    )
    where = f"--since {iso(since)}" if since is not None else f"--after-token {token_data(after_token)}"
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
                        f"replay {where}: the stream was invalidated at {iso(when)} (token {data}); "
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
        raise RelayError(lost_position_message(exc, where, since, "replay"), token=token_data(after_token)) from exc
    return result
