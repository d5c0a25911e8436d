"""Builders for change events in the real change-stream shape, shared by unit and integration tests."""

from __future__ import annotations

import itertools
from typing import Any

from bson import ObjectId

from distiller.core.model import ChangeEvent
from distiller.ingest.sources import change_event

_tokens = itertools.count(1)


def resume_token() -> str:
    """A fresh resume token in the shape Mongo writes (`_id._data`, hex)."""
    return f"8263{next(_tokens):060X}"


def oid(n: int) -> ObjectId:
    """A deterministic ObjectId, so tests can name ids by number."""
    return ObjectId(f"{n:024x}")


def raw_insert(collection: str, document: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    """A change-stream insert event as pymongo yields it."""
    document = {"_id": document.get("_id", oid(1)), **document}
    return {
        "_id": {"_data": token or resume_token()},
        "operationType": "insert",
        "ns": {"db": "privateauto", "coll": collection},
        "documentKey": {"_id": document["_id"]},
        "fullDocument": document,
    }


def raw_update(
    collection: str,
    updated: dict[str, Any],
    full_document: dict[str, Any] | None = None,
    *,
    removed: list[str] | None = None,
    before: dict[str, Any] | None = None,
    document_id: Any = None,
    token: str | None = None,
) -> dict[str, Any]:
    """A change-stream update event; `before` becomes `fullDocumentBeforeChange` (a pre-image)."""
    doc_id = document_id or (full_document or {}).get("_id") or oid(1)
    event: dict[str, Any] = {
        "_id": {"_data": token or resume_token()},
        "operationType": "update",
        "ns": {"db": "privateauto", "coll": collection},
        "documentKey": {"_id": doc_id},
        "updateDescription": {"updatedFields": updated, "removedFields": removed or [], "truncatedArrays": []},
    }
    if full_document is not None:
        event["fullDocument"] = {"_id": doc_id, **full_document}
    if before is not None:
        event["fullDocumentBeforeChange"] = {"_id": doc_id, **before}
    return event


def raw_delete(collection: str, document_id: Any = None, token: str | None = None) -> dict[str, Any]:
    """A physical delete: no fullDocument."""
    return {
        "_id": {"_data": token or resume_token()},
        "operationType": "delete",
        "ns": {"db": "privateauto", "coll": collection},
        "documentKey": {"_id": document_id or oid(1)},
    }


def as_change(raw: dict[str, Any], origin: str = "test") -> ChangeEvent:
    """Normalise a raw event through the real source adapter."""
    return change_event(raw, origin, source="change-stream")


def partner(partner_id: str, **fields: Any) -> dict[str, Any]:
    """A stored partner record; `events=` and `url=` go under `webhook`."""
    webhook = {"url": fields.pop("url", f"https://{partner_id}.example/hooks")}
    if "events" in fields:
        webhook["events"] = fields.pop("events")
    return {"partnerId": partner_id, "webhook": webhook, **fields}


def post_image(before: dict[str, Any], updated: dict[str, Any], removed: Any = ()) -> dict[str, Any]:
    """`before` after Mongo applies `$set` of the dotted `updated` paths and `$unset` of `removed`.

    An index one past an array's end appends (Mongo reports a `$push` as `array.<new index>`).
    """
    import copy

    result = copy.deepcopy(before)

    def parent_of(path: str) -> tuple[Any, Any]:
        node: Any = result
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        last = parts[-1]
        return node, int(last) if isinstance(node, list) else last

    for path, value in updated.items():
        node, last = parent_of(path)
        if isinstance(node, list) and last == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[last] = copy.deepcopy(value)
    for path in removed:
        node, last = parent_of(path)
        if isinstance(node, dict):
            node.pop(last, None)
    return result


class CountingDatabase:
    """Wraps a (mongomock) database and counts `find` calls per collection: proves batching."""

    def __init__(self, database: Any) -> None:
        self._db = database
        self.finds: dict[str, int] = {}

    def __getitem__(self, name: str) -> Any:
        collection = self._db[name]
        outer = self

        class Counting:
            def find(self, *args: Any, **kwargs: Any) -> Any:
                outer.finds[name] = outer.finds.get(name, 0) + 1
                return collection.find(*args, **kwargs)

        return Counting()
