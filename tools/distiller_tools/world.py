"""A database for local runs: PARTNERS.json and WORLD.json loaded into an in-memory Mongo.

The CLI reads through the same `MongoLookups` repository the Lambda functions use, so a dry
run exercises the real query path; only the server is in-memory (mongomock).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from distiller.core import ejson
from distiller.core.lookups import PARTNERS_COLLECTION
from distiller.core.partners import partner_from_record


class WorldFileError(ValueError):
    """A PARTNERS or WORLD file that cannot be used; the message names the file and the entry."""


def _read_json(path: Path) -> Any:
    try:
        return ejson.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorldFileError(f"{path}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise WorldFileError(f"{path}: not valid JSON: {exc}") from exc


def load_partners(path: Path) -> list[dict[str, Any]]:
    """Read PARTNERS.json (an array of stored partner records), validating every record."""
    records = _read_json(path)
    if not isinstance(records, list):
        raise WorldFileError(f"{path}: expected a JSON array of partner records")
    seen: set[str] = set()
    for i, record in enumerate(records):
        try:
            partner = partner_from_record(record, where=f"[{i}]")
        except ValueError as exc:
            raise WorldFileError(f"{path}: {exc}") from exc
        if partner.partner_id in seen:
            raise WorldFileError(f"{path}: [{i}].partnerId: {partner.partner_id!r} appears twice")
        seen.add(partner.partner_id)
    return records


def load_world(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Read WORLD.json: `{collectionName: [documents in Extended JSON]}`."""
    world = _read_json(path)
    if not isinstance(world, dict):
        raise WorldFileError(f"{path}: expected an object of collectionName → [documents]")
    for name, docs in world.items():
        if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
            raise WorldFileError(f"{path}: {name}: expected an array of documents")
    return world


def in_memory_database(
    partners: list[dict[str, Any]], world: dict[str, list[dict[str, Any]]] | None = None
) -> Database:
    """A mongomock database holding the world's collections and the `partners` collection."""
    import mongomock  # local-run dependency only; the Lambda layer never imports it

    database = mongomock.MongoClient(tz_aware=True)["privateauto"]
    for name, docs in (world or {}).items():
        if docs:
            database[name].insert_many([dict(d) for d in docs])
    if partners:
        database[PARTNERS_COLLECTION].insert_many([dict(p) for p in partners])
    return database


class _IndexedCollection:
    """One collection of `IndexedWorld`: `_id $in` queries by index, anything else by mongomock."""

    def __init__(self, collection: Any, index: dict[Any, dict[str, Any]]) -> None:
        self._collection = collection
        self._index = index

    def find(self, query: Any = None, *args: Any, **kwargs: Any) -> Any:
        wanted = _ids_wanted(query)
        if wanted is None or args or kwargs:
            return self._collection.find(query, *args, **kwargs)
        return [self._index[i] for i in dict.fromkeys(wanted) if i in self._index]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)


def _ids_wanted(query: Any) -> list[Any] | None:
    """The ids of a `{"_id": {"$in": [str | ObjectId, ...]}}` query, None for any other query."""
    if not isinstance(query, dict) or list(query) != ["_id"]:
        return None
    condition = query["_id"]
    if not isinstance(condition, dict) or list(condition) != ["$in"] or not isinstance(condition["$in"], list):
        return None
    ids = condition["$in"]
    return ids if all(type(i) in (str, ObjectId) for i in ids) else None


class IndexedWorld:
    """A read-only in-memory database whose `_id $in` lookups use an index, as Mongo's `_id` index does.

    mongomock answers every query by scanning the collection: a world of thousands of offers made
    each chunk's batched lookup cost seconds, so the bench measured mongomock, not the distiller.
    Every document is read from mongomock once, here (as the client decodes it), so a bench can
    freeze them out of the garbage collector with the rest of its set-up; the world must not
    change afterwards.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._indexes: dict[str, dict[Any, dict[str, Any]]] = {
            name: {document["_id"]: document for document in database[name].find()}
            for name in database.list_collection_names()
        }

    def __getitem__(self, name: str) -> _IndexedCollection:
        return _IndexedCollection(self._database[name], self._indexes.get(name, {}))
