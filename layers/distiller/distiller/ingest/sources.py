"""Ingest adapters: every way a change event reaches us, normalised into `ChangeEvent`.

Accepted shapes (see SOURCES.md):
- a raw change-stream event (pymongo dict, or relaxed/canonical Extended JSON);
- an Atlas Trigger event delivered by EventBridge (`detail` is the change event, in plain
  JSON or Extended JSON mode);
- a DocumentDB event-source-mapping batch (`{"eventSource": "aws:docdb", "events": [...]}`);
- an SQS record, or a whole SQS batch, whose bodies are any of these.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from distiller.core import ejson
from distiller.core.change_line import EVENTBRIDGE_DETAIL_TYPE_PREFIX, change_events_of_line
from distiller.core.lazy_ejson import ExtendedJSONError, loads_change_line
from distiller.core.model import ChangeEvent, RecordError


class SourceError(ValueError):
    """A record that is not a recognisable change event; the message names the field."""


def parse_json(text: str | bytes) -> Any:
    """Parse JSON or Extended JSON text, raising `SourceError` with the parser's reason."""
    return _decoding(ejson.loads, text)


def decode_ejson(value: Any) -> Any:
    """Decode Extended JSON wrappers in an already-parsed value, raising `SourceError` on bad ones."""
    return _decoding(ejson.decode, value)


def _decoding(decode: Any, value: Any) -> Any:
    try:
        return decode(value)
    except UnicodeDecodeError as exc:
        raise SourceError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise SourceError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise SourceError("not a change event: nesting too deep") from exc
    except Exception as exc:
        # bson.json_util raises whatever its type decoders raise (InvalidId, InvalidBSON,
        # decimal.InvalidOperation, OverflowError, AttributeError, ...): all mean bad input.
        raise SourceError(f"invalid Extended JSON: {type(exc).__name__}: {exc}") from exc


def change_events_from_text(
    text: str | bytes, origin: str, *, lazy: bool = False
) -> Iterator[ChangeEvent | RecordError]:
    """Parse one JSON (Lines) record of any accepted shape (`lazy`: see `change_events_in_text`)."""
    return iter(change_events_in_text(text, origin, lazy=lazy))


def change_events_in_text(text: str | bytes, origin: str, *, lazy: bool = False) -> list[ChangeEvent | RecordError]:
    """`change_events_from_text` as a list, with the two one-event shapes (a raw change, an
    EventBridge event) built here rather than through `change_events_from`'s generators: the
    same checks in the same order, without the calls that showed per event.

    `lazy`: read with `lazy_ejson.loads_change_line`: documents are decoded field by field when
    read, so a malformed wrapper in a field nobody reads no longer rejects the record. Lines of
    the common shapes are read in one pass (`change_line`); the others, and any line that pass
    does not vouch for, come here.
    """
    if lazy:
        changes = change_events_of_line(text, origin)
        if changes is not None:
            return changes
    try:
        obj = _decoding(loads_change_line if lazy else ejson.loads, text)
    except SourceError as exc:
        return [RecordError(origin, str(exc))]
    # Neither batch shape (SQS: Records or body; DocumentDB: eventSource or events): the routes
    # `change_events_from` tries first cannot match, so its last two are the only ones left.
    # Anything else (batches, errors, other shapes) takes the general route.
    if type(obj) is dict and not ("Records" in obj or "body" in obj or "eventSource" in obj or "events" in obj):
        try:
            if "detail" in obj and "detail-type" in obj:
                return [_eventbridge(obj, origin, True)]
            if "operationType" in obj:
                return [change_event(obj, origin, source="change-stream")]
        except (SourceError, ExtendedJSONError) as exc:
            return [RecordError(origin, str(exc))]
    return list(change_events_from(obj, origin, lazy=lazy))


def change_events_from(
    obj: Any, origin: str, *, decoded: bool = True, lazy: bool = False
) -> Iterator[ChangeEvent | RecordError]:
    """Yield the change events held by one parsed record, or a `RecordError` per bad part.

    A batch shape (SQS, DocumentDB) yields one item per entry, so one bad entry never hides
    the good ones next to it. `decoded=False` says Extended JSON wrappers are still raw (a
    Lambda event arrives parsed as plain JSON); each change is then decoded on its own, so one
    bad wrapper fails only its own record. `lazy`: SQS bodies are parsed lazily too.
    """
    if not isinstance(obj, dict):
        yield RecordError(origin, f"not a recognisable change event: expected a JSON object, got {_kind(obj)}")
        return
    if isinstance(obj.get("Records"), list):
        for i, record in enumerate(obj["Records"]):
            yield from _sqs_record(record, f"{origin} Records[{i}]", lazy)
    elif obj.get("eventSource") == "aws:sqs" or ("body" in obj and "messageId" in obj):
        yield from _sqs_record(obj, origin, lazy)
    elif obj.get("eventSource") == "aws:docdb" or ("events" in obj and "operationType" not in obj):
        yield from _docdb_batch(obj, origin, decoded)
    elif "detail" in obj and "detail-type" in obj:
        yield _guard(origin, lambda: _eventbridge(obj, origin, decoded))
    elif "operationType" in obj:
        yield _guard(
            origin, lambda: change_event(obj if decoded else decode_ejson(obj), origin, source="change-stream")
        )
    else:
        keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
        yield RecordError(
            origin,
            "not a recognisable change event: expected a change-stream event (operationType), "
            "an EventBridge event (detail-type, detail), a DocumentDB batch (eventSource aws:docdb) "
            f"or an SQS record (body); got keys: {keys}",
        )


def change_event(doc: Any, origin: str, source: str, collection_hint: str | None = None) -> ChangeEvent:
    """Validate one change-stream document and build the `ChangeEvent`; `SourceError` names the field."""
    if not isinstance(doc, dict):
        raise SourceError(f"change event must be a JSON object, got {_kind(doc)}")
    operation = doc.get("operationType")
    if not isinstance(operation, str) or not operation:
        raise SourceError("operationType: missing or not a string")

    token_holder = doc.get("_id")
    token = token_holder.get("_data") if isinstance(token_holder, dict) else None
    if not isinstance(token, str) or not token:
        raise SourceError("_id._data: missing resume token (needed for the eventKey)")
    if not token.isascii() or not token.isprintable():
        raise SourceError("_id._data: resume token must be printable ASCII (Mongo writes hex)")

    ns = doc.get("ns")
    collection = ns.get("coll") if isinstance(ns, dict) else None
    collection = collection or collection_hint
    if not isinstance(collection, str) or not collection:
        raise SourceError("ns.coll: missing collection name")

    full_document = _optional_object(doc, "fullDocument")
    before = _optional_object(doc, "fullDocumentBeforeChange")

    key = doc.get("documentKey")
    document_id = key.get("_id") if isinstance(key, dict) else None
    if document_id is None and full_document is not None:
        document_id = full_document.get("_id")
    if document_id is None and operation in {"insert", "update", "replace", "delete"}:
        raise SourceError("documentKey._id: missing document id")

    updated: dict[str, Any] = {}
    removed: tuple[str, ...] = ()
    if operation == "update":
        description = doc.get("updateDescription")
        if not isinstance(description, dict):
            raise SourceError("updateDescription: an update must carry an object")
        updated = description.get("updatedFields")
        updated = {} if updated is None else updated
        if not isinstance(updated, dict):
            raise SourceError(f"updateDescription.updatedFields: expected an object, got {_kind(updated)}")
        raw_removed = description.get("removedFields")
        raw_removed = [] if raw_removed is None else raw_removed
        if not isinstance(raw_removed, list) or not all(isinstance(p, str) for p in raw_removed):
            raise SourceError("updateDescription.removedFields: expected a list of field paths")
        removed = tuple(raw_removed)
        if not all(isinstance(k, str) for k in updated):
            raise SourceError("updateDescription.updatedFields: keys must be field paths")

    return ChangeEvent(
        resume_token=token,
        operation_type=operation,
        collection=collection,
        document_id=document_id,
        full_document=full_document,
        before=before,
        updated_fields=updated,
        removed_fields=removed,
        source=source,
        origin=origin,
    )


def _eventbridge(obj: dict[str, Any], origin: str, decoded: bool) -> ChangeEvent:
    detail_type = obj.get("detail-type")
    hint = None
    if isinstance(detail_type, str) and detail_type.startswith(EVENTBRIDGE_DETAIL_TYPE_PREFIX):
        hint = detail_type[len(EVENTBRIDGE_DETAIL_TYPE_PREFIX) :].partition(".")[2] or None
    try:
        detail = obj["detail"] if decoded else decode_ejson(obj["detail"])
        return change_event(detail, origin, source="eventbridge", collection_hint=hint)
    except (SourceError, ExtendedJSONError) as exc:
        raise SourceError(f"detail.{exc}") from exc


def _docdb_batch(obj: dict[str, Any], origin: str, decoded: bool) -> Iterator[ChangeEvent | RecordError]:
    events = obj.get("events")
    if not isinstance(events, list):
        yield RecordError(origin, "events: a DocumentDB batch must carry a list")
        return
    for i, entry in enumerate(events):
        yield docdb_entry(entry, f"{origin} events[{i}]", decoded=decoded)


def docdb_entry(entry: Any, origin: str, *, decoded: bool = True) -> ChangeEvent | RecordError:
    """One `{"event": {...}}` entry of a DocumentDB batch."""
    if not isinstance(entry, dict) or "event" not in entry:
        return RecordError(origin, 'event: missing (expected {"event": {change event}})')
    event = entry["event"]
    return _guard(
        origin,
        lambda: change_event(event if decoded else decode_ejson(event), origin, source="docdb"),
        "event.",
    )


@dataclass(frozen=True, slots=True)
class LambdaRecord:
    """One independently processable part of a Lambda event, and the change events it holds.

    `raw` is itself an accepted shape, so a parked record can be fed back in as it is.
    """

    origin: str
    raw: Any
    message_id: str | None
    items: tuple[ChangeEvent | RecordError, ...]
    receive_count: int | None = None
    """SQS `ApproximateReceiveCount` (None: not from SQS, nothing counts the retries)."""
    first_sent_at: dt.datetime | None = None
    """When SQS first accepted the message (`SentTimestamp`): how long it has been retried."""
    source: str = "event"
    """`sqs`, `docdb` or `event` (EventBridge or a raw change invoked directly)."""


def lambda_records(event: Any) -> list[LambdaRecord]:
    """Split a Lambda event (SQS batch, DocumentDB batch, EventBridge event, raw change) into records.

    Lambda hands us parsed JSON, so Extended JSON wrappers are decoded here, per record. An SQS
    body is text: it is read as `distiller distill` reads a line (`loads_change_line`, fields
    decoded when read), so production distills what `make bench` measures.
    """
    if isinstance(event, dict) and isinstance(event.get("Records"), list):
        return [
            LambdaRecord(
                f"Records[{i}]",
                record,
                record.get("messageId") if isinstance(record, dict) else None,
                tuple(change_events_from(record, f"Records[{i}]", decoded=False, lazy=True)),
                *_sqs_attributes(record),
                source="sqs",
            )
            for i, record in enumerate(event["Records"])
        ]
    if isinstance(event, dict) and event.get("eventSource") == "aws:docdb" and isinstance(event.get("events"), list):
        envelope = {k: v for k, v in event.items() if k != "events"}
        return [
            LambdaRecord(
                f"events[{i}]",
                {**envelope, "events": [entry]},
                None,
                (docdb_entry(entry, f"events[{i}]", decoded=False),),
                source="docdb",
            )
            for i, entry in enumerate(event["events"])
        ]
    return [LambdaRecord("event", event, None, tuple(change_events_from(event, "event", decoded=False)))]


def _sqs_attributes(record: Any) -> tuple[int | None, dt.datetime | None]:
    """(receive count, first sent at) from an SQS record's `attributes`; None where absent or bad."""
    attributes = record.get("attributes") if isinstance(record, dict) else None
    if not isinstance(attributes, dict):
        return None, None
    try:
        count: int | None = int(attributes["ApproximateReceiveCount"])
    except (KeyError, TypeError, ValueError):
        count = None
    try:
        sent: dt.datetime | None = dt.datetime.fromtimestamp(int(attributes["SentTimestamp"]) / 1000, dt.UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        sent = None
    return count, sent


def _sqs_record(record: Any, origin: str, lazy: bool = False) -> Iterator[ChangeEvent | RecordError]:
    if not isinstance(record, dict) or not isinstance(record.get("body"), str):
        yield RecordError(origin, "body: an SQS record must carry a string body")
        return
    message_id = record.get("messageId")
    where = f"{origin} (messageId {message_id})" if message_id else origin
    try:
        body = _decoding(loads_change_line if lazy else ejson.loads, record["body"])
    except SourceError as exc:
        yield RecordError(where, f"body: {exc}")
        return
    yield from change_events_from(body, where, lazy=lazy)


def _guard(origin: str, build: Any, prefix: str = "") -> ChangeEvent | RecordError:
    try:
        return build()
    except (SourceError, ExtendedJSONError) as exc:
        return RecordError(origin, f"{prefix}{exc}")


def _optional_object(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SourceError(f"{name}: expected an object or null, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
