"""Change events from an in-memory (mongomock) database, shaped as a MongoDB change stream delivers them.

Local runs have no MongoDB server and so no change stream. `ChangeFeed` turns every write on the
watched collections of a mongomock database into the event the relay would read from
`watch(full_document="updateLookup", full_document_before_change="whenAvailable")`: `insert`
with `fullDocument`; `update` with `updateDescription`, the post-image and the pre-image;
`replace` with both images; `delete` with only `documentKey`. The relay's own `serialise` writes
one, so the ingest path reads it like a recorded line.

mongomock updates stored documents in place and hands out a new `Collection` object on every
`database[name]`, so the feed hooks mongomock's three write primitives (`_insert`, `_update`,
`_delete`) on the class, for the databases a feed is attached to only: after each write it diffs
the written collection against its snapshot, under one lock, so every write is one event per
changed document, in write order, whichever thread wrote.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import bson
from bson import ObjectId, Timestamp, json_util
from pymongo.database import Database

from distiller.core.clock import utc_now
from distiller.relay.stream import DEFAULT_COLLECTIONS

logger = logging.getLogger(__name__)

Change = dict[str, Any]
"""One change event as pymongo returns it from a change stream (BSON values, not JSON)."""
Listener = Callable[[Change], None]

#: mongomock's write primitives: every insert, update, replace, upsert, delete and bulk write goes through them.
HOOKED_WRITES: tuple[str, ...] = ("_insert", "_update", "_delete")
#: Update operators Mongo logs element by element when they only append to a non-empty array.
APPENDING_OPERATORS = frozenset({"$push", "$addToSet"})

#: Resume-token pieces as Mongo writes them (KeyString, hex): after the cluster time, the token
#: version, type and transaction op index; before the collection UUID, its BinData header.
_KEYSTRING_AFTER_TIME = "2B042C0100296E"
_KEYSTRING_UUID_HEADER = "5A1004"
_KEYSTRING_ID_FIELD = "5F696400"  # "_id\0"

_feeds: weakref.WeakKeyDictionary[Any, ChangeFeed] = weakref.WeakKeyDictionary()
"""The feed attached to each mongomock database store (the object every Collection of it shares)."""
_hooks_lock = threading.Lock()
_hooks_installed = False


@dataclass(frozen=True, slots=True)
class Write:
    """What one write asked for, which a diff of the documents cannot tell."""

    replace: bool = False
    """A whole-document replacement: a `replace` event, not an `update`."""
    paths: tuple[tuple[str, str], ...] = ()
    """(operator, path) of each field an operator update wrote: Mongo reports changes at these paths."""


class ChangeFeed:
    """The change stream of a mongomock database's watched collections.

    Listeners (`subscribe`) are called with each change, in order, while the feed's lock is held:
    they must be quick (queue it, write a line) and must not write to the database themselves.
    """

    def __init__(
        self,
        database: Database,
        collections: Iterable[str] = DEFAULT_COLLECTIONS,
        *,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        store = getattr(database, "_store", None)
        if store is None:
            raise TypeError("ChangeFeed needs a mongomock database (a real MongoDB has change streams of its own)")
        self.database = database
        self.collections: tuple[str, ...] = tuple(dict.fromkeys(collections))
        self.clock = clock
        self._store = store
        self._lock = threading.RLock()
        self._depth = 0
        self._listeners: list[Listener] = []
        self._last_time = Timestamp(0, 0)
        self._snapshots: dict[str, dict[bytes, dict[str, Any]]] = {}
        self._uuids = {
            name: uuid.uuid5(uuid.NAMESPACE_URL, f"mongomock:{database.name}.{name}") for name in self.collections
        }
        _install_hooks()
        with self._lock:  # a write hooked from now on waits for the snapshot it is diffed against
            with _hooks_lock:
                if store in _feeds:
                    raise RuntimeError(f"database {database.name!r} already has a change feed attached")
                _feeds[store] = self
            self._snapshots = {name: self._read(name) for name in self.collections}

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with every change from now on."""
        with self._lock:
            self._listeners.append(listener)

    def capture(self) -> list[Change]:
        """Diff every watched collection against its snapshot now, and publish what changed.

        Writes through mongomock's collections are captured as they happen; this catches what
        bypasses them (a dropped collection, TTL expiry), as deletes and updates.
        """
        with self._lock:
            return [change for name in self.collections for change in self._capture(name, Write())]

    def close(self) -> None:
        """Detach from the database: later writes produce no events."""
        with _hooks_lock:
            if _feeds.get(self._store) is self:
                del _feeds[self._store]

    def __enter__(self) -> ChangeFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- capture ----------------------------------------------------------------------------

    def _write(self, collection: str, run: Callable[[], Any], write: Write) -> Any:
        """Run one mongomock write under the lock, then publish the changes it made."""
        with self._lock:
            self._depth += 1
            try:
                return run()
            finally:
                # Also after a failed write: an unordered insert_many may have stored some documents.
                self._depth -= 1
                if self._depth == 0:  # an upsert's inner insert is published by the outer update
                    self._capture(collection, write)

    def _capture(self, collection: str, write: Write) -> list[Change]:
        """Changes of one collection since its snapshot: present documents in store order, then deletes."""
        before = self._snapshots[collection]
        after = self._read(collection)
        changes: list[Change] = []
        for key, document in after.items():
            previous = before.get(key)
            if previous is None:
                changes.append(self._event("insert", collection, document, full=document))
            elif write.replace and not same_value(previous, document):
                changes.append(self._event("replace", collection, document, full=document, before=previous))
            elif not same_value(previous, document):
                description = update_description(previous, document, write.paths)
                changes.append(
                    self._event("update", collection, document, full=document, before=previous, update=description)
                )
        changes.extend(self._event("delete", collection, gone) for key, gone in before.items() if key not in after)
        self._snapshots[collection] = after
        for change in changes:
            self._publish(change)
        return changes

    def _read(self, collection: str) -> dict[bytes, dict[str, Any]]:
        """The collection as a client reads it (copies, `_id` first as Mongo stores it), by `_id` in its
        BSON form (so any `_id` type is a key)."""
        return {_id_key(doc["_id"]): {"_id": doc["_id"], **doc} for doc in self.database[collection].find({})}

    def _publish(self, change: Change) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # one failing sink (a full disk) must not fail the write or starve the others
                logger.exception("change feed listener failed on %s", change["_id"]["_data"])

    # --- the event --------------------------------------------------------------------------

    def _event(
        self,
        operation: str,
        collection: str,
        document: dict[str, Any],
        *,
        full: dict[str, Any] | None = None,
        before: dict[str, Any] | None = None,
        update: dict[str, Any] | None = None,
    ) -> Change:
        wall_time = self.clock().astimezone(dt.UTC)
        cluster_time = self._next_cluster_time(wall_time)
        change: Change = {
            "_id": {"_data": resume_token(cluster_time, self._uuids[collection], document["_id"])},
            "operationType": operation,
            "clusterTime": cluster_time,
            "wallTime": wall_time.replace(microsecond=wall_time.microsecond // 1000 * 1000),
            "ns": {"db": self.database.name, "coll": collection},
            "documentKey": {"_id": document["_id"]},
        }
        if update is not None:
            change["updateDescription"] = update
        if full is not None:
            change["fullDocument"] = copy.deepcopy(full)  # listeners get their own; the snapshot stays intact
        if before is not None:
            change["fullDocumentBeforeChange"] = copy.deepcopy(before)
        return change

    def _next_cluster_time(self, wall_time: dt.datetime) -> Timestamp:
        """Strictly increasing: the wall clock's second and an increment within it (a clock going back waits)."""
        seconds = int(wall_time.timestamp())
        last = self._last_time
        self._last_time = Timestamp(seconds, 1) if seconds > last.time else Timestamp(last.time, last.inc + 1)
        return self._last_time


def resume_token(cluster_time: Timestamp, collection_uuid: uuid.UUID, document_id: Any) -> str:
    """A resume token's `_data` laid out as Mongo's (KeyString hex): `82`, the cluster time, the token
    version and type, the collection UUID, the document key, `04`. Tokens order as their cluster times."""
    return (
        f"82{cluster_time.time:08X}{cluster_time.inc:08X}{_KEYSTRING_AFTER_TIME}"
        f"{_KEYSTRING_UUID_HEADER}{collection_uuid.hex.upper()}46{_key_string(document_id)}0004"
    )


def _key_string(document_id: Any) -> str:
    """`{_id: value}` in KeyString: ObjectIds as Mongo writes them; anything else as its text."""
    if isinstance(document_id, ObjectId):
        return f"64{_KEYSTRING_ID_FIELD}64{str(document_id).upper()}"
    text = document_id if isinstance(document_id, str) else json_util.dumps(document_id)
    return f"3C{_KEYSTRING_ID_FIELD}3C{text.encode('utf-8').hex().upper()}00"


def _id_key(document_id: Any) -> bytes:
    return bson.encode({"_id": document_id})


def same_value(a: Any, b: Any) -> bool:
    """Equal as BSON: same types and key order (1, 1.0 and True are three values to Mongo)."""
    return bson.encode({"v": a}) == bson.encode({"v": b})


# --- updateDescription ----------------------------------------------------------------------------


def update_description(
    before: Mapping[str, Any], after: Mapping[str, Any], written: Iterable[tuple[str, str]] = ()
) -> dict[str, Any]:
    """`updateDescription` of the change from `before` to `after`, as Mongo reports it.

    Without `written` (a pipeline update, a change seen only by `capture`), a diff of the two
    documents as Mongo reports a pipeline update: a new or retyped field whole, at its first new
    level; a changed subdocument field or array element by its dotted path; unset fields in
    `removedFields`; shrunk arrays in `truncatedArrays`. `written` are an operator update's
    (operator, path) pairs, and Mongo reports such an update at the paths it names: whole at the
    path however little below it changed (`$set: {dealState: {...}}` is `dealState`), and at the
    path even where the write created its parents (`$set: {"a.b": 1}` on a document without `a`
    is `a.b`); appends to a non-empty array (`$push`, `$addToSet`) are reported per new position.
    """
    updated: dict[str, Any] = {}
    removed: list[str] = []
    truncated: list[dict[str, Any]] = []
    _diff_object(before, after, "", updated, removed, truncated)
    created_parents: set[str] = set()
    for operator, path in written:
        _report_at(operator, path.split("."), before, after, updated, removed, truncated)
        created_parents.update(_report_below_created_parent(path, after, updated))
    for parent in created_parents:
        updated.pop(parent, None)
    return {"updatedFields": updated, "removedFields": removed, "truncatedArrays": truncated}


def _diff_object(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    prefix: str,
    updated: dict[str, Any],
    removed: list[str],
    truncated: list[dict[str, Any]],
) -> None:
    removed.extend(prefix + key for key in before if key not in after)
    for key, value in after.items():
        if key not in before:
            updated[prefix + key] = copy.deepcopy(value)
        else:
            _diff_value(before[key], value, prefix + key, updated, removed, truncated)


def _diff_value(
    old: Any, new: Any, path: str, updated: dict[str, Any], removed: list[str], truncated: list[dict[str, Any]]
) -> None:
    if same_value(old, new):
        return
    reported = len(updated) + len(removed) + len(truncated)
    if isinstance(old, dict) and isinstance(new, dict):
        _diff_object(old, new, path + ".", updated, removed, truncated)
    elif isinstance(old, list) and isinstance(new, list):
        if len(new) < len(old):
            truncated.append({"field": path, "newSize": len(new)})
        for index, value in enumerate(new):
            if index < len(old):
                _diff_value(old[index], value, f"{path}.{index}", updated, removed, truncated)
            else:
                updated[f"{path}.{index}"] = copy.deepcopy(value)
    if reported == len(updated) + len(removed) + len(truncated):  # a scalar, a retype, or only key order changed
        updated[path] = copy.deepcopy(new)


def _report_at(
    operator: str,
    pattern: list[str],
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    updated: dict[str, Any],
    removed: list[str],
    truncated: list[dict[str, Any]],
) -> None:
    """Fold the diff's entries below an operator's path (`$`, `$[]`, `$[x]` match any position) into one at it."""
    below: dict[str, list[str]] = {}  # the written path, resolved → the diff's paths below it
    for path in [*updated, *removed, *(t["field"] for t in truncated)]:
        parts = path.split(".")
        if len(parts) >= len(pattern) and all(
            p.startswith("$") or p == q for p, q in zip(pattern, parts, strict=False)
        ):
            resolved = ".".join(parts[: len(pattern)])
            if path != resolved or any(t["field"] == path for t in truncated):
                below.setdefault(resolved, []).append(path)
    for resolved, paths in below.items():
        old = _value_at(before, resolved)
        if operator in APPENDING_OPERATORS and isinstance(old, list) and old and _only_appends(paths, resolved, old):
            continue
        for path in paths:
            updated.pop(path, None)
            if path in removed:
                removed.remove(path)
        truncated[:] = [t for t in truncated if t["field"] != resolved and t["field"] not in paths]
        value = _value_at(after, resolved)
        if value is not _ABSENT:
            updated[resolved] = copy.deepcopy(value)


def _report_below_created_parent(path: str, after: Mapping[str, Any], updated: dict[str, Any]) -> list[str]:
    """A written path whose parent the write created is reported at the path: returns that parent."""
    if any(part.startswith("$") for part in path.split(".")):
        return []  # a positional path cannot lie inside a parent the same write created
    parents = [key for key in updated if path.startswith(key + ".")]
    value = _value_at(after, path)
    if parents and value is not _ABSENT:
        updated[path] = copy.deepcopy(value)
    return parents if value is not _ABSENT else []


def _only_appends(paths: list[str], resolved: str, old: list[Any]) -> bool:
    tails = [path[len(resolved) + 1 :] for path in paths]
    return all(tail.isdigit() and int(tail) >= len(old) for tail in tails)


_ABSENT = object()


def _value_at(document: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(document, Mapping) and part in document:
            document = document[part]
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            return _ABSENT
    return document


# --- the hooks ----------------------------------------------------------------------------------


def _install_hooks() -> None:
    """Wrap mongomock's write primitives once per process; they stay plain for databases with no feed."""
    global _hooks_installed
    from mongomock.collection import Collection

    with _hooks_lock:
        if _hooks_installed:
            return
        missing = [name for name in HOOKED_WRITES if not callable(getattr(Collection, name, None))]
        if missing:
            raise RuntimeError(
                f"this mongomock has no Collection.{', '.join(missing)}: the change feed cannot see its writes"
            )
        for name in HOOKED_WRITES:
            setattr(Collection, name, _hooked(getattr(Collection, name)))
        _hooks_installed = True


def _hooked(original: Callable[..., Any]) -> Callable[..., Any]:
    def write(collection: Any, *args: Any, **kwargs: Any) -> Any:
        feed = _feeds.get(collection._db_store)
        if feed is None or collection.name not in feed.collections:
            return original(collection, *args, **kwargs)
        what = _what_update_asks(args, kwargs) if original.__name__ == "_update" else Write()
        return feed._write(collection.name, lambda: original(collection, *args, **kwargs), what)

    write.__name__ = original.__name__
    write.__doc__ = original.__doc__
    return write


def _what_update_asks(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Write:
    """From `_update(spec, document, ...)`: a replacement (no `$` operators), or the operator paths."""
    document = args[1] if len(args) > 1 else kwargs.get("document")
    if not isinstance(document, Mapping):  # an aggregation pipeline: Mongo reports its diff
        return Write()
    if not any(str(key).startswith("$") for key in document):
        return Write(replace=True)
    paths: list[tuple[str, str]] = []
    for operator, fields in document.items():
        if isinstance(fields, Mapping):
            paths.extend((operator, str(path)) for path in fields)
            if operator == "$rename":
                paths.extend((operator, str(target)) for target in fields.values())
    return Write(paths=tuple(paths))
