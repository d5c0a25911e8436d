"""A database for local runs: PARTNERS.json and WORLD.json loaded into an in-memory Mongo.

The CLI reads through the same `MongoLookups` repository the Lambda functions use, so a dry
run exercises the real query path; only the server is in-memory (mongomock).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
